package main

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/lxzan/gws"
)

func init() { targetFactories["gws"] = func() serverTarget { return &gwsServer{} } }

// gwsReadBufferSize is gws's default read buffer, used for the HTTP
// request and then kept by the connection.
const gwsReadBufferSize = 4 << 10

// gwsServer is github.com/lxzan/gws: its event handler (gws.Event) with the
// options of its README's "Best Practice" (ParallelEnabled, Recovery) and
// compression off, served the way gws.Server serves (a bufio.Reader of
// ReadBufferSize per connection reads the request, the connection's
// ReadLoop then runs on that goroutine — one goroutine per connection).
// Broadcast is its README's: one gws.Broadcaster, whose frame is encoded
// once, written to every connection through the connection's async write
// queue. gws has no write-timeout setting (its README's WriteWithTimeout
// wraps every write in a timer and warns of the cost), so none is set;
// messages are limited to 64 KiB like the gateway's.
type gwsServer struct {
	upgrader *gws.Upgrader
	conns    *gws.ConcurrentMap[*gws.Conn, struct{}]
	lns      []net.Listener
	wg       sync.WaitGroup
	once     sync.Once
}

// gwsHandler is the gws.Event of the target: it echoes every message and
// keeps the registry used by Broadcast.
type gwsHandler struct {
	gws.BuiltinEventHandler
	conns *gws.ConcurrentMap[*gws.Conn, struct{}]
}

func (h *gwsHandler) OnOpen(c *gws.Conn) { h.conns.Store(c, struct{}{}) }

func (h *gwsHandler) OnClose(c *gws.Conn, _ error) { h.conns.Delete(c) }

func (h *gwsHandler) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.WriteMessage(m.Opcode, m.Bytes())
}

func (s *gwsServer) Start(addrs []string) error {
	s.conns = gws.NewConcurrentMap[*gws.Conn, struct{}]()
	s.upgrader = gws.NewUpgrader(&gwsHandler{conns: s.conns}, &gws.ServerOption{
		ParallelEnabled:    true,
		Recovery:           gws.Recovery,
		ReadBufferSize:     gwsReadBufferSize,
		ReadMaxPayloadSize: 64 << 10,
		HandshakeTimeout:   10 * time.Second,
		PermessageDeflate:  gws.PermessageDeflate{Enabled: false},
	})
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range s.lns {
				_ = l.Close()
			}
			return err
		}
		s.lns = append(s.lns, ln)
	}
	for _, ln := range s.lns {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.acceptLoop(ln)
		}()
	}
	return nil
}

// acceptLoop is gws.Server.RunListener, except that it returns when the
// listener is closed (RunListener retries forever) and bounds the time to
// read the upgrade request as the gateway does.
func (s *gwsServer) acceptLoop(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go func() {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReaderSize(conn, gwsReadBufferSize)
			r, err := http.ReadRequest(br)
			if err != nil {
				_ = conn.Close()
				return
			}
			_ = conn.SetReadDeadline(time.Time{})
			socket, err := s.upgrader.UpgradeFromConn(conn, br, r)
			if err != nil {
				return
			}
			socket.ReadLoop()
		}()
	}
}

func (s *gwsServer) Addrs() []string {
	out := make([]string, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr().String()
	}
	return out
}

func (s *gwsServer) Len() int { return s.conns.Len() }

func (s *gwsServer) Broadcast(payload []byte) (int, error) {
	b := gws.NewBroadcaster(gws.OpcodeText, payload)
	n := 0
	s.conns.Range(func(c *gws.Conn, _ struct{}) bool {
		if b.Broadcast(c) == nil {
			n++
		}
		return true
	})
	return n, b.Close()
}

func (s *gwsServer) Shutdown(ctx context.Context) error {
	s.once.Do(func() {
		for _, ln := range s.lns {
			_ = ln.Close()
		}
		if s.conns != nil {
			s.conns.Range(func(c *gws.Conn, _ struct{}) bool {
				_ = c.WriteClose(1001, []byte("shutdown"))
				return true
			})
		}
	})
	// Every connection's ReadLoop ends after WriteClose closed its socket,
	// and OnClose removes it from the registry.
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	for s.conns != nil && s.conns.Len() > 0 {
		select {
		case <-tk.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.wg.Wait()
	return nil
}
