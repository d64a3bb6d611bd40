package gateway

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	llibtls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

const (
	gwNew int32 = iota
	gwRunning
	gwDraining
	gwStopped
)

// ErrDraining is returned by Ready while Shutdown drains the gateway.
var ErrDraining = errors.New("gateway: draining")

// Gateway holds WebSocket connections on nbio's event loops. It owns the
// engine, the handler executor and the sweeper goroutine; Shutdown (or
// Close) stops them all, and Ready reports whether it serves. All methods
// are safe for concurrent use.
type Gateway struct {
	// written maps each upgraded *nbio.Conn to its *Conn for the
	// engine's written-size callback, which runs on writing goroutines and
	// must not read the nbio session (the event loop swaps it).
	written sync.Map
	cfg     Config
	maxOut  int64
	engine  *nbhttp.Engine
	up      *websocket.Upgrader
	exec    *executor
	reg     *registry
	ips     *ipLimiter // nil without Config.HandshakeRate
	m       *metrics

	nextID atomic.Uint64
	slots  atomic.Int64 // reserved or open WebSocket connections, for MaxConns
	now    atomic.Int64 // coarse clock (unix nanos) advanced by the sweeper
	state  atomic.Int32

	mu        sync.Mutex // guards lifecycle fields below
	listeners []*listener
	addrs     []net.Addr
	tls       *llibtls.Config // for the own listeners; nil: plain TCP
	settling  settling
	sweepStop chan struct{}
	sweepDone chan struct{}
	emptied   chan struct{} // signalled when the last connection closes while draining
	hurry     chan struct{} // closed when a Shutdown's context ended (or Close): stop draining
	hurryOnce sync.Once
	stopped   chan struct{} // closed once the gateway is stopped
	handshake sync.WaitGroup
	startedAt time.Time
	logRoute  *nbioRoute // nbio's log lines go to this gateway's logger while it runs

	pingFrame []byte
}

// New validates cfg (errors wrap ErrInvalidConfig and name the field) and
// builds a stopped Gateway. It starts no goroutine; call Start.
func New(cfg Config) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg:       cfg,
		reg:       newRegistry(),
		emptied:   make(chan struct{}, 1),
		hurry:     make(chan struct{}),
		stopped:   make(chan struct{}),
		pingFrame: []byte{0x89, 0x00},
	}
	if cfg.MaxOutgoingBytes > 0 {
		g.maxOut = int64(cfg.MaxOutgoingBytes)
	}
	g.now.Store(time.Now().UnixNano())
	g.exec = newExecutor(cfg.HandlerQueue, func(v any) {
		cfg.Observer.Logger().Error("gateway: job panicked", "panic", v)
	})
	if cfg.Observer != nil {
		g.m = newMetrics(cfg.Observer, g)
	}
	if cfg.HandshakeRate > 0 {
		g.ips = newIPLimiter(cfg.HandshakeRate, cfg.HandshakeBurst, maxTrackedIPs)
	}
	installNBIOLogger()

	ncfg := nbhttp.Config{
		Name:                    cfg.Name,
		KeepaliveTime:           cfg.HandshakeTimeout,
		NPoller:                 cfg.Pollers,
		ServerExecutor:          g.exec.Go,
		SupportServerOnly:       true,
		ReleaseWebsocketPayload: true,
		Handler:                 http.HandlerFunc(g.serveOwn),
		// nbhttp's own cap (1,048,576 by default) closes connections
		// silently, without an HTTP response; MaxConns answers 503.
		MaxLoad: math.MaxInt32,
		// The gateway runs its own accept loops (listener.go); nbhttp gets
		// no addresses.
	}
	if cfg.MaxMessageSize > 0 {
		ncfg.ReadLimit = int(cfg.MaxMessageSize) + 64<<10
	}
	if cfg.TLSConfig != nil {
		g.tls = llibTLSConfig(cfg.TLSConfig)
	}
	g.engine = nbhttp.NewEngine(ncfg)
	// Text payloads are checked by the gateway, which answers 1007 (nbio
	// would answer 1002).
	g.engine.CheckUtf8 = func([]byte) bool { return true }
	g.engine.Engine.OnWrittenSize(func(nc *nbio.Conn, _ []byte, n int) {
		// Runs inside nbio writes, possibly under the websocket conn's lock,
		// on any goroutine: look the connection up without nbio's session
		// (which the event loop replaces) and touch only atomics.
		if v, ok := g.written.Load(nc); ok {
			v.(*Conn).written(g, n)
		}
	})
	g.engine.Engine.OnData(g.onData)
	g.engine.OnOpen(func(net.Conn) { raceHandoff() })
	g.engine.Engine.OnReadBufferFree(newLoopYield(g.engine.Engine.NPoller).afterRead)

	up := websocket.NewUpgrader()
	up.Engine = g.engine
	up.KeepaliveTime = 0 // idle timeouts are the sweeper's job
	up.HandshakeTimeout = cfg.HandshakeTimeout
	up.MessageLengthLimit = int(max(cfg.MaxMessageSize, 0))
	up.Subprotocols = cfg.Subprotocols
	up.CheckOrigin = func(*http.Request) bool { return true } // checked before, see serveWS
	up.OnMessage(g.onMessage)
	up.OnClose(g.onClose)
	up.SetPingHandler(g.onPing)
	up.SetPongHandler(g.onPong)
	up.SetCloseHandler(g.onPeerClose)
	g.up = up

	if o := cfg.Observer; o != nil {
		o.AddReadyCheck(cfg.Name, func(context.Context) error { return g.Ready() })
	}
	return g, nil
}

// Start starts the engine, the executor, the sweeper and the listeners in
// Config.Addrs. It does not block. Starting twice is an error; after
// Shutdown or Close, or after a Start that failed, the error wraps
// ErrClosed.
func (g *Gateway) Start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.state.Load() {
	case gwNew:
	case gwRunning:
		return errors.New("gateway: already started")
	default:
		return fmt.Errorf("gateway: start: %w", ErrClosed)
	}
	for _, addr := range g.cfg.Addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range g.listeners {
				l.close()
			}
			g.listeners, g.addrs = nil, nil
			g.setStoppedLocked()
			return fmt.Errorf("gateway: start: %w", err)
		}
		g.listeners = append(g.listeners, newListener(ln, g.tls))
		g.addrs = append(g.addrs, ln.Addr())
	}
	g.exec.start(g.cfg.HandlerWorkers)
	g.logRoute = nbioLogs.push(g.cfg.Observer.Logger())
	if err := g.engine.Start(); err != nil {
		for _, l := range g.listeners {
			l.close()
		}
		g.exec.shutdown()
		nbioLogs.pop(g.logRoute)
		g.setStoppedLocked()
		return fmt.Errorf("gateway: start: %w", err)
	}
	// The coarse clock stamps new connections until the first sweep; New
	// may have run long before Start.
	g.now.Store(time.Now().UnixNano())
	g.startSweeper()
	g.startedAt = time.Now()
	g.state.Store(gwRunning)
	for _, l := range g.listeners {
		go g.acceptLoop(l)
	}
	return nil
}

// Addrs returns the bound addresses of the own listeners after Start, in
// the order of Config.Addrs.
func (g *Gateway) Addrs() []net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]net.Addr(nil), g.addrs...)
}

// serveOwn routes requests on the own listeners.
func (g *Gateway) serveOwn(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == g.cfg.Path {
		g.serveWS(w, r)
		return
	}
	if g.cfg.Handler != nil {
		g.cfg.Handler.ServeHTTP(w, r)
		return
	}
	http.NotFound(w, r)
}

// ServeHTTP upgrades r to a WebSocket connection held by the gateway, so the
// gateway can be mounted inside a net/http server: the connection is taken
// off net/http and handed to nbio's pollers. It runs the same handshake
// checks as the own listeners. It answers 503 before Start and after
// Shutdown began. TLS must then be terminated in front of the process (or
// use Config.TLSConfig with the own listeners): connections of a net/http
// TLS server cannot be moved to the pollers and are answered 501.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.serveWS(w, r)
}

// reject answers a refused handshake and closes the connection after the
// response, so refused clients do not hold descriptors in keep-alive.
func (g *Gateway) reject(w http.ResponseWriter, r *http.Request, status int, reason string, body string) {
	if g.m != nil {
		g.m.rejected.WithLabelValues(reason).Inc()
	}
	if body == "" {
		body = http.StatusText(status)
	}
	w.Header().Set("Connection", "close")
	r.Close = true // nbhttp closes after the response when the request asks to
	http.Error(w, body, status)
}

func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	g.handshake.Add(1)
	defer g.handshake.Done()
	switch g.state.Load() {
	case gwRunning:
	case gwNew:
		g.reject(w, r, http.StatusServiceUnavailable, "not_started", "")
		return
	default:
		g.reject(w, r, http.StatusServiceUnavailable, "draining", "")
		return
	}
	if g.ips != nil {
		if ok, wait := g.ips.allow(r.RemoteAddr, time.Now().UnixNano()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait)))
			g.reject(w, r, http.StatusTooManyRequests, "handshake_rate", ErrHandshakeRate.Error())
			return
		}
	}
	_, native := w.(*nbhttp.Response)
	if !native && r.TLS != nil {
		g.reject(w, r, http.StatusNotImplemented, "tls_mount", "")
		return
	}
	if r.Method != http.MethodGet {
		g.reject(w, r, http.StatusMethodNotAllowed, "bad_request", "")
		return
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") ||
		r.Header.Get("Sec-Websocket-Key") == "" || r.Header.Get("Sec-Websocket-Version") != "13" {
		w.Header().Set("Sec-Websocket-Version", "13")
		g.reject(w, r, http.StatusBadRequest, "bad_request", "")
		return
	}
	if !g.originAllowed(r) {
		g.reject(w, r, http.StatusForbidden, "origin", "")
		return
	}
	if max := g.cfg.MaxConns; max > 0 {
		if g.slots.Add(1) > int64(max) {
			g.slots.Add(-1)
			g.reject(w, r, http.StatusServiceUnavailable, "capacity", "")
			return
		}
	} else {
		g.slots.Add(1)
	}
	ident := Identity{}
	if g.cfg.Authenticate != nil {
		var err error
		ident, err = g.cfg.Authenticate(r)
		if err != nil {
			g.slots.Add(-1)
			if errors.Is(err, ErrForbidden) {
				g.reject(w, r, http.StatusForbidden, "forbidden", "")
			} else {
				g.reject(w, r, http.StatusUnauthorized, "unauthorized", "")
			}
			return
		}
	}
	userSlot := false
	if max := g.cfg.MaxConnsPerUser; max > 0 && ident.UserID != "" {
		if !g.reg.reserveUser(ident.UserID, max) {
			g.slots.Add(-1)
			g.reject(w, r, http.StatusTooManyRequests, "user_conns", ErrUserConns.Error())
			return
		}
		userSlot = true
	}
	ws, err := g.up.UpgradeAndTransferConnToPoller(w, r, nil)
	if err != nil {
		g.slots.Add(-1)
		if userSlot {
			g.reg.releaseUser(ident.UserID)
		}
		if g.m != nil {
			g.m.rejected.WithLabelValues("upgrade").Inc()
		}
		return
	}
	c := &Conn{g: g, id: g.nextID.Add(1), ident: ident, ws: ws, subprotocol: ws.Subprotocol(), mounted: !native, userSlot: userSlot}
	c.w, c.nbc = unwrapConn(ws.Conn)
	_, c.isTLS = c.w.(*llibtls.Conn)
	now := g.now.Load()
	c.lastRead.Store(now)
	c.lastPing.Store(now)
	c.lastProgress.Store(now)
	if c.nbc == nil { // not reachable with nbio v1.6.8; keep the invariant explicit
		_ = ws.Close()
		g.slots.Add(-1)
		if userSlot {
			g.reg.releaseUser(ident.UserID)
		}
		return
	}
	// nbhttp's accept path arms the handshake deadline after registering
	// the connection with a poller, so it may do so after the upgrade
	// cleared it (see listener): clear it again, now if that path is done,
	// or when it is.
	if !g.settling.upgraded(c) {
		_ = c.nbc.SetReadDeadline(time.Time{})
	}
	if c.mounted {
		c.openMu.Lock()
	} else if g.cfg.InlineHandlers {
		c.inline = true
		setExecute(ws, newInlineExec(c).execute)
	}
	g.written.Store(c.nbc, c)
	g.reg.add(c)
	ws.SetSession(c)
	if g.m != nil {
		g.m.accepted.Inc()
		g.m.open.WithLabelValues(string(ident.Role)).Inc()
	}
	ok := g.callOpen(c)
	if c.mounted {
		c.openMu.Unlock()
	}
	if g.m != nil {
		g.m.handshake.Observe(time.Since(start).Seconds())
	}
	switch {
	case !ok:
		c.closeWith(CloseInternalError, "internal error", false)
	case g.state.Load() != gwRunning:
		c.closeWith(CloseGoingAway, "server shutting down", false)
	}
	if c.inline {
		c.opened.Store(true)
	}
	if c.mounted {
		// The socket may have closed before the session was set, in which
		// case nbio's close job found no Conn: finish it on the executor,
		// where OnClose always runs, behind the connection's message jobs
		// (Shutdown waits for this handshake, and so for the job, before
		// it stops the executor).
		if closed, _ := c.nbc.IsClosed(); closed {
			c.nbc.MustExecute(func() { g.finalize(c, nil) })
		}
	}
}

func unwrapConn(nc net.Conn) (w net.Conn, nbc *nbio.Conn) {
	if hc, ok := nc.(*nbhttp.Conn); ok {
		nc = hc.Conn
	}
	switch v := nc.(type) {
	case *nbio.Conn:
		return v, v
	case *llibtls.Conn:
		nbc, _ = v.Conn().(*nbio.Conn)
		return v, nbc
	}
	return nc, nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[http.CanonicalHeaderKey(name)] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func (g *Gateway) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	if len(g.cfg.AllowedOrigins) == 0 {
		i := strings.Index(origin, "://")
		return i >= 0 && strings.EqualFold(origin[i+3:], r.Host)
	}
	for _, a := range g.cfg.AllowedOrigins {
		switch {
		case a == "*":
			return true
		case strings.EqualFold(a, origin):
			return true
		case strings.Contains(a, "://*."):
			// scheme://*.example.com matches scheme://x.example.com
			i := strings.Index(a, "*.")
			prefix, suffix := a[:i], a[i+1:]
			if len(origin) > len(prefix)+len(suffix) &&
				strings.EqualFold(origin[:len(prefix)], prefix) &&
				strings.EqualFold(origin[len(origin)-len(suffix):], suffix) &&
				!strings.ContainsAny(origin[len(prefix):len(origin)-len(suffix)], "/:") {
				return true
			}
		}
	}
	return false
}

// connOf returns the Conn of ws. For a mounted connection a frame can be
// parsed in the short window between nbio taking the socket and the
// net/http goroutine setting the session; wait for it then.
func connOf(ws *websocket.Conn) *Conn {
	for i := 0; ; i++ {
		if c, ok := ws.SessionWithLock().(*Conn); ok {
			return c
		}
		switch {
		case i < 100:
			runtime.Gosched()
		case i < 5100:
			time.Sleep(time.Millisecond)
		default:
			return nil
		}
	}
}

func (g *Gateway) onMessage(ws *websocket.Conn, mt websocket.MessageType, data []byte) {
	c := connOf(ws)
	if c == nil {
		_ = ws.Close()
		return
	}
	if c.inline {
		c.hmu.Lock()
		defer c.hmu.Unlock()
	}
	c.waitOpen()
	c.touch()
	if c.state.Load() != stateOpen {
		return
	}
	if g.m != nil {
		g.m.msgsIn.Inc()
		g.m.bytesIn.Add(float64(len(data)))
	}
	typ := MessageType(mt)
	if typ == TextMessage && !utf8.Valid(data) {
		c.closeWith(CloseInvalidPayload, "invalid UTF-8", false)
		return
	}
	// The rate limit was applied to the frames by the frameGuard.
	if g.cfg.OnMessage != nil {
		g.guard(c, "message", func() { g.cfg.OnMessage(c, typ, data) })
	}
}

// guard runs a handler, turning a panic into a 1011 close of c only.
func (g *Gateway) guard(c *Conn, name string, fn func()) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			if g.m != nil {
				g.m.panics.WithLabelValues(name).Inc()
			}
			g.cfg.Observer.Logger().Error("gateway: handler panicked", "handler", name, "conn", c.id, "panic", fmt.Sprint(v))
			if name != "close" && name != "bind" {
				c.closeWith(CloseInternalError, "internal error", false)
			}
		}
	}()
	fn()
	return true
}

func (g *Gateway) callOpen(c *Conn) bool {
	if g.cfg.OnOpen == nil {
		return true
	}
	return g.guard(c, "open", func() { g.cfg.OnOpen(c) })
}

// onPing answers a ping. The pong counts against Config.MaxOutgoingBytes
// like any frame: a peer that pings and never reads is closed with 4008.
func (g *Gateway) onPing(ws *websocket.Conn, data string) {
	c := connOf(ws)
	if c == nil {
		return
	}
	defer c.controlDone()
	c.touch()
	if c.state.Load() != stateOpen {
		return
	}
	var buf [2 + 125]byte
	n := putFrameHeader(buf[:], 0xA, len(data))
	n += copy(buf[n:], data)
	if c.write(buf[:n], false) == errSlow {
		c.fail(CloseSlowConsumer, "slow consumer")
	}
}

func (g *Gateway) onPong(ws *websocket.Conn, _ string) {
	if c := connOf(ws); c != nil {
		c.controlDone()
		c.touch()
	}
}

// onPeerClose handles a close frame from the peer; nbio drops the TCP
// connection right after it returns.
func (g *Gateway) onPeerClose(ws *websocket.Conn, code int, reason string) {
	c := connOf(ws)
	if c == nil {
		return
	}
	c.waitOpen()
	if !utf8.ValidString(reason) {
		code, reason = CloseInvalidPayload, ""
	}
	if c.state.CompareAndSwap(stateOpen, stateClosing) {
		c.setPeerClose(code, reason)
		reply := code
		if code == CloseInvalidPayload {
			reason = "invalid UTF-8"
		} else {
			reason = ""
		}
		_ = c.writeClose(reply, reason)
	}
	if c.isTLS {
		// nbio closes the connection right after this returns, and
		// closing a TLS connection writes an alert outside the lock of
		// its writes; close it here, ordered with other writers.
		c.closeTLS()
	}
}

// onClose is nbio's close callback, run on the executor after the
// connection's last message job.
func (g *Gateway) onClose(ws *websocket.Conn, err error) {
	c, _ := ws.SessionWithLock().(*Conn)
	if c == nil {
		return // closed before serveWS set the session; serveWS finishes it
	}
	c.waitOpen()
	g.finalize(c, err)
}

// finalize releases c exactly once: registry, slot, context, metrics,
// OnClose, then the resources bound to c (Conn.Bind). It runs on the
// executor.
func (g *Gateway) finalize(c *Conn, err error) {
	if c.markClosed() == stateClosed {
		return
	}
	g.reg.remove(c)
	g.written.Delete(c.nbc)
	g.slots.Add(-1)
	if c.userSlot {
		g.reg.releaseUser(c.ident.UserID)
	}
	c.mu.Lock()
	code, reason := c.closeCode, c.closeReason
	if code == 0 {
		code = closeCodeOf(err)
		c.closeCode = code
	}
	c.mu.Unlock()
	c.cancelContext()
	binds := c.takeBinds()
	if g.m != nil {
		g.m.closed(code)
		g.m.open.WithLabelValues(string(c.ident.Role)).Dec()
	}
	if g.cfg.OnClose != nil {
		g.guard(c, "close", func() { g.cfg.OnClose(c, code, reason) })
	}
	for _, r := range binds {
		g.guard(c, "bind", func() {
			if err := r.Close(); err != nil {
				g.cfg.Observer.Logger().Warn("gateway: closing a bound resource", "conn", c.id, "err", err)
			}
		})
	}
	if g.state.Load() >= gwDraining && g.reg.n.Load() == 0 {
		select {
		case g.emptied <- struct{}{}:
		default:
		}
	}
}

func closeCodeOf(err error) int {
	var ce *websocket.CloseError
	switch {
	case err == nil:
		return CloseAbnormal
	case errors.As(err, &ce):
		return ce.Code
	case errors.Is(err, websocket.ErrMessageTooLarge), errors.Is(err, websocket.ErrControlMessageTooBig),
		errors.Is(err, nbhttp.ErrTooLong):
		return CloseMessageTooBig
	case errors.Is(err, websocket.ErrInvalidUtf8):
		return CloseInvalidPayload
	case errors.Is(err, websocket.ErrReserveBitSet), errors.Is(err, websocket.ErrReservedMessageType),
		errors.Is(err, websocket.ErrControlMessageFragmented), errors.Is(err, websocket.ErrInvalidCloseCode),
		errors.Is(err, websocket.ErrFragmentsShouldNotHaveBinaryOrTextMessage),
		errors.Is(err, websocket.ErrInvalidFragmentMessage), errors.Is(err, websocket.ErrInvalidCompression):
		return CloseProtocolError
	}
	return CloseAbnormal
}
