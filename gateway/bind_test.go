package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// resource is a resource a host binds to a connection (a subscription):
// it counts its closes and runs an optional hook on each.
type resource struct {
	name   string
	closes atomic.Int32
	closed chan struct{} // closed by the first Close
	hook   func()
}

func newResource(name string) *resource {
	return &resource{name: name, closed: make(chan struct{})}
}

func (r *resource) Close() error {
	if r.hook != nil {
		r.hook()
	}
	if r.closes.Add(1) == 1 {
		close(r.closed)
	}
	return nil
}

// waitClosed waits for r's first Close.
func (r *resource) waitClosed(t *testing.T) {
	t.Helper()
	select {
	case <-r.closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never closed", r.name)
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// Resources bound to a connection are closed exactly once when the client
// goes away: after OnClose returned, in the reverse order of Bind. One the
// host unbound is left to the host. The host's value stays readable.
func TestBindClosedOnDisconnect(t *testing.T) {
	var mu sync.Mutex
	var events []string
	record := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	subs := []*resource{newResource("a"), newResource("b"), newResource("c")}
	for _, r := range subs {
		r.hook = func() { record("close " + r.name) }
	}
	unbound := newResource("unbound")
	var valueInClose atomic.Value
	h := start(t, Config{
		OnOpen: func(c *Conn) {
			c.SetValue("session of " + fmt.Sprint(c.ID()))
			for _, r := range subs {
				_, err := c.Bind(r)
				assert.NoError(t, err)
			}
			unbind, err := c.Bind(unbound)
			assert.NoError(t, err)
			assert.True(t, unbind(), "unbind of a bound resource")
			assert.False(t, unbind(), "a second unbind")
		},
		OnClose: func(c *Conn, _ int, _ string) {
			record("OnClose")
			valueInClose.Store(c.Value())
		},
	})
	ws, c := h.dialOpen(nil)
	assert.Equal(t, "session of "+fmt.Sprint(c.ID()), c.Value())
	require.NoError(t, ws.UnderlyingConn().Close()) // TCP ends without a close frame
	assert.Equal(t, CloseAbnormal, h.nextClose().code)
	for _, r := range subs {
		r.waitClosed(t)
	}
	require.NoError(t, h.g.Close()) // nothing is closed a second time
	for _, r := range subs {
		assert.Equal(t, int32(1), r.closes.Load(), r.name)
	}
	assert.Zero(t, unbound.closes.Load(), "the gateway closed a resource the host unbound")
	mu.Lock()
	assert.Equal(t, []string{"OnClose", "close c", "close b", "close a"}, events)
	mu.Unlock()
	assert.Equal(t, c.Value(), valueInClose.Load(), "the value is readable in OnClose")
}

// A Bind on a closing or closed connection closes the resource at once and
// returns ErrClosed, joined with the resource's own Close error.
func TestBindAfterClose(t *testing.T) {
	h := start(t, Config{CloseGracePeriod: 5 * time.Second})
	ws, c := h.dialOpen(nil)

	require.NoError(t, c.Close(CloseNormal, "bye")) // closing: the peer has not answered yet
	r := newResource("while closing")
	unbind, err := c.Bind(r)
	require.ErrorIs(t, err, ErrClosed)
	assert.Equal(t, int32(1), r.closes.Load(), "not closed before Bind returned")
	assert.False(t, unbind())

	assert.Equal(t, CloseNormal, readClose(t, ws)) // gorilla answers the close frame
	assert.Equal(t, CloseNormal, h.nextClose().code)
	r = newResource("after close")
	unbind, err = c.Bind(r)
	require.ErrorIs(t, err, ErrClosed)
	assert.Equal(t, int32(1), r.closes.Load())
	assert.False(t, unbind())

	boom := errors.New("unsubscribe failed")
	_, err = c.Bind(closerFunc(func() error { return boom }))
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, err, boom)
}

// A Bind racing the connection's close never leaks its resource and never
// closes it twice: each resource is closed exactly once, by the gateway,
// by Bind itself (ErrClosed), or by the host after a successful unbind.
// Run with -race.
func TestBindRacesClose(t *testing.T) {
	const (
		rounds  = 60
		binders = 4
		perG    = 25
	)
	h := start(t, Config{CloseGracePeriod: 100 * time.Millisecond})
	var all []*resource
	for round := range rounds {
		ws, c := h.dialOpen(nil)
		go func() { // answer the close frame, if any
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		rs := make([]*resource, binders*perG)
		for i := range rs {
			rs[i] = newResource(fmt.Sprintf("round %d resource %d", round, i))
		}
		all = append(all, rs...)
		begin := make(chan struct{})
		var wg sync.WaitGroup
		for g := range binders {
			wg.Go(func() {
				<-begin
				for i, r := range rs[g*perG : (g+1)*perG] {
					unbind, err := c.Bind(r)
					if err != nil {
						assert.ErrorIs(t, err, ErrClosed)
						continue
					}
					if i%3 == 0 && unbind() {
						_ = r.Close() // the host unsubscribes by itself
					}
				}
			})
		}
		close(begin)
		switch round % 3 {
		case 0:
			_ = c.Close(CloseNormal, "") // the host closes
		case 1:
			_ = ws.UnderlyingConn().Close() // the client goes away
		case 2:
			c.fail(CloseSlowConsumer, "slow consumer") // the gateway drops it
		}
		wg.Wait()
		h.nextClose()
		for _, r := range rs {
			r.waitClosed(t)
		}
		_ = ws.Close()
	}
	require.NoError(t, h.g.Close())
	for _, r := range all {
		require.Equal(t, int32(1), r.closes.Load(), r.name)
	}
}

// Shutdown, and Close, release every connection before returning: its
// OnClose has run and its bound resources are closed, once.
func TestShutdownClosesBound(t *testing.T) {
	for _, immediate := range []bool{false, true} {
		t.Run(fmt.Sprintf("immediate=%v", immediate), func(t *testing.T) {
			var closes atomic.Int32
			h := start(t, Config{
				CloseGracePeriod: time.Minute, // Close does not wait for it
				OnClose:          func(*Conn, int, string) { closes.Add(1) },
			})
			var rs []*resource
			for i := range 5 {
				ws, c := h.dialOpen(nil)
				if !immediate { // the clients answer the close frames
					go func() {
						for {
							if _, _, err := ws.ReadMessage(); err != nil {
								return
							}
						}
					}()
				}
				for j := range 2 {
					r := newResource(fmt.Sprintf("conn %d resource %d", i, j))
					_, err := c.Bind(r)
					require.NoError(t, err)
					rs = append(rs, r)
				}
			}
			if immediate {
				began := time.Now()
				require.NoError(t, h.g.Close())
				assert.Less(t, time.Since(began), 10*time.Second, "Close waited for the peers")
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				require.NoError(t, h.g.Shutdown(ctx))
			}
			assert.Equal(t, int32(5), closes.Load(), "OnClose ran for every connection")
			for _, r := range rs {
				assert.Equal(t, int32(1), r.closes.Load(), r.name)
			}
		})
	}
}

// SetValue and Value are safe for concurrent use; the zero value is nil.
func TestConnValue(t *testing.T) {
	h := start(t, Config{OnMessage: func(c *Conn, _ MessageType, data []byte) {
		c.SetValue(string(data))
		_ = c.Send(TextMessage, []byte(c.Value().(string)))
	}})
	ws, c := h.dialOpen(nil)
	assert.Nil(t, c.Value())
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 1000 {
			if v := c.Value(); v != nil {
				_ = v.(string)
			}
		}
	})
	for i := range 20 {
		require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(i))))
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range 20 {
		_, data, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprint(i), string(data))
	}
	wg.Wait()
	assert.Equal(t, "19", c.Value())
	c.SetValue(nil)
	assert.Nil(t, c.Value())
}

// TestIdentityValue: what Authenticate parsed reaches the handlers typed.
func TestIdentityValue(t *testing.T) {
	type claims struct {
		Skills   []string
		Capacity int
	}
	got := make(chan claims, 1)
	h := start(t, Config{
		Authenticate: func(r *http.Request) (Identity, error) {
			return Identity{UserID: "ann", Role: RoleAgent, Value: claims{Skills: []string{"billing", "fr"}, Capacity: 3}}, nil
		},
		OnOpen: func(c *Conn) { got <- c.Identity().Value.(claims) },
	})
	h.dialOpen(nil)
	select {
	case c := <-got:
		assert.Equal(t, claims{Skills: []string{"billing", "fr"}, Capacity: 3}, c)
	case <-time.After(5 * time.Second):
		t.Fatal("OnOpen not called")
	}
}
