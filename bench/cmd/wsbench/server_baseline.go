package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

func init() { targetFactories["baseline"] = func() serverTarget { return &baselineServer{} } }

// baselineServer is the whitepaper's design, written the way it shows it:
// net/http + gorilla/websocket, upgrader.Upgrade and then
// `go handleConnection(conn)` — one goroutine per connection running a read
// loop, writes serialised by a per-connection mutex, default upgrader
// buffers. Broadcast walks the registry and writes to each connection in
// turn.
type baselineServer struct {
	upgrader websocket.Upgrader
	srv      *http.Server
	lns      []net.Listener
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[*baselineConn]struct{}
}

type baselineConn struct {
	ws  *websocket.Conn
	wmu sync.Mutex
}

const baselineWriteTimeout = 15 * time.Second // the whitepaper's write timeout

func (b *baselineServer) Start(addrs []string) error {
	b.conns = map[*baselineConn]struct{}{}
	b.upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, err := b.upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		go b.handleConnection(conn)
	})
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range b.lns {
				_ = l.Close()
			}
			return err
		}
		b.lns = append(b.lns, ln)
	}
	for _, ln := range b.lns {
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			_ = b.srv.Serve(ln)
		}()
	}
	return nil
}

func (b *baselineServer) handleConnection(ws *websocket.Conn) {
	c := &baselineConn{ws: ws}
	b.mu.Lock()
	b.conns[c] = struct{}{}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.conns, c)
		b.mu.Unlock()
		_ = ws.Close()
	}()
	for {
		mt, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		c.wmu.Lock()
		_ = ws.SetWriteDeadline(time.Now().Add(baselineWriteTimeout))
		err = ws.WriteMessage(mt, data)
		c.wmu.Unlock()
		if err != nil {
			return
		}
	}
}

func (b *baselineServer) Addrs() []string {
	out := make([]string, len(b.lns))
	for i, ln := range b.lns {
		out[i] = ln.Addr().String()
	}
	return out
}

func (b *baselineServer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}

func (b *baselineServer) snapshot() []*baselineConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*baselineConn, 0, len(b.conns))
	for c := range b.conns {
		out = append(out, c)
	}
	return out
}

func (b *baselineServer) Broadcast(payload []byte) (int, error) {
	n := 0
	for _, c := range b.snapshot() {
		c.wmu.Lock()
		_ = c.ws.SetWriteDeadline(time.Now().Add(baselineWriteTimeout))
		if c.ws.WriteMessage(websocket.TextMessage, payload) == nil {
			n++
		}
		c.wmu.Unlock()
	}
	return n, nil
}

func (b *baselineServer) Shutdown(ctx context.Context) error {
	if b.srv == nil {
		return nil
	}
	err := b.srv.Shutdown(ctx)
	for _, c := range b.snapshot() {
		c.wmu.Lock()
		_ = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseGoingAway, "shutdown"), time.Now().Add(time.Second))
		c.wmu.Unlock()
		_ = c.ws.Close()
	}
	b.wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
