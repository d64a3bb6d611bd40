package gateway

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pingFloodHeapSlack is the heap growth allowed while one connection floods
// pings and never reads, on top of its MaxOutgoingBytes: nbio's copy of the
// queued frames (up to twice the cap with buffer growth), the handler jobs
// of at most maxPendingControl pings, the read buffers and GC headroom.
const pingFloodHeapSlack = 16 << 20

// A client that sends pings and never reads used to grow the server's heap
// without bound: pongs were queued past Config.MaxOutgoingBytes. Now every
// frame counts against the cap; the connection is closed with 4008 (or
// dropped when even the close frame does not fit) and memory stays bounded.
func TestPingFloodOutgoingCapped(t *testing.T) {
	const capBytes = 64 << 10
	h := start(t, Config{MaxOutgoingBytes: capBytes, OnMessage: echo, OnOpen: func(c *Conn) {
		// Small kernel buffers on both sides (see the dialer below): the
		// pongs reach the gateway's own queue within milliseconds.
		_ = c.nbc.SetWriteBuffer(4096)
	}})
	addr := h.g.Addrs()[0].String()

	// A 4 KiB receive window: the server's socket buffers fill quickly.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer raw.Close()
	upgradeRaw(t, raw, addr)
	c := h.nextOpen()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapAlloc

	sent := flood(raw, bytes.Repeat(maskedFrame(0x89, make([]byte, 125)), 500))
	maxQueued, maxHeap := 0, baseHeap
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var e closeEvent
poll:
	for i := 0; ; i++ {
		select {
		case e = <-h.closed:
			break poll
		case <-deadline.C:
			t.Fatalf("the flooding connection was not closed; %d bytes queued", c.Buffered())
		case <-tick.C:
			maxQueued = max(maxQueued, c.Buffered())
			require.LessOrEqual(t, maxQueued, capBytes, "queued past MaxOutgoingBytes")
			if i%10 == 0 {
				runtime.ReadMemStats(&ms)
				maxHeap = max(maxHeap, ms.HeapAlloc)
			}
		}
	}
	_ = raw.Close()
	<-sent
	assert.Same(t, c, e.conn)
	assert.Equal(t, CloseSlowConsumer, e.code)
	assert.LessOrEqual(t, maxQueued, capBytes)
	// The 4008 above proves the queue reached the cap (nothing else closes
	// with it); in inline mode that can happen between two samples, so the
	// sampled peak is only logged.
	assert.Less(t, maxHeap-baseHeap, uint64(capBytes+pingFloodHeapSlack), "heap grew by %d MiB", (maxHeap-baseHeap)>>20)
	t.Logf("max queued %d B, heap growth %.1f MiB", maxQueued, float64(maxHeap-baseHeap)/(1<<20))
	assertHealthy(t, h)
}
