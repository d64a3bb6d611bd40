package gateway

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/switchboard-go/switchboard/observe"
)

// Ready follows the lifecycle: ErrNotStarted, nil, ErrDraining while
// Shutdown drains, ErrClosed once stopped; the Observer's readiness check
// is the same. Close during a Shutdown cuts the drain short, and both
// return once the gateway stopped. Everything is idempotent.
func TestLifecycleReady(t *testing.T) {
	o, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	g, err := New(Config{Addrs: []string{"127.0.0.1:0"}, Observer: o, HandlerWorkers: 2,
		CloseGracePeriod: time.Minute})
	require.NoError(t, err)
	require.ErrorIs(t, g.Ready(), ErrNotStarted)
	var nr *observe.NotReadyError
	require.ErrorAs(t, o.Ready(context.Background()), &nr)
	assert.ErrorIs(t, nr, ErrNotStarted)

	require.NoError(t, g.Start())
	require.NoError(t, g.Ready())
	require.NoError(t, o.Ready(context.Background()))

	// A client that never answers the close frame keeps Shutdown draining.
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+g.Addrs()[0].String()+"/ws", nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	defer ws.Close()
	require.Eventually(t, func() bool { return g.Len() == 1 }, 5*time.Second, time.Millisecond)

	shutdown := make(chan error, 1)
	go func() { shutdown <- g.Shutdown(context.Background()) }()
	require.Eventually(t, func() bool { return g.Ready() != nil }, 5*time.Second, time.Millisecond)
	assert.ErrorIs(t, g.Ready(), ErrDraining)
	require.ErrorAs(t, o.Ready(context.Background()), &nr)
	assert.ErrorIs(t, nr, ErrDraining)
	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a client had not answered", err)
	case <-time.After(100 * time.Millisecond):
	}

	require.NoError(t, g.Close()) // cuts the drain short
	select {
	case err := <-shutdown:
		require.NoError(t, err, "the first Shutdown's own context never ended")
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return after Close")
	}
	assert.ErrorIs(t, g.Ready(), ErrClosed)
	require.ErrorAs(t, o.Ready(context.Background()), &nr)
	assert.ErrorIs(t, nr, ErrClosed)
	assert.Zero(t, g.Len())

	assert.NoError(t, g.Close())
	assert.NoError(t, g.Shutdown(context.Background()))
	assert.ErrorIs(t, g.Start(), ErrClosed)
}

// A gateway never started closes at once, and cannot be started after.
func TestCloseNeverStarted(t *testing.T) {
	g, err := New(Config{})
	require.NoError(t, err)
	require.NoError(t, g.Close())
	assert.ErrorIs(t, g.Ready(), ErrClosed)
	assert.ErrorIs(t, g.Start(), ErrClosed)
	assert.NoError(t, g.Shutdown(context.Background()))
}

// When Shutdown's context ends before the clients answered, the remaining
// connections are closed at once (1001, best effort), their OnClose runs
// before Shutdown returns ctx.Err(), and a concurrent Shutdown waits for
// the same end.
func TestShutdownContextEnds(t *testing.T) {
	var closes atomic.Int32
	h := start(t, Config{CloseGracePeriod: time.Minute, DrainBatch: 1, DrainInterval: time.Hour,
		OnClose: func(*Conn, int, string) { closes.Add(1) }})
	var clients []*websocket.Conn
	var ctxs []context.Context
	for range 3 {
		ws, c := h.dialOpen(nil)
		clients = append(clients, ws)
		ctxs = append(ctxs, c.Context())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	second := make(chan error, 1)
	go func() { second <- h.g.Shutdown(context.Background()) }()
	began := time.Now()
	err := h.g.Shutdown(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(began), 10*time.Second)
	assert.Equal(t, int32(3), closes.Load(), "OnClose ran before Shutdown returned")
	for _, c := range ctxs {
		assert.Error(t, c.Err())
	}
	select {
	case err := <-second:
		assert.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("the second Shutdown did not return")
	}
	for _, ws := range clients {
		assert.Equal(t, CloseGoingAway, readClose(t, ws))
	}
}

// Shutdown cannot stop a callback that is running: when its context ends it
// cancels the connections' contexts and then waits for the callbacks to
// return, so that when it returns no callback runs. A handler that watches
// Conn.Context returns at once; one that does not holds Shutdown until it
// does. OnClose never overlaps OnMessage.
func TestShutdownWaitsForRunningHandler(t *testing.T) {
	for _, inline := range []bool{false, true} {
		for _, watchesCtx := range []bool{true, false} {
			t.Run(fmt.Sprintf("inline=%v/watchesCtx=%v", inline, watchesCtx), func(t *testing.T) {
				entered, release := make(chan struct{}), make(chan struct{})
				var inHandler, overlap atomic.Bool
				var closes atomic.Int32
				g, err := New(Config{
					Addrs:          []string{"127.0.0.1:0"},
					HandlerWorkers: 2,
					InlineHandlers: inline,
					OnMessage: func(c *Conn, _ MessageType, _ []byte) {
						inHandler.Store(true)
						defer inHandler.Store(false)
						close(entered)
						if watchesCtx {
							<-c.Context().Done()
						} else {
							<-release
						}
					},
					OnClose: func(*Conn, int, string) {
						overlap.Store(inHandler.Load())
						closes.Add(1)
					},
				})
				require.NoError(t, err)
				require.NoError(t, g.Start())
				ws, resp, err := websocket.DefaultDialer.Dial("ws://"+g.Addrs()[0].String()+"/ws", nil)
				require.NoError(t, err)
				_ = resp.Body.Close()
				defer ws.Close()
				require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("stick")))
				<-entered

				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- g.Shutdown(ctx) }()
				if !watchesCtx {
					select {
					case err := <-done:
						close(release)
						t.Fatalf("Shutdown returned %v while a handler ran", err)
					case <-time.After(time.Second):
					}
					close(release)
				}
				select {
				case err := <-done:
					require.ErrorIs(t, err, context.DeadlineExceeded)
				case <-time.After(10 * time.Second):
					t.Fatal("Shutdown did not return after the handler did")
				}
				assert.Equal(t, int32(1), closes.Load())
				assert.False(t, overlap.Load(), "OnClose ran during OnMessage")
				assert.Zero(t, g.Len())
				// goleak in TestMain checks that nothing outlived Shutdown.
			})
		}
	}
}

// hostLock is a host's own mutex whose callbacks-side acquire gives up
// after a while, so that a callback run inside a gateway call made under
// the lock (a deadlock with a plain mutex) fails the test instead of
// hanging it.
type hostLock struct {
	sem      chan struct{}
	deadlock atomic.Bool
}

func newHostLock() *hostLock { return &hostLock{sem: make(chan struct{}, 1)} }

func (l *hostLock) lock()   { l.sem <- struct{}{} }
func (l *hostLock) unlock() { <-l.sem }

// lockFromCallback takes the lock in a callback; it reports (and records)
// a deadlock when the lock stays held for 3s.
func (l *hostLock) lockFromCallback() bool {
	select {
	case l.sem <- struct{}{}:
		return true
	case <-time.After(3 * time.Second):
		l.deadlock.Store(true)
		return false
	}
}

// The host may call Conn.Close, Conn.Send and Conn.Bind while holding its
// own lock, from its goroutines or from a handler, and take the same lock
// in OnClose and in a bound resource's Close: the gateway never runs a
// callback inside the host's call, so nothing deadlocks.
func TestCallbacksNotRunInsideHostCalls(t *testing.T) {
	mu := newHostLock()
	inClose := func() {
		if mu.lockFromCallback() {
			mu.unlock()
		}
	}
	h := start(t, Config{
		CloseGracePeriod: 200 * time.Millisecond,
		MaxOutgoingBytes: 64 << 10,
		OnMessage: func(c *Conn, _ MessageType, data []byte) {
			mu.lock()
			defer mu.unlock()
			switch string(data) {
			case "close":
				_ = c.Close(CloseNormal, "closed by a handler")
			case "flood": // the client does not read: the Send disconnects it (4008)
				for c.Send(BinaryMessage, make([]byte, 32<<10)) == nil {
				}
			}
		},
		OnClose: func(*Conn, int, string) { inClose() },
	})
	bindLocked := func(c *Conn) <-chan struct{} {
		done := make(chan struct{})
		_, err := c.Bind(closerFunc(func() error { inClose(); close(done); return nil }))
		require.NoError(t, err)
		return done
	}
	for _, tc := range []struct {
		name string
		code int
		act  func(ws *websocket.Conn, c *Conn)
	}{
		{"Conn.Close from the host's goroutine", CloseNormal, func(ws *websocket.Conn, c *Conn) {
			returned := make(chan struct{})
			go func() {
				mu.lock()
				defer mu.unlock()
				_ = c.Close(CloseNormal, "closed by the host")
				close(returned)
				time.Sleep(50 * time.Millisecond) // still holding the lock while the peer answers
			}()
			go func() { _, _, _ = ws.ReadMessage() }() // answers the close frame
			select {
			case <-returned:
			case <-time.After(5 * time.Second):
				t.Fatal("Conn.Close blocked")
			}
		}},
		{"Conn.Close from a handler", CloseNormal, func(ws *websocket.Conn, _ *Conn) {
			require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("close")))
			go func() { _, _, _ = ws.ReadMessage() }()
		}},
		{"Conn.Send disconnecting a slow consumer", CloseSlowConsumer, func(ws *websocket.Conn, _ *Conn) {
			require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("flood")))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws, c := h.dialOpen(nil)
			bound := bindLocked(c)
			tc.act(ws, c)
			assert.Equal(t, tc.code, h.nextClose().code)
			select {
			case <-bound:
			case <-time.After(10 * time.Second):
				t.Fatal("the bound resource was not closed")
			}
			assert.False(t, mu.deadlock.Load(), "a callback ran inside a gateway call made under the host's lock")
		})
	}
}
