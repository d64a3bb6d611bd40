package gateway

import (
	"net"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/lesismal/nbio"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestInlineSuite re-runs the behaviour tests with Config.InlineHandlers:
// echo and per-connection order, limits and their close codes, slow
// consumers, panics, idle reaping, Shutdown.
func TestInlineSuite(t *testing.T) {
	for name, test := range map[string]func(*testing.T){
		"Echo":                    TestEcho,
		"LargeEcho":               TestLargeEcho,
		"MessageTooBig1009":       TestMessageTooBig1009,
		"InvalidUTF8_1007":        TestInvalidUTF8_1007,
		"RateLimit":               TestRateLimit,
		"SlowConsumer":            TestSlowConsumerDisconnected,
		"IdleReaping":             TestIdleReaping,
		"PongKeepsAlive":          TestPongKeepsAlive,
		"HandlerPanic1011":        TestHandlerPanic1011,
		"ShutdownSends1001":       TestShutdownSends1001,
		"RegistryAndSendToUser":   TestRegistryAndSendToUser,
		"Broadcast":               TestBroadcast,
		"ContextCancelled":        TestContextCancelledOnPeerClose,
		"WriteTimeout4001":        TestWriteTimeout4001,
		"TLS":                     TestTLS,
		"RateLimitEveryFrame":     TestRateLimitCountsEveryFrame,
		"RateDropPings":           TestRateDropPings,
		"MaxFragments1009":        TestMaxFragments1009,
		"UnmaskedFrame1002":       TestUnmaskedFrame1002,
		"FramesSplit":             TestFramesSplitAcrossReads,
		"PingFloodCapped":         TestPingFloodOutgoingCapped,
		"BindClosedOnDisconnect":  TestBindClosedOnDisconnect,
		"BindRacesClose":          TestBindRacesClose,
		"ShutdownClosesBound":     TestShutdownClosesBound,
		"ShutdownContextEnds":     TestShutdownContextEnds,
		"CallbacksNotInHostCalls": TestCallbacksNotRunInsideHostCalls,
	} {
		t.Run(name, func(t *testing.T) {
			testInline = true
			defer func() { testInline = false }()
			test(t)
		})
	}
}

// With InlineHandlers a message is handled on the event loop: it is echoed
// while the executor's only worker is blocked (in another connection's
// OnOpen). Without it, the same message waits for the worker.
func TestInlineHandlersBypassExecutor(t *testing.T) {
	for _, inline := range []bool{true, false} {
		t.Run("inline="+strconv.FormatBool(inline), func(t *testing.T) {
			release := make(chan struct{})
			var opens atomic.Int32
			h := start(t, Config{
				HandlerWorkers: 1,
				InlineHandlers: inline,
				OnOpen: func(*Conn) {
					if opens.Add(1) == 2 {
						<-release // the second connection's OnOpen holds the worker
					}
				},
				OnMessage: echo,
			})
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			a, _ := h.dialOpen(nil)
			h.dial(nil) // 101 is written before OnOpen runs, so Dial returns
			require.Eventually(t, func() bool { return opens.Load() == 2 }, 5*time.Second, time.Millisecond)

			require.NoError(t, a.WriteMessage(websocket.TextMessage, []byte("ping")))
			wait := 5 * time.Second
			if !inline {
				wait = 300 * time.Millisecond
			}
			_ = a.SetReadDeadline(time.Now().Add(wait))
			_, data, err := a.ReadMessage()
			if inline {
				require.NoError(t, err)
				assert.Equal(t, "ping", string(data))
				return
			}
			require.Error(t, err, "the executor's only worker is blocked: no echo yet")
			close(release)
			// gorilla's connection is unusable after a read timeout; the
			// server still echoes on a fresh one once the worker is free.
			b, _ := h.dialOpen(nil)
			h.nextOpen()
			require.NoError(t, b.WriteMessage(websocket.TextMessage, []byte("pong")))
			_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, data, err = b.ReadMessage()
			require.NoError(t, err)
			assert.Equal(t, "pong", string(data))
		})
	}
}

// OnOpen runs on the executor while frames may already be parsed on the
// event loop: they wait for it, and keep their order.
func TestInlineOnOpenBeforeFirstMessage(t *testing.T) {
	var opened atomic.Bool
	h := start(t, Config{
		InlineHandlers: true,
		OnOpen: func(*Conn) {
			time.Sleep(200 * time.Millisecond)
			opened.Store(true)
		},
		OnMessage: func(c *Conn, typ MessageType, data []byte) {
			if !opened.Load() {
				data = []byte("before open")
			}
			_ = c.Send(typ, data)
		},
	})
	ws := h.dial(nil)
	for i := range 100 {
		require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(strconv.Itoa(i))))
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range 100 {
		_, data, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(i), string(data))
	}
	// Later messages run inline once the queue drained, still in order.
	for i := range 100 {
		require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("late"+strconv.Itoa(i))))
		_, data, err := ws.ReadMessage()
		require.NoError(t, err)
		require.Equal(t, "late"+strconv.Itoa(i), string(data))
	}
}

// A connection closed from another goroutine while its OnMessage runs on
// the event loop gets OnClose only after that OnMessage returned, and no
// OnMessage afterwards.
func TestInlineOnCloseAfterRunningMessage(t *testing.T) {
	var inMessage, closed atomic.Bool
	var violations atomic.Int32
	started := make(chan *Conn, 1)
	h := start(t, Config{
		InlineHandlers: true,
		OnMessage: func(c *Conn, _ MessageType, data []byte) {
			if closed.Load() {
				violations.Add(1) // OnMessage after OnClose
			}
			inMessage.Store(true)
			if string(data) == "slow" {
				started <- c
				time.Sleep(300 * time.Millisecond)
			}
			inMessage.Store(false)
		},
		OnClose: func(*Conn, int, string) {
			if inMessage.Load() {
				violations.Add(1) // OnClose during OnMessage
			}
			closed.Store(true)
		},
	})
	ws, _ := h.dialOpen(nil)
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("slow")))
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("after")))
	c := <-started
	c.fail(CloseSlowConsumer, "test") // closes the socket now, from this goroutine
	e := h.nextClose()
	assert.Equal(t, CloseSlowConsumer, e.code)
	assert.Zero(t, violations.Load())
	assert.False(t, inMessage.Load())
}

func TestLoopYield(t *testing.T) {
	var now int64
	yields := 0
	y := newLoopYield(2)
	y.now = func() int64 { return now }
	y.yield = func() { yields++ }
	nc := newNBConn(t)
	for range 5 { // every read within loopYieldEvery of the first yield
		now += int64(loopYieldEvery) / 10
		y.afterRead(nc, nil)
	}
	assert.Equal(t, 0, yields, "not yet due: the first yield comes after loopYieldEvery")
	now += int64(loopYieldEvery)
	y.afterRead(nc, nil)
	assert.Equal(t, 1, yields)
	y.afterRead(nc, nil)
	assert.Equal(t, 1, yields, "at most one yield per interval")
	now += int64(loopYieldEvery)
	y.afterRead(nc, nil)
	assert.Equal(t, 2, yields)
}

// newNBConn returns an nbio connection over loopback TCP, not added to any
// engine, closed at cleanup.
func newNBConn(t *testing.T) *nbio.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	tc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	peer, err := ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { _ = peer.Close() })
	nc, err := nbio.NBConn(tc)
	require.NoError(t, err)
	t.Cleanup(func() { _ = nc.Close() })
	return nc
}
