package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

func init() { targetFactories["coder"] = func() serverTarget { return &coderServer{} } }

const coderWriteTimeout = 15 * time.Second // the gateway's WriteTimeout

// coderServer is github.com/coder/websocket with its standard API, as its
// echo and chat examples use it: net/http, websocket.Accept, then the
// handler's goroutine runs the connection's read loop (one goroutine per
// connection); Conn.Read with a context that never ends (Shutdown closes
// the connections instead), Conn.Write bounded by the gateway's 15 s write
// timeout through its context, as the chat example bounds its writes;
// compression disabled, read limit 64 KiB. Broadcast walks the registry
// and writes to each connection in turn (Conn.Write is safe for
// concurrent use).
type coderServer struct {
	srv *http.Server
	lns []net.Listener
	wg  sync.WaitGroup

	mu    sync.Mutex
	conns map[*websocket.Conn]struct{}
}

func (s *coderServer) Start(addrs []string) error {
	s.conns = map[*websocket.Conn]struct{}{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", s.serveWS)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
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
			_ = s.srv.Serve(ln)
		}()
	}
	return nil
}

func (s *coderServer) serveWS(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		InsecureSkipVerify: true, // any origin, as every target here
		CompressionMode:    websocket.CompressionDisabled,
	})
	if err != nil {
		return
	}
	c.SetReadLimit(64 << 10)
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		_ = c.CloseNow()
	}()
	for {
		// A context without Done: Read then arms no timer or callback
		// while the connection idles; Shutdown ends reads with Close.
		typ, data, err := c.Read(context.Background())
		if err != nil {
			return
		}
		if err := s.write(c, typ, data); err != nil {
			return
		}
	}
}

func (s *coderServer) write(c *websocket.Conn, typ websocket.MessageType, data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), coderWriteTimeout)
	defer cancel()
	return c.Write(ctx, typ, data)
}

func (s *coderServer) Addrs() []string {
	out := make([]string, len(s.lns))
	for i, ln := range s.lns {
		out[i] = ln.Addr().String()
	}
	return out
}

func (s *coderServer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *coderServer) snapshot() []*websocket.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*websocket.Conn, 0, len(s.conns))
	for c := range s.conns {
		out = append(out, c)
	}
	return out
}

func (s *coderServer) Broadcast(payload []byte) (int, error) {
	n := 0
	for _, c := range s.snapshot() {
		if s.write(c, websocket.MessageText, payload) == nil {
			n++
		}
	}
	return n, nil
}

// Shutdown stops the listeners, closes every connection with 1001 and
// waits for their handlers to return.
func (s *coderServer) Shutdown(ctx context.Context) error {
	if s.srv == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx) // hijacked connections are not waited for
	var wg sync.WaitGroup
	for _, c := range s.snapshot() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close(websocket.StatusGoingAway, "shutdown")
		}()
	}
	wg.Wait()
	s.wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
