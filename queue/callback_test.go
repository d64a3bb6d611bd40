package queue

import (
	"context"
	"errors"
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
// return within hostDeadline of real time.
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

// receive waits for one value from ch for at most hostDeadline.
func receive[V any](t *testing.T, what string, ch <-chan V) V {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(hostDeadline):
		t.Fatalf("no %s within %v", what, hostDeadline)
	}
	var zero V
	return zero
}

// TestCallbacksDoNotReenterHost plays a host that holds its own mutex
// around every Queue call and takes the same mutex in every callback. A
// callback run inside the call would wait forever for the caller's mutex.
func TestCallbacksDoNotReenterHost(t *testing.T) {
	var host sync.Mutex
	escalated := make(chan string, 16)
	dropped := make(chan string, 16)
	retried := make(chan string, 16)
	positions := make(chan []PositionUpdate, 16)
	var q *Queue[int]
	q, err := New(Config[int]{
		Tiers: []TierConfig{
			{MaxWait: 20 * time.Millisecond, OnDeadline: Escalate},
			{MaxWait: 20 * time.Millisecond, OnDeadline: RetryOnce},
			{MaxWait: 20 * time.Millisecond, OnDeadline: Drop},
		},
		PositionDebounce: time.Millisecond,
		OnEscalate: func(it Item[int]) {
			host.Lock()
			defer host.Unlock()
			_ = q.Len() // and may call the queue
			escalated <- it.ID
		},
		OnRetry: func(it Item[int]) {
			host.Lock()
			defer host.Unlock()
			retried <- it.ID
		},
		OnDrop: func(it Item[int]) {
			host.Lock()
			defer host.Unlock()
			dropped <- it.ID
		},
		OnPosition: func(u []PositionUpdate) {
			host.Lock()
			defer host.Unlock()
			positions <- u
		},
	})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, q.Close()) })
	locked := func(what string, op func()) {
		t.Helper()
		within(t, what, func() {
			host.Lock()
			defer host.Unlock()
			op()
		})
	}

	// TryPop applies the deadline actions under the host's lock.
	locked("Push", func() {
		require.NoError(t, q.Push("esc", 0, 1))
		require.NoError(t, q.Push("retry", 1, 2))
		require.NoError(t, q.Push("drop", 2, 3))
	})
	receive(t, "OnPosition after Push", positions)
	time.Sleep(30 * time.Millisecond)
	locked("TryPop", func() {
		for range 2 {
			_, ok := q.TryPop()
			require.True(t, ok)
		}
		_, ok := q.TryPop()
		require.False(t, ok)
	})
	got := map[string]bool{}
	got[receive(t, "OnEscalate", escalated)] = true
	got[receive(t, "OnRetry", retried)] = true
	got[receive(t, "OnDrop", dropped)] = true
	assert.Equal(t, map[string]bool{"esc": true, "retry": true, "drop": true}, got)

	// Pop and Match, Cancel and Requeue under the lock.
	locked("Push", func() { require.NoError(t, q.Push("late", 0, 4)) })
	time.Sleep(30 * time.Millisecond)
	var it Item[int]
	locked("Pop", func() {
		it, err = q.Pop(context.Background())
		require.NoError(t, err)
	})
	assert.Equal(t, "late", receive(t, "OnEscalate after Pop", escalated))
	locked("Requeue and Match", func() {
		require.NoError(t, q.Requeue(it))
		_, err := q.Match(func(Item[int]) Verdict { return Take })
		require.NoError(t, err)
	})
	locked("Push and Cancel", func() {
		require.NoError(t, q.Push("gone", 2, 5))
		require.True(t, q.Cancel("gone"))
	})
	locked("Push", func() { require.NoError(t, q.Push("m", 2, 6)) })
	time.Sleep(30 * time.Millisecond)
	locked("Match dropping", func() {
		_, err := q.Match(func(Item[int]) Verdict { return Take })
		require.ErrorIs(t, err, ErrNoMatch)
	})
	assert.Equal(t, "m", receive(t, "OnDrop after Match", dropped))
}

// TestEagerCallbacksDoNotReenterHost: with eager deadlines the timer
// queues the callbacks; a host holding its lock across the deadline and a
// Close does not deadlock either.
func TestEagerCallbacksDoNotReenterHost(t *testing.T) {
	var host sync.Mutex
	escalated := make(chan string, 4)
	q, err := New(Config[int]{
		Tiers:          []TierConfig{{MaxWait: 10 * time.Millisecond}},
		EagerDeadlines: true,
		OnEscalate: func(it Item[int]) {
			host.Lock()
			defer host.Unlock()
			escalated <- it.ID
		},
	})
	require.NoError(t, err)
	within(t, "Push across the deadline", func() {
		host.Lock()
		require.NoError(t, q.Push("a", 0, 1))
		time.Sleep(30 * time.Millisecond)
		host.Unlock()
	})
	assert.Equal(t, "a", receive(t, "OnEscalate", escalated))
	require.NoError(t, q.Close())
}

// TestPoolCallbacksDoNotReenterHost: OnError and OnPanic run on the
// worker, so a host holding its lock around Push is not waited on.
func TestPoolCallbacksDoNotReenterHost(t *testing.T) {
	var host sync.Mutex
	reports := make(chan string, 4)
	q, err := New(Config[int]{Tiers: tiers(1)})
	require.NoError(t, err)
	p, err := NewPool(q, PoolConfig[int]{
		Workers: 1,
		Run: func(_ context.Context, it Item[int]) error {
			if it.Value < 0 {
				panic("bad")
			}
			return errors.New("failed")
		},
		OnError: func(it Item[int], err error) {
			host.Lock()
			defer host.Unlock()
			reports <- "error " + it.ID
		},
		OnPanic: func(it Item[int], r any) {
			host.Lock()
			defer host.Unlock()
			reports <- "panic " + it.ID
		},
	})
	require.NoError(t, err)
	p.Start()
	within(t, "Push under the host's lock", func() {
		host.Lock()
		defer host.Unlock()
		require.NoError(t, q.Push("e", 0, 1))
		require.NoError(t, q.Push("p", 0, -1))
		time.Sleep(20 * time.Millisecond) // the worker runs both meanwhile
	})
	assert.Equal(t, "error e", receive(t, "OnError", reports))
	assert.Equal(t, "panic p", receive(t, "OnPanic", reports))
	require.NoError(t, p.Shutdown(context.Background()))
}

// TestQueueShutdown covers the lifecycle convention: Ready, Shutdown
// delivering what was queued, a bounded Shutdown waiting for the running
// callback and dropping the rest, Close, and no callback afterwards.
func TestQueueShutdown(t *testing.T) {
	t.Run("delivers queued callbacks", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var got []string
			q, err := New(Config[int]{
				Tiers: []TierConfig{{MaxWait: time.Minute, OnDeadline: Drop}},
				OnDrop: func(it Item[int]) {
					time.Sleep(time.Second) // a slow host
					got = append(got, it.ID)
				},
			})
			require.NoError(t, err)
			require.NoError(t, q.Ready())
			for _, id := range []string{"a", "b", "c"} {
				require.NoError(t, q.Push(id, 0, 0))
			}
			time.Sleep(2 * time.Minute)
			_, ok := q.TryPop()
			require.False(t, ok)
			require.NoError(t, q.Shutdown(context.Background()))
			assert.Equal(t, []string{"a", "b", "c"}, got)
			assert.ErrorIs(t, q.Ready(), ErrClosed)
			assert.ErrorIs(t, q.Push("d", 0, 0), ErrClosed)
			require.NoError(t, q.Shutdown(context.Background()), "idempotent")
		})
	})
	t.Run("bounded by its context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			release := make(chan struct{})
			var got []string
			q, err := New(Config[int]{
				Tiers: []TierConfig{{MaxWait: time.Minute, OnDeadline: Drop}},
				OnDrop: func(it Item[int]) {
					got = append(got, it.ID)
					<-release
				},
			})
			require.NoError(t, err)
			for _, id := range []string{"a", "b", "c"} {
				require.NoError(t, q.Push(id, 0, 0))
			}
			time.Sleep(2 * time.Minute)
			_, ok := q.TryPop()
			require.False(t, ok)
			synctest.Wait() // "a" is being delivered
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- q.Shutdown(ctx) }()
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
		})
	})
	t.Run("close drops, items stay poppable", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var got []string
			q, err := New(Config[int]{
				Tiers:      []TierConfig{{MaxWait: time.Minute, OnDeadline: Escalate}},
				OnEscalate: func(it Item[int]) { got = append(got, it.ID) },
			})
			require.NoError(t, err)
			require.NoError(t, q.Push("a", 0, 0))
			require.NoError(t, q.Push("b", 0, 0))
			require.NoError(t, q.Close())
			time.Sleep(2 * time.Minute)
			it, ok := q.TryPop()
			require.True(t, ok, "waiting items can still be handed out")
			assert.True(t, it.Escalated, "deadline actions still apply")
			synctest.Wait()
			assert.Empty(t, got, "no callback after Close")
			assert.Equal(t, 1, q.Len())
		})
	})
}

// TestRequeueAfterMatchKeepsPlace is the composition with an assigner: the
// host passes the Item it claimed in Match as its assignment's value (an
// any, as router.Request.Value is), and when the agent is lost puts it
// back with Requeue. The item must regain its place in its tier — ahead of
// everything pushed after it — with its enqueue time, deadline and class.
func TestRequeueAfterMatchKeepsPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, err := New(Config[string]{Tiers: []TierConfig{{MaxWait: time.Hour, Quota: 1}, {MaxWait: time.Hour, Quota: 1}}})
		require.NoError(t, err)
		defer q.Close()
		for _, id := range []string{"a", "b", "c"} {
			require.NoError(t, q.PushClass(id, 1, "billing", id))
			time.Sleep(time.Second)
		}
		require.NoError(t, q.PushClass("d", 1, "tech", "d"))
		// Match passes over a and takes b, as a claim would.
		var value any // what the host hands to the assigner
		took, err := q.Match(func(it Item[string]) Verdict {
			if it.ID == "a" {
				return Skip
			}
			value = it
			return Take
		})
		require.NoError(t, err)
		require.Equal(t, "b", took.ID)
		time.Sleep(time.Minute)
		require.NoError(t, q.PushClass("e", 1, "billing", "e"))

		// The agent is lost: the host requeues the value it got back.
		back := value.(Item[string])
		require.NoError(t, q.Requeue(back))
		pos, ok := q.Position("b")
		require.True(t, ok)
		assert.Equal(t, 1, pos.InTier, "behind a, ahead of c, d and e")
		var order []string
		for {
			it, ok := q.TryPop()
			if !ok {
				break
			}
			order = append(order, it.ID)
			if it.ID == "b" {
				assert.Equal(t, took.Enqueued, it.Enqueued, "the wait clock is kept")
				assert.Equal(t, took.Deadline, it.Deadline)
				assert.Equal(t, "billing", it.Class, "the class is kept")
			}
		}
		assert.Equal(t, []string{"a", "b", "c", "d", "e"}, order)

		// The requeued item keeps its class for matching too.
		require.NoError(t, q.PushClass("x", 1, "billing", "x"))
		require.NoError(t, q.PushClass("y", 1, "tech", "y"))
		took, err = q.Match(func(it Item[string]) Verdict { return Take })
		require.NoError(t, err)
		require.NoError(t, q.Requeue(took))
		var seen []string
		_, err = q.Match(func(it Item[string]) Verdict {
			seen = append(seen, it.ID+"/"+it.Class)
			return SkipClass
		})
		require.ErrorIs(t, err, ErrNoMatch)
		assert.Equal(t, []string{"x/billing", "y/tech"}, seen, "one candidate per class, the requeued one first")
	})
}
