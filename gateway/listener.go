package gateway

import (
	"errors"
	"net"
	"sync"
	"time"

	llibtls "github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
)

// listener is one of the gateway's own listeners with its accept goroutine.
//
// The gateway accepts itself instead of letting nbhttp do it, to close a
// race in nbhttp (v1.6.8): its accept path registers a connection with a
// poller and only then arms the handshake read deadline
// (Config.HandshakeTimeout). When the accept goroutine is descheduled
// between the two, the poller may already have read the request and the
// executor upgraded the connection and cleared the deadline; the late
// deadline then drops a healthy WebSocket connection HandshakeTimeout after
// it was accepted, without a close frame. The accept goroutine here tells
// the gateway when nbhttp is done with a connection (see settling), and a
// connection upgraded before that gets its deadline cleared again.
type listener struct {
	ln     net.Listener
	tls    *llibtls.Config // nil: plain TCP
	spare  spareFD         // owned by the accept goroutine
	once   sync.Once
	closed chan struct{}
	done   chan struct{}
}

func newListener(ln net.Listener, tlsConfig *llibtls.Config) *listener {
	return &listener{ln: ln, tls: tlsConfig, closed: make(chan struct{}), done: make(chan struct{})}
}

func (l *listener) close() {
	l.once.Do(func() {
		close(l.closed)
		_ = l.ln.Close()
	})
}

// overloadResponse answers a connection the gateway cannot take because the
// process is out of file descriptors. It fits any socket's send buffer.
var overloadResponse = []byte("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\n\r\nService Unavailable\n")

// acceptLoop runs until the listener is closed.
//
// Every accepted connection gets an HTTP response. When the process runs
// out of file descriptors (EMFILE, ENFILE), accept fails and leaves the
// connection in the kernel's queue, where it would wait without an answer
// until descriptors free up (clients time out), and an accepted connection
// cannot be handed to nbio, which needs a second descriptor (see addConn).
// The loop keeps one spare descriptor for this: it closes it, accepts the
// waiting connection, answers 503 and closes it, then takes the spare
// back (the libev/nginx technique), so a burst beyond the descriptor limit
// is refused quickly instead of hanging. Other accept errors are retried
// with a backoff of 5ms doubling to 1s, as net/http does.
func (g *Gateway) acceptLoop(l *listener) {
	defer close(l.done)
	l.spare = openSpareFD()
	defer l.spare.close()
	var backoff time.Duration
	for {
		tc, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.closed:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if outOfFDs(err) && l.spare.release() {
				g.rejectOverload(l, err)
				continue
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			g.cfg.Observer.Logger().Warn("gateway: accept failed", "err", err, "retry_in", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-l.closed:
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		g.addConn(l, tc)
	}
}

// rejectOverload accepts the connection waiting behind an accept that
// failed for lack of descriptors, using the spare one, and answers it 503.
func (g *Gateway) rejectOverload(l *listener, acceptErr error) {
	defer l.spare.reopen()
	tc, err := l.ln.Accept()
	if err != nil {
		return
	}
	g.refuseConn(l, tc, acceptErr)
}

// refuseConn answers 503 on a connection the gateway cannot take and closes it.
// Over TLS it only closes: no handshake has taken place.
func (g *Gateway) refuseConn(l *listener, tc net.Conn, cause error) {
	reason := "accept"
	if outOfFDs(cause) {
		reason = "fd_limit"
	}
	if g.m != nil {
		g.m.rejected.WithLabelValues(reason).Inc()
	}
	g.cfg.Observer.Logger().Warn("gateway: connection refused with 503", "reason", reason, "err", cause)
	if l.tls == nil {
		_ = tc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = tc.Write(overloadResponse)
	}
	_ = tc.Close()
}

// addConn hands an accepted TCP connection to nbhttp, which arms the
// handshake deadline and starts reading the request on a poller.
func (g *Gateway) addConn(l *listener, tc net.Conn) {
	nbc, err := nbio.NBConn(tc) // duplicates the descriptor and closes tc
	if err != nil {
		// Out of descriptors for the duplicate: answer on the original.
		g.refuseConn(l, tc, err)
		return
	}
	tlsConfig := l.tls
	g.settling.begin(nbc)
	hc := &nbhttp.Conn{Conn: nbc}
	if tlsConfig != nil {
		g.engine.AddConnTLSNonBlocking(hc, tlsConfig, func() {})
	} else {
		g.engine.AddConnNonTLSNonBlocking(hc, nil, func() {})
	}
	g.settled(nbc)
}

// settled is called once nbhttp's accept path returned for nbc: it armed
// the handshake deadline, which is stale if the connection was upgraded in
// the meantime.
func (g *Gateway) settled(nbc *nbio.Conn) {
	if c := g.settling.end(nbc); c != nil {
		c.clearStaleReadDeadline()
	}
}

// settling tracks the accepted connections nbhttp is still adding, keyed by
// nbio conn, with the Conn they were upgraded to (nil until then). Entries
// live from accept until nbhttp's accept path returns, normally microseconds.
type settling struct {
	mu sync.Mutex
	m  map[*nbio.Conn]*Conn
}

func (s *settling) begin(nbc *nbio.Conn) {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[*nbio.Conn]*Conn{}
	}
	s.m[nbc] = nil
	s.mu.Unlock()
}

// end forgets nbc and returns the Conn it was upgraded to before nbhttp's
// accept path returned, if any.
func (s *settling) end(nbc *nbio.Conn) *Conn {
	s.mu.Lock()
	c := s.m[nbc]
	delete(s.m, nbc)
	s.mu.Unlock()
	return c
}

// upgraded records that c was upgraded, so that settled clears the
// deadline nbhttp's accept path is about to arm. It reports false when that
// path is already done with the connection (the usual case, and always for
// mounted connections, which never enter settling); its deadline may still
// have been armed after the upgrade cleared it, so the caller clears it.
func (s *settling) upgraded(c *Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[c.nbc]; !ok {
		return false
	}
	s.m[c.nbc] = c
	return true
}
