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
	once   sync.Once
	closed chan struct{}
	done   chan struct{}
}

func (l *listener) close() {
	l.once.Do(func() {
		close(l.closed)
		_ = l.ln.Close()
	})
}

// acceptLoop runs until the listener is closed. Accept errors other than a
// closed listener (EMFILE when out of descriptors, ...) are retried with a
// backoff of 5ms doubling to 1s, as net/http does.
func (g *Gateway) acceptLoop(l *listener) {
	defer close(l.done)
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
		g.addConn(tc, l.tls)
	}
}

// addConn hands an accepted TCP connection to nbhttp, which arms the
// handshake deadline and starts reading the request on a poller.
func (g *Gateway) addConn(tc net.Conn, tlsConfig *llibtls.Config) {
	nbc, err := nbio.NBConn(tc) // duplicates the descriptor and closes tc
	if err != nil {
		_ = tc.Close()
		return
	}
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
