package gateway

import (
	"io"
	"strconv"
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
