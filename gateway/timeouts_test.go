package gateway

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dialSmallRcvBuf dials with a 4 KiB receive buffer, set before connect so
// that the advertised window stays small and the server's kernel buffers
// fill after a few hundred KiB.
func dialSmallRcvBuf(t *testing.T, h *harness) *websocket.Conn {
	t.Helper()
	nd := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nd.DialContext(ctx, network, addr)
	}}
	ws, resp, err := d.Dial(h.url, nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	return ws
}

func TestWriteTimeout4001(t *testing.T) {
	const wto = 10 * time.Second
	h := start(t, manualSweeps(Config{
		WriteTimeout:     wto,
		PingInterval:     time.Hour, // no pings, no idle reaping during the test
		IdleTimeout:      2 * time.Hour,
		MaxOutgoingBytes: -1, // unlimited: 4008 must not fire first
	}))
	// The test runs the sweeps itself, on its own time line.
	sweep := newSweepClock(h.g).advance

	dialSmallRcvBuf(t, h) // never reads
	slow := h.nextOpen()
	fastWS, fast := h.dialOpen(nil)
	received := make(chan int, 1)
	go func() {
		for {
			_, data, err := fastWS.ReadMessage()
			if err != nil {
				close(received)
				return
			}
			received <- len(data)
		}
	}()
	sendFast := func() {
		t.Helper()
		require.NoError(t, fast.Send(BinaryMessage, make([]byte, 32<<10)))
		select {
		case n := <-received:
			require.Equal(t, 32<<10, n)
		case <-time.After(5 * time.Second):
			t.Fatal("fast reader got nothing")
		}
	}

	// Fill the kernel buffers of the slow connection: once nbio holds
	// bytes the kernel would not take, and the kernel keeps refusing more,
	// the connection makes no progress.
	pm, err := NewPreparedMessage(BinaryMessage, make([]byte, 64<<10))
	require.NoError(t, err)
	for i := 0; slow.Buffered() < 1<<20; i++ {
		require.Less(t, i, 1000, "the kernel kept accepting 64 MiB for a client that does not read")
		require.NoError(t, slow.SendPrepared(pm))
	}
	stuck := slow.Buffered()

	// Time passes in sweep steps; the fast connection keeps making progress,
	// the slow one makes none and stays open until WriteTimeout.
	step := time.Second
	for elapsed := step; elapsed < wto; elapsed += step {
		sendFast()
		require.NoError(t, slow.SendPrepared(pm)) // the server keeps sending
		stuck += pm.FrameLen()
		sweep(step)
		require.True(t, slow.Open(), "closed after %v, before WriteTimeout", elapsed)
		require.GreaterOrEqual(t, slow.Buffered(), stuck-256<<10, "progress on a connection nobody reads")
	}
	sendFast()
	sweep(step)
	assert.False(t, slow.Open())
	e := h.nextClose()
	assert.Equal(t, CloseWriteTimeout, e.code)
	assert.Equal(t, "write timeout", e.reason)
	assert.Same(t, slow, e.conn)
	assert.ErrorIs(t, slow.SendPrepared(pm), ErrClosed)

	// The other connection was never affected and keeps receiving.
	assert.True(t, fast.Open())
	for range 5 {
		sendFast()
		sweep(step)
	}
	assert.True(t, fast.Open())
	select {
	case e := <-h.closed:
		t.Fatalf("unexpected close %d of conn %d", e.code, e.conn.ID())
	default:
	}
}

// Connections accepted before the first sweep are stamped with the time of
// Start, not of New: a gateway built long before it starts must not reap
// (or ping) its first connections at once.
func TestClockStampedAtStart(t *testing.T) {
	g, err := New(manualSweeps(Config{Addrs: []string{"127.0.0.1:0"}, HandlerWorkers: 2,
		PingInterval: 10 * time.Second, IdleTimeout: 30 * time.Second}))
	require.NoError(t, err)
	// Configured at init, started an hour later: New's stamp is an hour old.
	g.now.Store(time.Now().Add(-time.Hour).UnixNano())
	require.NoError(t, g.Start())
	clk := newSweepClock(g)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, g.Shutdown(ctx))
	}()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+g.Addrs()[0].String()+"/ws", nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	defer ws.Close()
	require.Eventually(t, func() bool { return g.Len() == 1 }, 5*time.Second, time.Millisecond)
	var c *Conn
	g.Range(func(x *Conn) bool { c = x; return false })
	clk.advance(time.Second)
	assert.True(t, c.Open(), "a fresh connection was reaped")
	assert.Zero(t, c.Buffered())
	assert.Equal(t, c.lastRead.Load(), c.lastPing.Load(), "no ping sent to a fresh connection")
}
