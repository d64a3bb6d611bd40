package gateway

import (
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
)

// benchConns opens n drained client connections on a fresh gateway.
func benchConns(b *testing.B, n int) (*harness, []*Conn) {
	h := start(b, Config{})
	conns := make([]*Conn, 0, n)
	for range n {
		ws, c := h.dialOpen(nil)
		conns = append(conns, c)
		// Drain below gorilla's frame reader so the client side allocates
		// nothing and -benchmem shows the server's allocations only.
		go func(ws *websocket.Conn) { _, _ = io.Copy(io.Discard, ws.NetConn()) }(ws)
	}
	return h, conns
}

func BenchmarkBroadcast200B(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(strconv.Itoa(n)+"conns", func(b *testing.B) {
			h, conns := benchConns(b, n)
			pm, err := NewPreparedMessage(TextMessage, make([]byte, 200))
			require.NoError(b, err)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.g.Broadcast(pm, conns)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/conn")
		})
	}
}

// BenchmarkEchoRoundTrip measures a 200-byte echo over loopback, handlers
// on the executor (pool) or on the event loop (inline), from one client
// connection and from 32 at once (b.N round trips in all). Allocations
// include gorilla's client.
func BenchmarkEchoRoundTrip(b *testing.B) {
	for _, mode := range []string{"pool", "inline"} {
		for _, conns := range []int{1, 32} {
			b.Run(mode+"/"+strconv.Itoa(conns)+"conns", func(b *testing.B) {
				h := start(b, Config{InlineHandlers: mode == "inline", OnMessage: echo})
				clients := make([]*websocket.Conn, conns)
				for i := range clients {
					clients[i] = h.dial(nil)
				}
				msg := make([]byte, 200)
				var next atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				var wg sync.WaitGroup
				for _, ws := range clients {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if err := ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
								b.Error(err)
								return
							}
							if _, _, err := ws.ReadMessage(); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}
