package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// Close codes sent to peers and reported to Config.OnClose; see the package
// documentation for when each is used.
const (
	CloseNormal          = 1000
	CloseGoingAway       = 1001
	CloseProtocolError   = 1002
	CloseNoStatus        = 1005
	CloseAbnormal        = 1006
	CloseInvalidPayload  = 1007
	ClosePolicyViolation = 1008
	CloseMessageTooBig   = 1009
	CloseInternalError   = 1011
	CloseIdleTimeout     = 4000
	CloseWriteTimeout    = 4001
	CloseSlowConsumer    = 4008
)

// Sentinel errors.
var (
	// ErrClosed is returned by writes, Close and Bind on a closed or
	// closing connection, and by Gateway.Ready once the gateway stopped.
	ErrClosed = errors.New("gateway: closed")
	// ErrSlowConsumer is returned by a write that would exceed
	// Config.MaxOutgoingBytes; the connection is closed with 4008.
	ErrSlowConsumer = errors.New("gateway: slow consumer")
	// ErrForbidden, wrapped by an Authenticate error, answers 403 instead of 401.
	ErrForbidden = errors.New("gateway: forbidden")
	// ErrNotStarted is answered (503) by ServeHTTP before Start, and
	// returned by Gateway.Ready then.
	ErrNotStarted = errors.New("gateway: not started")
	// ErrMessageType is returned for a MessageType other than Text or Binary.
	ErrMessageType = errors.New("gateway: invalid message type")
	// ErrCloseCode is returned by Conn.Close for a code a server may not send.
	ErrCloseCode = errors.New("gateway: invalid close code")
	// ErrHandshakeRate is the body of the 429 response (with Retry-After)
	// to a handshake over Config.HandshakeRate for its client address.
	ErrHandshakeRate = errors.New("gateway: too many handshakes from this address")
	// ErrUserConns is the body of the 429 response to a handshake whose
	// user already has Config.MaxConnsPerUser open connections.
	ErrUserConns = errors.New("gateway: too many connections for this user")
)

const (
	stateOpen int32 = iota
	stateClosing
	stateClosed
)

// Conn is one upgraded WebSocket connection. All methods are safe for
// concurrent use. A Conn is valid after it closes (its methods then return
// ErrClosed), but the gateway forgets it.
//
// A Conn carries the host's state for the connection, so the host needs no
// map of its own from connections to that state: one value (SetValue,
// Value) and any number of resources tied to the connection's lifetime
// (Bind), which the gateway closes once the connection has closed.
type Conn struct {
	g           *Gateway
	id          uint64
	ident       Identity
	ws          *websocket.Conn
	w           net.Conn   // where frames are written: the nbio conn, or the TLS conn over it
	nbc         *nbio.Conn // the socket in nbio's poller
	subprotocol string
	mounted     bool // arrived through ServeHTTP from net/http: see openMu
	userSlot    bool // holds a Config.MaxConnsPerUser slot of ident.UserID

	state        atomic.Int32
	queued       atomic.Int64 // bytes handed to nbio and not yet written to the kernel
	lastRead     atomic.Int64 // coarse unix nanos of the last frame received
	lastPing     atomic.Int64 // coarse unix nanos of the last ping sent
	lastProgress atomic.Int64 // coarse unix nanos of the last write progress

	// tlsMu orders the gateway's writes to a TLS connection with the
	// close_notify alert that closing it sends: llib's tls.Conn (v1.2.2)
	// sends that alert without the lock its Write takes, so an alert
	// racing a write could interleave records. The gateway closes TLS
	// connections itself under tlsMu where nbio would close them right
	// after a gateway callback (onPeerClose); see closeTLS.
	isTLS     bool
	tlsMu     sync.Mutex
	tlsClosed bool

	// inline is set with Config.InlineHandlers for connections on the own
	// listeners: message jobs then run on the event loop (inlineExec)
	// once opened is set, and hmu keeps them apart from finalize, which
	// runs on the executor.
	inline bool
	opened atomic.Bool
	onLoop bool // inlineExec saw the queue empty; only the event loop touches it
	hmu    sync.Mutex

	// openMu is held while OnOpen runs for mounted connections, whose reads
	// start on nbio's pollers before the net/http goroutine finishes the
	// upgrade; handler jobs wait on it so OnOpen always runs first.
	openMu sync.Mutex

	value atomic.Pointer[any] // SetValue's value

	mu          sync.Mutex // guards the fields below
	ctx         context.Context
	cancel      context.CancelFunc
	ctxDone     bool // cancelContext ran: Context returns a cancelled context
	closeCode   int
	closeReason string
	binds       map[uint64]io.Closer // Bind's resources by sequence number
	bindSeq     uint64
	bindsTaken  bool // release took binds: Bind closes at once
}

// ID returns the connection's process-unique ID (never 0).
func (c *Conn) ID() uint64 { return c.id }

// Identity returns the identity Authenticate gave the connection.
func (c *Conn) Identity() Identity { return c.ident }

// Subprotocol returns the negotiated subprotocol, or "".
func (c *Conn) Subprotocol() string { return c.subprotocol }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.nbc.RemoteAddr() }

// LocalAddr returns the gateway's address of the connection.
func (c *Conn) LocalAddr() net.Addr { return c.nbc.LocalAddr() }

var closedCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// Context returns a context cancelled when the connection closes (before
// OnClose runs), or when Shutdown's context ends, for work the host starts
// on the connection's behalf. It is created on first use, so idle
// connections whose context nobody asked for carry none.
func (c *Conn) Context() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		if c.ctxDone || c.state.Load() == stateClosed {
			return closedCtx
		}
		c.ctx, c.cancel = context.WithCancel(context.Background())
	}
	return c.ctx
}

// cancelContext cancels the connection's context, now and for a Context
// call to come.
func (c *Conn) cancelContext() {
	c.mu.Lock()
	c.ctxDone = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// SetValue stores v as the host's value for the connection (its session,
// its user's state), replacing the previous one. The gateway never reads
// it; it stays readable after the connection closed, in OnClose and later,
// until the host drops the Conn. Safe for concurrent use with Value.
func (c *Conn) SetValue(v any) { c.value.Store(&v) }

// Value returns the value last stored by SetValue, or nil. It does not
// block or allocate.
func (c *Conn) Value() any {
	if p := c.value.Load(); p != nil {
		return *p
	}
	return nil
}

// Bind ties r, a resource the host opened for the connection (a fan-out
// subscription, a queue ticket, a presence lease), to the connection's
// lifetime: the gateway calls r.Close exactly once after the connection
// closed. The host then needs no map from connections to resources, and a
// connection that closes while the host is opening a resource for it
// cannot leak that resource.
//
// When the connection closes, its bound resources are closed after OnClose
// returned, on the same executor goroutine (see Config.OnClose), in the
// reverse order of Bind; never inside a call the host makes to the
// gateway, such as Conn.Close (Gateway.Shutdown and Close wait for them).
// An error from r.Close is logged; a panic is recovered, logged and counted
// in handler_panics_total{handler="bind"}.
//
// If the connection is already closing or closed, Bind closes r at once,
// on the caller's goroutine, and returns ErrClosed (joined with the error
// of r.Close, if any); the caller must then not hold a lock that r.Close
// takes. A Bind that races the close either binds r, which the gateway
// then closes, or closes r itself: r is closed exactly once either way.
//
// unbind undoes Bind for a host that closes r itself (an unsubscribe): it
// reports whether r was still bound. After it returns true the gateway no
// longer references r and will not close it; false means the gateway has
// closed r or is closing it (or Bind failed), and the host must not close
// it again. unbind never blocks on r.Close and may be called any number of
// times from any goroutine. Bind and unbind are safe for concurrent use,
// from callbacks too (a Bind inside OnClose closes r at once). r must not
// be nil.
func (c *Conn) Bind(r io.Closer) (unbind func() bool, err error) {
	if r == nil {
		panic("gateway: Conn.Bind with a nil io.Closer")
	}
	c.mu.Lock()
	if c.bindsTaken || c.state.Load() != stateOpen {
		c.mu.Unlock()
		if cerr := r.Close(); cerr != nil {
			return unbound, errors.Join(ErrClosed, fmt.Errorf("gateway: closing the resource bound to a closed connection: %w", cerr))
		}
		return unbound, ErrClosed
	}
	if c.binds == nil {
		c.binds = make(map[uint64]io.Closer, 1)
	}
	c.bindSeq++
	seq := c.bindSeq
	c.binds[seq] = r
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, ok := c.binds[seq]; !ok {
			return false
		}
		delete(c.binds, seq)
		return true
	}, nil
}

func unbound() bool { return false }

// takeBinds hands the bound resources over to release: from now on Bind
// closes at once and unbind reports false.
func (c *Conn) takeBinds() []io.Closer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bindsTaken = true
	if len(c.binds) == 0 {
		c.binds = nil
		return nil
	}
	rs := make([]io.Closer, 0, len(c.binds))
	for _, seq := range slices.Backward(slices.Sorted(maps.Keys(c.binds))) {
		rs = append(rs, c.binds[seq])
	}
	c.binds = nil
	return rs
}

// Open reports whether the connection is open (not closing or closed).
func (c *Conn) Open() bool { return c.state.Load() == stateOpen }

// Buffered returns the outgoing bytes queued for the connection and not yet
// accepted by the kernel.
func (c *Conn) Buffered() int { return int(max(c.queued.Load(), 0)) }

// Send queues one data message. It never blocks and does not retain data.
// It returns ErrClosed on a closing or closed connection, and
// ErrSlowConsumer when the message would exceed Config.MaxOutgoingBytes, in
// which case the connection is closed with CloseSlowConsumer. Sending is
// allocation-free in the steady state (frames are built in pooled buffers).
func (c *Conn) Send(typ MessageType, data []byte) error {
	if typ != TextMessage && typ != BinaryMessage {
		return ErrMessageType
	}
	if c.state.Load() != stateOpen {
		return ErrClosed
	}
	pbuf := getFrameBuf(frameHeaderLen(len(data)) + len(data))
	n := putFrameHeader(*pbuf, byte(typ), len(data))
	copy((*pbuf)[n:], data)
	err := c.write(*pbuf, true) // nbio copies what the kernel does not take
	putFrameBuf(pbuf)
	return c.afterWrite(err)
}

// SendPrepared queues a prepared message; like Send, but the frame bytes
// are shared, not copied (unless the kernel does not take them at once).
func (c *Conn) SendPrepared(pm *PreparedMessage) error {
	if c.state.Load() != stateOpen {
		return ErrClosed
	}
	return c.afterWrite(c.write(pm.frame, true))
}

func (c *Conn) afterWrite(err error) error {
	if err == errSlow {
		c.fail(CloseSlowConsumer, "slow consumer")
		return ErrSlowConsumer
	}
	return err
}

var errSlow = errors.New("gateway: outgoing buffer full")

// write hands one complete frame to nbio. Every frame, data or control
// (pong, ping, close), counts against Config.MaxOutgoingBytes: the check
// and the reservation are one atomic step, so the queued bytes never exceed
// the cap, even with concurrent writers. It returns errSlow, without
// closing, when the frame does not fit. data selects the data-frame metrics.
func (c *Conn) write(frame []byte, data bool) error {
	n := int64(len(frame))
	g := c.g
	var q int64
	if g.maxOut > 0 {
		for {
			q = c.queued.Load()
			if q+n > g.maxOut {
				return errSlow
			}
			if c.queued.CompareAndSwap(q, q+n) {
				break
			}
		}
	} else {
		q = c.queued.Add(n) - n
	}
	if q <= 0 {
		c.lastProgress.Store(g.now.Load())
	}
	if c.isTLS {
		c.tlsMu.Lock()
		err := ErrClosed
		if !c.tlsClosed {
			_, err = c.w.Write(frame)
		}
		c.tlsMu.Unlock()
		if err != nil {
			return ErrClosed
		}
	} else if _, err := c.w.Write(frame); err != nil {
		return ErrClosed
	}
	if m := g.m; m != nil && data {
		m.msgsOut.Inc()
		m.bytesOut.Add(float64(n))
	}
	return nil
}

// written is nbio's report that n queued bytes reached the kernel.
func (c *Conn) written(g *Gateway, n int) {
	if q := c.queued.Add(-int64(n)); q < 0 {
		// Bytes nbio wrote on its own (handshake, its 1009 close) were never
		// counted; do not let them loosen the cap.
		c.queued.CompareAndSwap(q, 0)
	}
	c.lastProgress.Store(g.now.Load())
}

// Close starts the closing handshake with code and reason (truncated to
// 123 bytes): it sends the close frame, stops delivering messages to
// OnMessage, and drops the TCP connection when the peer answers or after
// Config.CloseGracePeriod. code must be 1000, 1001, 1008, 1011 or in
// 3000-4999. Close does not block and runs no callback: OnClose and the
// bound resources' Close run later on an executor goroutine, never on the
// caller's, so the host may call Close while holding a lock they take.
// It returns ErrClosed if the connection is already closing.
func (c *Conn) Close(code int, reason string) error {
	if !validServerCloseCode(code) {
		return ErrCloseCode
	}
	if !c.closeWith(code, reason, false) {
		return ErrClosed
	}
	return nil
}

func validServerCloseCode(code int) bool {
	switch code {
	case CloseNormal, CloseGoingAway, ClosePolicyViolation, CloseInternalError,
		CloseInvalidPayload, CloseMessageTooBig, CloseProtocolError:
		return true
	}
	return code >= 3000 && code <= 4999
}

// fail closes at once, without waiting for the peer: its receive path is
// stuck, so a close frame would not reach it anyway.
func (c *Conn) fail(code int, reason string) {
	if c.closeWith(code, reason, true) && code == CloseSlowConsumer && c.g.m != nil {
		c.g.m.slow.Inc()
	}
}

func (c *Conn) closeWith(code int, reason string, now bool) bool {
	if !c.state.CompareAndSwap(stateOpen, stateClosing) {
		return false
	}
	if len(reason) > 123 {
		reason = reason[:123]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	c.mu.Lock()
	c.closeCode, c.closeReason = code, reason
	c.mu.Unlock()
	// A close frame that does not fit in Config.MaxOutgoingBytes is not
	// queued: the connection is dropped without one.
	if err := c.writeClose(code, reason); err != nil || now {
		_ = c.nbc.Close()
	} else {
		_ = c.nbc.SetReadDeadline(time.Now().Add(c.g.cfg.CloseGracePeriod))
	}
	return true
}

// clearStaleReadDeadline undoes a handshake read deadline that nbhttp armed
// after the upgrade (see listener): an open connection has no read
// deadline, a closing one has its close grace period. It needs no lock
// with closeWith, which switches the state before it arms the grace
// deadline: whichever of the two writes the deadline last, the state read
// afterwards here sees closing if closeWith's write came first.
func (c *Conn) clearStaleReadDeadline() {
	_ = c.nbc.SetReadDeadline(time.Time{})
	if c.state.Load() != stateOpen {
		_ = c.nbc.SetReadDeadline(time.Now().Add(c.g.cfg.CloseGracePeriod))
	}
}

// closeTLS closes a TLS connection (alert, then socket) after any write in
// progress and before any later one.
func (c *Conn) closeTLS() {
	c.tlsMu.Lock()
	defer c.tlsMu.Unlock()
	if !c.tlsClosed {
		c.tlsClosed = true
		_ = c.w.Close()
	}
}

func (c *Conn) writeClose(code int, reason string) error {
	var buf [4 + 125]byte
	n := 0
	if code == CloseNoStatus {
		n = putFrameHeader(buf[:], 0x8, 0)
	} else {
		n = putFrameHeader(buf[:], 0x8, 2+len(reason))
		binary.BigEndian.PutUint16(buf[n:], uint16(code))
		n += 2 + copy(buf[n+2:], reason)
	}
	return c.write(buf[:n], false)
}

// setPeerClose records the code of a close the peer started.
func (c *Conn) setPeerClose(code int, reason string) {
	c.mu.Lock()
	if c.closeCode == 0 {
		c.closeCode, c.closeReason = code, reason
	}
	c.mu.Unlock()
}

func (c *Conn) touch() { c.lastRead.Store(c.g.now.Load()) }

// waitOpen makes a mounted connection's handler jobs wait until OnOpen returned.
func (c *Conn) waitOpen() {
	if c.mounted {
		c.openMu.Lock()
		//lint:ignore SA2001 the lock is a barrier: OnOpen holds it while it runs
		c.openMu.Unlock()
	}
}

// controlDone tells the connection's frameGuard that a ping or pong it
// handed on was handled (see maxPendingControl). The guard is the nbio
// connection's session from before the frame was parsed.
func (c *Conn) controlDone() {
	if fg, ok := c.nbc.Session().(*frameGuard); ok {
		fg.controlDone()
	}
}

// frameHeaderLen is the size of an unmasked server frame header for n payload bytes.
func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n <= 0xFFFF:
		return 4
	}
	return 10
}

// putFrameHeader writes a final, unmasked frame header and returns its length.
func putFrameHeader(b []byte, opcode byte, n int) int {
	b[0] = 0x80 | opcode
	switch {
	case n < 126:
		b[1] = byte(n)
		return 2
	case n <= 0xFFFF:
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
		return 4
	}
	b[1] = 127
	binary.BigEndian.PutUint64(b[2:], uint64(n))
	return 10
}

const maxPooledFrame = 64 << 10

var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// getFrameBuf returns a pooled buffer of length n.
func getFrameBuf(n int) *[]byte {
	p := framePool.Get().(*[]byte)
	if cap(*p) < n {
		*p = make([]byte, n)
	}
	*p = (*p)[:n]
	return p
}

func putFrameBuf(p *[]byte) {
	if cap(*p) <= maxPooledFrame {
		framePool.Put(p)
	}
}
