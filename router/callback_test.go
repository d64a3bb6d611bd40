package router

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hostDeadline bounds the wait for a host call in the re-entrancy tests, so
// that a deadlock fails the test instead of hanging it.
const hostDeadline = 10 * time.Second

// within runs f on its own goroutine and fails the test if it does not
// return within hostDeadline.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(hostDeadline):
		t.Fatalf("%s did not return within %v: deadlock", what, hostDeadline)
	}
}

// TestCallbacksDoNotReenterHost plays a host that holds its own mutex
// around every Assigner call and takes the same mutex in every callback.
// Were a callback run inside the call (on the caller's goroutine), the
// callback would wait for the mutex the caller holds, forever.
func TestCallbacksDoNotReenterHost(t *testing.T) {
	var (
		host     sync.Mutex // the host's own lock
		a        *Assigner
		capacity = make(chan CapacityEvent, 64)
		expired  = make(chan ExpiredOffer, 64)
		offline  = make(chan AgentOffline, 64)
	)
	a, err := NewAssigner(AssignerConfig{
		OfferTimeout: 50 * time.Millisecond,
		OnCapacity: func(e CapacityEvent) {
			host.Lock()
			defer host.Unlock()
			_ = a.Stats() // and may call the Assigner
			capacity <- e
		},
		OnOfferExpired: func(e ExpiredOffer) {
			host.Lock()
			defer host.Unlock()
			expired <- e
		},
		OnAgentOffline: func(e AgentOffline) {
			host.Lock()
			defer host.Unlock()
			offline <- e
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	locked := func(what string, op func() error) {
		t.Helper()
		within(t, what, func() {
			host.Lock()
			defer host.Unlock()
			require.NoError(t, op(), what)
		})
	}
	wait := func(what string, ch any) {
		t.Helper()
		timeout := time.After(hostDeadline)
		switch ch := ch.(type) {
		case chan CapacityEvent:
			select {
			case <-ch:
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		case chan ExpiredOffer:
			select {
			case <-ch:
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		case chan AgentOffline:
			select {
			case <-ch:
			case <-timeout:
				t.Fatalf("no %s", what)
			}
		}
	}

	locked("UpsertAgent", func() error { return a.UpsertAgent(online("a", 1)) })
	wait("OnCapacity after UpsertAgent", capacity)
	locked("Assign", func() error { _, err := a.Assign(Request{ConversationID: "c1"}); return err })
	locked("Release", func() error { return a.Release("c1") })
	wait("OnCapacity after Release", capacity)
	locked("SetCapacity", func() error { return a.SetCapacity("a", 2) })
	wait("OnCapacity after SetCapacity", capacity)

	// An offer canceled by the agent going offline, and an offline report.
	locked("Assign", func() error { _, err := a.Assign(Request{ConversationID: "c2"}); return err })
	locked("Offer", func() error { _, err := a.Offer(Request{ConversationID: "c3"}); return err })
	locked("SetPresence offline", func() error { return a.SetPresence("a", Offline) })
	wait("OnOfferExpired after SetPresence", expired)
	wait("OnAgentOffline after SetPresence", offline)

	// An offer that times out while the host holds its lock.
	locked("SetPresence online", func() error { return a.SetPresence("a", Online) })
	wait("OnCapacity after SetPresence", capacity)
	within(t, "expiry under the host's lock", func() {
		host.Lock()
		_, err := a.Offer(Request{ConversationID: "c4"})
		require.NoError(t, err)
		time.Sleep(100 * time.Millisecond) // the offer expires meanwhile
		host.Unlock()
	})
	wait("OnOfferExpired after the timeout", expired)
	wait("OnCapacity after the timeout", capacity)

	// Decline, Transfer, AssignManual and RemoveAgent under the lock.
	locked("UpsertAgent b", func() error { return a.UpsertAgent(online("b", 2)) })
	wait("OnCapacity for b", capacity)
	var o Offer
	locked("Offer", func() (err error) {
		o, err = a.Offer(Request{ConversationID: "c5", Exclude: []string{"b"}})
		return err
	})
	locked("Decline", func() error { _, err := a.Decline(o.ID); return err })
	wait("OnCapacity after Decline", capacity)
	locked("AssignManual", func() error { return a.AssignManual(Request{ConversationID: "c6"}, "a", false) })
	locked("Transfer", func() error { return a.Transfer("c6", "b") })
	wait("OnCapacity after Transfer", capacity)
	locked("RemoveAgent", func() error { _, err := a.RemoveAgent("b"); return err })
}

// TestCallbacksInOrderOneAtATime checks that callbacks arrive in the order
// of the state changes, never concurrently, from many callers.
func TestCallbacksInOrderOneAtATime(t *testing.T) {
	var (
		mu      sync.Mutex
		running int
		got     []CapacityEvent
	)
	a, err := NewAssigner(AssignerConfig{OnCapacity: func(e CapacityEvent) {
		mu.Lock()
		running++
		if running != 1 {
			t.Error("callbacks overlap")
		}
		got = append(got, e)
		mu.Unlock()
		time.Sleep(10 * time.Microsecond)
		mu.Lock()
		running--
		mu.Unlock()
	}})
	require.NoError(t, err)
	defer func() { require.NoError(t, a.Close()) }()
	require.NoError(t, a.UpsertAgent(online("a", 1000)))
	const n = 200
	for i := range n {
		_, err := a.Assign(Request{ConversationID: "c" + itoa(i)})
		require.NoError(t, err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				assert.NoError(t, a.Release("c"+itoa(i)))
			}
		})
	}
	wg.Wait()
	require.NoError(t, a.Shutdown(context.Background()), "Shutdown delivers what is queued")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, n+1)
	// Each release freed one more slot: Free grows by one per event, in order.
	for i, e := range got[1:] {
		assert.Equal(t, 1000-n+i+1, e.Free, "event %d out of order", i)
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

// TestAssignerShutdown covers the lifecycle convention: Ready, Shutdown
// delivering the queued callbacks, a bounded Shutdown dropping the rest
// once its context ends but waiting for the running callback, Close, and
// no callback after either returns.
func TestAssignerShutdown(t *testing.T) {
	t.Run("delivers queued callbacks", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var got []AgentOffline
			a, err := NewAssigner(AssignerConfig{OnAgentOffline: func(e AgentOffline) {
				time.Sleep(time.Second) // a slow host
				got = append(got, e)
			}})
			require.NoError(t, err)
			require.NoError(t, a.Ready())
			for _, id := range []string{"a", "b", "c"} {
				require.NoError(t, a.UpsertAgent(online(id, 1)))
				require.NoError(t, a.AssignManual(Request{ConversationID: "conv-" + id, Value: id}, id, false))
				require.NoError(t, a.SetPresence(id, Offline))
			}
			require.NoError(t, a.Shutdown(context.Background()))
			require.Len(t, got, 3, "every conversation handed back before Shutdown is reported")
			for i, id := range []string{"a", "b", "c"} {
				assert.Equal(t, id, got[i].Conversations[0].Value)
			}
			assert.ErrorIs(t, a.Ready(), ErrAssignerClosed)
			assert.ErrorIs(t, a.UpsertAgent(online("d", 1)), ErrAssignerClosed)
			require.NoError(t, a.Shutdown(context.Background()), "idempotent")
			require.NoError(t, a.Close())
		})
	})
	t.Run("bounded by its context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			release := make(chan struct{})
			var got []string
			a, err := NewAssigner(AssignerConfig{OnCapacity: func(e CapacityEvent) {
				got = append(got, e.AgentID)
				<-release
			}})
			require.NoError(t, err)
			for _, id := range []string{"a", "b", "c"} {
				require.NoError(t, a.UpsertAgent(online(id, 1)))
			}
			synctest.Wait() // "a" is being delivered, "b" and "c" wait
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- a.Shutdown(ctx) }()
			time.Sleep(2 * time.Second)
			synctest.Wait()
			select {
			case err := <-errc:
				t.Fatalf("Shutdown returned (%v) while a callback runs", err)
			default:
			}
			close(release)
			require.ErrorIs(t, <-errc, context.DeadlineExceeded)
			assert.Equal(t, []string{"a"}, got, "callbacks not started when the context ended are dropped")
			assert.ErrorIs(t, a.Ready(), ErrAssignerClosed)
		})
	})
	t.Run("close drops what is queued", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			release := make(chan struct{})
			var got []string
			a, err := NewAssigner(AssignerConfig{OnCapacity: func(e CapacityEvent) {
				got = append(got, e.AgentID)
				<-release
			}})
			require.NoError(t, err)
			for _, id := range []string{"a", "b", "c"} {
				require.NoError(t, a.UpsertAgent(online(id, 1)))
			}
			synctest.Wait()
			closed := make(chan struct{})
			go func() {
				assert.NoError(t, a.Close())
				close(closed)
			}()
			synctest.Wait()
			select {
			case <-closed:
				t.Fatal("Close returned while a callback runs")
			default:
			}
			close(release)
			<-closed
			time.Sleep(time.Hour)
			synctest.Wait()
			assert.Equal(t, []string{"a"}, got)
		})
	})
}

// TestHandBackKeepsRequestAndValue checks that the host's Value and the
// original request travel with a conversation through offer, accept,
// transfer, expiry, decline and agent loss.
func TestHandBackKeepsRequestAndValue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		type item struct {
			seq  int
			tier int
		}
		f := newAssignFixture(t, AssignerConfig{OfferTimeout: time.Minute}, online("a", 5, "billing"), online("b", 5, "billing"))
		since := f.clock.Now().Add(-3 * time.Minute)
		req := Request{ConversationID: "c1", CustomerID: "u1", RequiredSkills: []string{"billing"}, WaitingSince: since, Value: item{7, 2}}

		o, err := f.Offer(req)
		require.NoError(t, err)
		ci, ok := f.Conversation("c1")
		require.True(t, ok)
		assert.Equal(t, item{7, 2}, ci.Value)
		assert.Equal(t, o.ID, ci.OfferID)
		require.NoError(t, f.Accept(o.ID))
		other := "b"
		if o.AgentID == "b" {
			other = "a"
		}
		require.NoError(t, f.Transfer("c1", other))
		require.NoError(t, f.SetPresence(other, Offline))
		offs := f.rec.takeOffline()
		require.Len(t, offs, 1)
		require.Len(t, offs[0].Conversations, 1)
		back := offs[0].Conversations[0]
		assert.Equal(t, "c1", back.ConversationID)
		assert.Equal(t, other, back.AgentID)
		assert.Equal(t, "u1", back.CustomerID)
		assert.Equal(t, since, back.WaitingSince, "the wait clock is the request's")
		assert.Equal(t, item{7, 2}, back.Value)
		assert.Equal(t, req.RequiredSkills, back.Request.RequiredSkills)
		assert.Equal(t, req.Value, back.Request.Value)

		// Expiry and decline hand the value back in the retry request.
		require.NoError(t, f.SetPresence(other, Online))
		o, err = f.Offer(back.Request)
		require.NoError(t, err)
		f.clock.Advance(time.Minute)
		exp := f.rec.takeExpired()
		require.Len(t, exp, 1)
		assert.Equal(t, item{7, 2}, exp[0].Retry.Value)
		assert.Equal(t, since, exp[0].Retry.WaitingSince)
		o, err = f.Offer(exp[0].Retry)
		require.NoError(t, err)
		retry, err := f.Decline(o.ID)
		require.NoError(t, err)
		assert.Equal(t, item{7, 2}, retry.Value)

		// RemoveAgent hands back the same.
		require.NoError(t, f.AssignManual(retry, "a", true))
		convs, err := f.RemoveAgent("a")
		require.NoError(t, err)
		require.Len(t, convs, 1)
		assert.Equal(t, item{7, 2}, convs[0].Value)
		assert.Equal(t, since, convs[0].WaitingSince)
	})
}

// TestRingOnChangeDoesNotReenterHost: a host holding its own mutex around
// SetMembers, taking it again in OnChange, does not deadlock; Shutdown
// delivers the changes made before it and Ready reports the end.
func TestRingOnChangeDoesNotReenterHost(t *testing.T) {
	var host sync.Mutex
	var versions []uint64
	r, err := NewRing(RingConfig{VirtualNodes: 8, OnChange: func(ch RingChange) {
		host.Lock()
		defer host.Unlock()
		versions = append(versions, ch.Version)
	}})
	require.NoError(t, err)
	require.NoError(t, r.Ready())
	for i := range 5 {
		within(t, "SetMembers under the host's lock", func() {
			host.Lock()
			defer host.Unlock()
			require.NoError(t, r.Add(Node{ID: "n" + itoa(i)}))
		})
	}
	require.NoError(t, r.Shutdown(context.Background()))
	assert.Equal(t, []uint64{1, 2, 3, 4, 5}, versions)
	assert.ErrorIs(t, r.Ready(), ErrRingClosed)
	assert.ErrorIs(t, r.Add(Node{ID: "late"}), ErrRingClosed)
	require.NoError(t, r.Close(), "idempotent")
}
