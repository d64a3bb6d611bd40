package fanout

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/observe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newBus(t *testing.T, cfg Config) *Bus {
	t.Helper()
	b, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// recorder is a callback subscriber that keeps what it got.
type recorder struct {
	mu   sync.Mutex
	pubs []Publication
	evs  []PresenceEvent
}

func (r *recorder) onPub(p Publication) {
	r.mu.Lock()
	r.pubs = append(r.pubs, p)
	r.mu.Unlock()
}

func (r *recorder) onPresence(ev PresenceEvent) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

func (r *recorder) offsets() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, len(r.pubs))
	for i, p := range r.pubs {
		out[i] = p.Offset
	}
	return out
}

func (r *recorder) events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.evs))
	for i, e := range r.evs {
		out[i] = e.Kind.String() + ":" + e.Member.ID
	}
	return out
}

func seq(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestNewValidatesConfig(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string
	}{
		{"shards", Config{Shards: -1}, "Shards"},
		{"buffer", Config{DefaultBuffer: -1}, "DefaultBuffer"},
		{"policy", Config{DefaultPolicy: 9}, "DefaultPolicy"},
		{"history size", Config{History: HistoryOptions{Size: -1}}, "History.Size"},
		{"history ttl", Config{History: HistoryOptions{TTL: -1}}, "History.TTL"},
		{"sweep", Config{SweepInterval: -1}, "SweepInterval"},
		{"broker timeout", Config{BrokerTimeout: -1}, "BrokerTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.field)
		})
	}
}

func TestPublishDeliversInOrderToChannelAndCallback(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b := newBus(t, Config{})
		var rec recorder
		ch, err := b.Subscribe(ctx, "conv:1", SubscribeOptions{})
		require.NoError(t, err)
		_, err = b.Subscribe(ctx, "conv:1", SubscribeOptions{OnPublication: rec.onPub})
		require.NoError(t, err)
		other, err := b.Subscribe(ctx, "conv:2", SubscribeOptions{})
		require.NoError(t, err)

		payload := []byte("hello")
		for i := 1; i <= 50; i++ {
			p, err := b.Publish(ctx, "conv:1", payload)
			require.NoError(t, err)
			require.Equal(t, uint64(i), p.Offset)
			require.NotEmpty(t, p.Epoch)
		}
		synctest.Wait() // the delivery goroutine is idle: everything is delivered
		assert.Equal(t, seq(1, 50), rec.offsets())
		for i := 1; i <= 50; i++ {
			p := <-ch.C()
			assert.Equal(t, uint64(i), p.Offset)
			assert.Equal(t, "conv:1", p.Topic)
			assert.Same(t, &payload[0], &p.Payload[0], "payload is shared, not copied")
		}
		assert.Empty(t, other.C(), "other topics get nothing")
		assert.Nil(t, ch.Err())
	})
}

// One subscriber that never reads must not delay the publisher or anyone
// else, whatever its policy.
func TestStuckSubscriberDoesNotBlockOthers(t *testing.T) {
	const n = 10_000
	for _, policy := range []Policy{DropOldest, DropNewest, Disconnect} {
		t.Run(policy.String(), func(t *testing.T) {
			ctx := t.Context()
			var disconnects atomic.Int32
			b := newBus(t, Config{OnDisconnect: func(s *Subscription, reason error) {
				if errors.Is(reason, ErrSlowSubscriber) {
					disconnects.Add(1)
				}
			}})
			stuck, err := b.Subscribe(ctx, "room", SubscribeOptions{Buffer: 8, Policy: policy})
			require.NoError(t, err)
			recs := make([]*recorder, 3)
			for i := range recs {
				recs[i] = &recorder{}
				_, err := b.Subscribe(ctx, "room", SubscribeOptions{OnPublication: recs[i].onPub})
				require.NoError(t, err)
			}
			reader, err := b.Subscribe(ctx, "room", SubscribeOptions{Buffer: n, Policy: policy})
			require.NoError(t, err)

			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < n; i++ {
					_, err := b.Publish(ctx, "room", []byte("x"))
					assert.NoError(t, err)
				}
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("publisher blocked by a subscriber that never reads")
			}
			for i := uint64(1); i <= n; i++ {
				p := <-reader.C()
				require.Equal(t, i, p.Offset)
			}
			// The reader got the last publication, so every subscriber
			// before it in delivery order did too.
			for _, r := range recs {
				require.Eventually(t, func() bool { return len(r.offsets()) == n }, 5*time.Second, time.Millisecond)
				assert.Equal(t, seq(1, n), r.offsets())
			}
			switch policy {
			case DropNewest:
				assert.Equal(t, uint64(n-8), stuck.Dropped())
				assert.Equal(t, uint64(1), (<-stuck.C()).Offset, "oldest kept")
			case DropOldest:
				assert.Equal(t, uint64(n-8), stuck.Dropped())
				assert.Equal(t, uint64(n-7), (<-stuck.C()).Offset, "newest kept")
			case Disconnect:
				<-stuck.Done()
				assert.ErrorIs(t, stuck.Err(), ErrSlowSubscriber)
				require.Eventually(t, func() bool { return disconnects.Load() == 1 }, 5*time.Second, time.Millisecond)
				got := 0
				for range stuck.C() {
					got++
				}
				assert.Equal(t, 8, got, "buffered publications stay readable until C is closed")
			}
			assert.Nil(t, reader.Err())
		})
	}
}

func TestRecoverAfterDisconnect(t *testing.T) {
	ctx := t.Context()
	b := newBus(t, Config{History: HistoryOptions{Size: 100}})
	sub, err := b.Subscribe(ctx, "conv", SubscribeOptions{})
	require.NoError(t, err)
	for range 5 {
		_, err := b.Publish(ctx, "conv", []byte("before"))
		require.NoError(t, err)
	}
	var last Publication
	for range 5 {
		last = <-sub.C()
	}
	require.NoError(t, sub.Close())
	<-sub.Done()

	const n = 40
	for i := range n {
		_, err := b.Publish(ctx, "conv", []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}
	// Reconnect: subscribe first, then recover, skipping duplicates.
	sub2, err := b.Subscribe(ctx, "conv", SubscribeOptions{})
	require.NoError(t, err)
	_, err = b.Publish(ctx, "conv", []byte("live"))
	require.NoError(t, err)
	missed, err := b.Recover(ctx, "conv", last.Offset, last.Epoch)
	require.NoError(t, err)
	require.Len(t, missed, n+1)
	for i, p := range missed {
		assert.Equal(t, last.Offset+uint64(i)+1, p.Offset)
		if i < n {
			assert.Equal(t, strconv.Itoa(i), string(p.Payload))
		}
	}
	live := <-sub2.C()
	assert.Equal(t, missed[n].Offset, live.Offset, "live overlaps recovered; client skips it by offset")
}

func TestRecoverGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b := newBus(t, Config{History: HistoryOptions{Size: 5, TTL: time.Minute}})
		var p Publication
		for range 10 {
			var err error
			p, err = b.Publish(ctx, "t", []byte("x"))
			require.NoError(t, err)
		}
		pubs, err := b.Recover(ctx, "t", 5, p.Epoch)
		require.NoError(t, err)
		assert.Len(t, pubs, 5)

		_, err = b.Recover(ctx, "t", 4, p.Epoch)
		require.ErrorIs(t, err, ErrRecoveryGap, "offset 5 was trimmed")
		var ge *GapError
		require.ErrorAs(t, err, &ge)
		assert.Equal(t, Position{Offset: 10, Epoch: p.Epoch}, ge.Current)

		_, err = b.Recover(ctx, "t", 9, "other-epoch")
		require.ErrorIs(t, err, ErrRecoveryGap)

		pubs, err = b.Recover(ctx, "t", 10, p.Epoch)
		require.NoError(t, err)
		assert.Empty(t, pubs, "nothing missed")

		time.Sleep(time.Minute - time.Second)
		pubs, err = b.Recover(ctx, "t", 9, p.Epoch)
		require.NoError(t, err, "still within the history TTL")
		assert.Len(t, pubs, 1)
		time.Sleep(time.Second)
		_, err = b.Recover(ctx, "t", 9, p.Epoch)
		require.ErrorIs(t, err, ErrRecoveryGap, "history expired")

		_, err = b.Recover(ctx, "nope", 0, "")
		require.NoError(t, err)
		_, err = b.Recover(ctx, "nope", 3, "e")
		require.ErrorIs(t, err, ErrRecoveryGap)
	})
}

func TestSetTopicOptionsAndIdleTopicDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b := newBus(t, Config{SweepInterval: 100 * time.Millisecond})
		require.NoError(t, b.SetTopicOptions("kept", HistoryOptions{Size: 3, TTL: time.Second}))
		var first Publication
		for i := range 4 {
			p, err := b.Publish(ctx, "kept", []byte("x"))
			require.NoError(t, err)
			if i == 0 {
				first = p
			}
		}
		pubs, err := b.Recover(ctx, "kept", 1, first.Epoch)
		require.NoError(t, err)
		assert.Len(t, pubs, 3)

		_, err = b.Publish(ctx, "plain", []byte("x"))
		require.NoError(t, err)
		_, err = b.Recover(ctx, "plain", 0, "")
		require.ErrorIs(t, err, ErrRecoveryGap, "no history by default")

		time.Sleep(150 * time.Millisecond) // one sweep
		synctest.Wait()
		assert.Equal(t, 1, b.topicCount(), "topic without history is dropped, history topic kept")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Equal(t, 0, b.topicCount(), "history expired: topic dropped")
		p, err := b.Publish(ctx, "kept", []byte("x"))
		require.NoError(t, err)
		assert.Equal(t, uint64(1), p.Offset)
		assert.NotEqual(t, first.Epoch, p.Epoch, "recreated topic has a new epoch")
	})
}

func (b *Bus) topicCount() int {
	n := 0
	for i := range b.shards {
		b.shards[i].mu.RLock()
		n += len(b.shards[i].topics)
		b.shards[i].mu.RUnlock()
	}
	return n
}

func TestConcurrentPublishersKeepOrderPerSubscriber(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b := newBus(t, Config{})
		recs := make([]*recorder, 4)
		for i := range recs {
			recs[i] = &recorder{}
			_, err := b.Subscribe(ctx, "t", SubscribeOptions{OnPublication: recs[i].onPub})
			require.NoError(t, err)
		}
		const writers, each = 4, 500
		var wg sync.WaitGroup
		for range writers {
			wg.Go(func() {
				for range each {
					_, err := b.Publish(ctx, "t", nil)
					assert.NoError(t, err)
				}
			})
		}
		wg.Wait()
		synctest.Wait()
		for _, r := range recs {
			assert.Equal(t, seq(1, writers*each), r.offsets())
		}
	})
}

func TestCallbackMayReenterBus(t *testing.T) {
	ctx := t.Context()
	b := newBus(t, Config{})
	var rec recorder
	var self *Subscription
	var err error
	self, err = b.Subscribe(ctx, "t", SubscribeOptions{OnPublication: func(p Publication) {
		rec.onPub(p)
		if p.Offset == 1 {
			_, err := b.Publish(ctx, "t", []byte("echo")) // same topic: enqueued, not deadlocked
			assert.NoError(t, err)
		}
		if p.Offset == 2 {
			assert.NoError(t, self.Close())
		}
	}})
	require.NoError(t, err)
	_, err = b.Publish(ctx, "t", []byte("first"))
	require.NoError(t, err)
	_, err = b.Publish(ctx, "t", []byte("second"))
	require.NoError(t, err)
	<-self.Done()
	assert.Equal(t, []uint64{1, 2}, rec.offsets(), "nothing delivered after Close")
	assert.ErrorIs(t, self.Err(), ErrUnsubscribed)
	require.NoError(t, self.Close(), "closing twice is a no-op")
}

// The host holds its own mutex around every Bus call and takes it again in
// every callback: since no callback runs on a goroutine that is inside a Bus
// method, this must not deadlock.
func TestCallbacksNeverRunInsideBusMethods(t *testing.T) {
	ctx := t.Context()
	var (
		mu                   sync.Mutex
		pubs, evs, disconned int
	)
	locked := func(f func()) { mu.Lock(); defer mu.Unlock(); f() }
	b := newBus(t, Config{OnDisconnect: func(*Subscription, error) { locked(func() { disconned++ }) }})
	done := make(chan struct{})
	go func() {
		defer close(done)
		locked(func() {
			_, err := b.Subscribe(ctx, "t", SubscribeOptions{
				OnPublication: func(Publication) { locked(func() { pubs++ }) },
				OnPresence:    func(PresenceEvent) { locked(func() { evs++ }) },
			})
			assert.NoError(t, err)
			// Overflows at the second publication: Disconnect policy.
			_, err = b.Subscribe(ctx, "t", SubscribeOptions{Buffer: 1, Policy: Disconnect})
			assert.NoError(t, err)
			other, err := b.Subscribe(ctx, "u", SubscribeOptions{OnPublication: func(Publication) { locked(func() {}) }})
			assert.NoError(t, err)
			for range 3 {
				_, err = b.Publish(ctx, "t", []byte("x"))
				assert.NoError(t, err)
			}
			assert.NoError(t, b.Join(ctx, "t", Member{ID: "m"}, time.Minute))
			assert.NoError(t, b.Leave(ctx, "t", "m"))
			assert.NoError(t, b.Unsubscribe(other))
		})
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a callback ran inside a Bus method: deadlock on the host's mutex")
	}
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return pubs == 3 && evs == 2 && disconned == 1
	}, 5*time.Second, time.Millisecond)
}

func TestPresenceJoinLeaveAndTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b := newBus(t, Config{}) // sweeps every second
		var rec recorder
		_, err := b.Subscribe(ctx, "conv", SubscribeOptions{OnPublication: rec.onPub, OnPresence: rec.onPresence})
		require.NoError(t, err)

		require.NoError(t, b.Join(ctx, "conv", Member{ID: "agent-1", Info: []byte(`{"role":"agent"}`)}, 10*time.Second))
		require.NoError(t, b.Join(ctx, "conv", Member{ID: "sup-1"}, 10*time.Second))
		require.NoError(t, b.Join(ctx, "conv", Member{ID: "agent-1", Info: []byte(`{"role":"agent"}`)}, 10*time.Second), "rejoin refreshes silently")
		ms, err := b.Members(ctx, "conv")
		require.NoError(t, err)
		assert.Equal(t, []string{"agent-1", "sup-1"}, ids(ms))

		time.Sleep(8 * time.Second)
		synctest.Wait()
		assert.Equal(t, []string{"join:agent-1", "join:sup-1"}, rec.events(), "nobody expired yet")
		require.NoError(t, b.Refresh(ctx, "conv", "agent-1", 10*time.Second))
		time.Sleep(3 * time.Second) // sup-1 expired at 10s and was swept; agent-1 refreshed
		synctest.Wait()
		assert.Equal(t, []string{"join:agent-1", "join:sup-1", "leave:sup-1"}, rec.events(), "the sweeper expired sup-1")
		ms, err = b.Members(ctx, "conv")
		require.NoError(t, err)
		assert.Equal(t, []string{"agent-1"}, ids(ms))

		require.NoError(t, b.Leave(ctx, "conv", "agent-1"))
		require.ErrorIs(t, b.Leave(ctx, "conv", "agent-1"), ErrNotMember)
		require.ErrorIs(t, b.Refresh(ctx, "conv", "sup-1", time.Second), ErrNotMember)
		require.Error(t, b.Join(ctx, "conv", Member{}, time.Second))
		require.Error(t, b.Join(ctx, "conv", Member{ID: "x"}, 0))

		synctest.Wait()
		assert.Equal(t, []string{"join:agent-1", "join:sup-1", "leave:sup-1", "leave:agent-1"}, rec.events())
		rec.mu.Lock()
		defer rec.mu.Unlock()
		assert.Equal(t, `{"role":"agent"}`, string(rec.evs[3].Member.Info))
	})
}

// Members expires members itself, between sweeps.
func TestMembersExpiresWithoutSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b := newBus(t, Config{SweepInterval: time.Hour})
		require.NoError(t, b.Join(ctx, "conv", Member{ID: "a"}, time.Second))
		time.Sleep(999 * time.Millisecond)
		ms, err := b.Members(ctx, "conv")
		require.NoError(t, err)
		assert.Equal(t, []string{"a"}, ids(ms))
		time.Sleep(time.Millisecond)
		ms, err = b.Members(ctx, "conv")
		require.NoError(t, err)
		assert.Empty(t, ms)
	})
}

func ids(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestShutdownClosesSubscriptions(t *testing.T) {
	ctx := t.Context()
	var notified atomic.Int32
	b, err := New(Config{OnDisconnect: func(*Subscription, error) { notified.Add(1) }})
	require.NoError(t, err)
	var rec recorder
	subs := make([]*Subscription, 5)
	for i := range subs {
		subs[i], err = b.Subscribe(ctx, "t"+strconv.Itoa(i%2), SubscribeOptions{Value: i})
		require.NoError(t, err)
	}
	_, err = b.Subscribe(ctx, "t0", SubscribeOptions{OnPublication: rec.onPub})
	require.NoError(t, err)
	for range 10 {
		_, err = b.Publish(ctx, "t0", nil)
		require.NoError(t, err)
	}
	require.NoError(t, b.Ready())
	require.NoError(t, b.Shutdown(ctx))
	assert.Equal(t, seq(1, 10), rec.offsets(), "graceful: what was accepted is delivered")
	for i, s := range subs {
		select {
		case <-s.Done():
		default:
			t.Fatal("Shutdown returned before closing every subscription")
		}
		assert.ErrorIs(t, s.Err(), ErrShutdown)
		assert.Equal(t, i, s.Value())
	}
	assert.Zero(t, notified.Load(), "OnDisconnect is not called for the host's own Shutdown")
	_, err = b.Publish(ctx, "t0", nil)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = b.Subscribe(ctx, "t0", SubscribeOptions{})
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, b.Join(ctx, "t0", Member{ID: "x"}, time.Second), ErrClosed)
	_, err = b.Members(ctx, "t0")
	assert.ErrorIs(t, err, ErrClosed)
	assert.ErrorIs(t, b.Ready(), ErrClosed)
	assert.NoError(t, b.Shutdown(ctx), "idempotent")
	assert.NoError(t, b.Close(), "idempotent")
}

// Close is immediate: what is queued is dropped, subscriptions are closed,
// and it returns no context error.
func TestCloseIsImmediate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b, err := New(Config{})
		require.NoError(t, err)
		release := make(chan struct{})
		var got atomic.Int32
		sub, err := b.Subscribe(ctx, "t", SubscribeOptions{OnPublication: func(Publication) {
			got.Add(1)
			<-release
		}})
		require.NoError(t, err)
		for range 5 {
			_, err = b.Publish(ctx, "t", nil)
			require.NoError(t, err)
		}
		synctest.Wait() // the first callback is running, four are queued
		closed := make(chan error)
		go func() { closed <- b.Close() }()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while a callback was running")
		default:
		}
		close(release)
		require.NoError(t, <-closed)
		assert.Equal(t, int32(1), got.Load(), "queued publications are dropped")
		assert.ErrorIs(t, sub.Err(), ErrShutdown)
	})
}

// Shutdown delivers what was accepted until ctx ends, then stops waiting and
// returns ctx's error; no callback runs after it returned.
func TestShutdownRespectsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b, err := New(Config{})
		require.NoError(t, err)
		release := make(chan struct{})
		var got atomic.Int32
		var returned atomic.Bool
		_, err = b.Subscribe(ctx, "t", SubscribeOptions{OnPublication: func(Publication) {
			assert.False(t, returned.Load(), "callback after Shutdown returned")
			if got.Add(1) == 2 {
				<-release
			}
		}})
		require.NoError(t, err)
		for range 5 {
			_, err = b.Publish(ctx, "t", nil)
			require.NoError(t, err)
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		done := make(chan error)
		go func() {
			err := b.Shutdown(sctx)
			returned.Store(true)
			done <- err
		}()
		time.Sleep(2 * time.Second) // ctx expires while the second callback runs
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Shutdown returned while a callback was running")
		default:
		}
		close(release)
		err = <-done
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, int32(2), got.Load(), "the rest was dropped once ctx ended")

		// An already-canceled context: the immediate path.
		b2, err := New(Config{})
		require.NoError(t, err)
		_, err = b2.Subscribe(ctx, "t", SubscribeOptions{})
		require.NoError(t, err)
		canceled, cancel2 := context.WithCancel(ctx)
		cancel2()
		assert.ErrorIs(t, b2.Shutdown(canceled), context.Canceled)
	})
}

// Close while a graceful Shutdown waits makes it stop waiting.
func TestCloseHurriesShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b, err := New(Config{})
		require.NoError(t, err)
		release := make(chan struct{})
		var got atomic.Int32
		_, err = b.Subscribe(ctx, "t", SubscribeOptions{OnPublication: func(Publication) {
			if got.Add(1) == 1 {
				<-release
			}
		}})
		require.NoError(t, err)
		for range 3 {
			_, err = b.Publish(ctx, "t", nil)
			require.NoError(t, err)
		}
		synctest.Wait()
		shut := make(chan error)
		go func() { shut <- b.Shutdown(ctx) }()
		closed := make(chan error)
		go func() { closed <- b.Close() }()
		synctest.Wait()
		close(release)
		require.NoError(t, <-closed)
		require.NoError(t, <-shut, "its own ctx did not end")
		assert.Equal(t, int32(1), got.Load())
	})
}

func TestCanceledContext(t *testing.T) {
	b := newBus(t, Config{History: HistoryOptions{Size: 4}})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.Publish(ctx, "t", nil)
	assert.ErrorIs(t, err, context.Canceled)
	_, err = b.Subscribe(ctx, "t", SubscribeOptions{})
	assert.ErrorIs(t, err, context.Canceled)
	_, err = b.Members(ctx, "t")
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, b.Join(ctx, "t", Member{ID: "m"}, time.Second), context.Canceled)
	assert.ErrorIs(t, b.Refresh(ctx, "t", "m", time.Second), context.Canceled)
	assert.ErrorIs(t, b.Leave(ctx, "t", "m"), context.Canceled)
	_, err = b.Recover(ctx, "t", 0, "")
	assert.ErrorIs(t, err, context.Canceled)
	_, err = b.Position(ctx, "t")
	assert.ErrorIs(t, err, context.Canceled)
	assert.Zero(t, b.topicCount(), "nothing was done")
}

func TestInvalidArguments(t *testing.T) {
	ctx := t.Context()
	b := newBus(t, Config{})
	_, err := b.Publish(ctx, "", nil)
	assert.ErrorIs(t, err, ErrInvalidTopic)
	_, err = b.Subscribe(ctx, string(make([]byte, MaxTopicLen+1)), SubscribeOptions{})
	assert.ErrorIs(t, err, ErrInvalidTopic)
	_, err = b.Subscribe(ctx, "t", SubscribeOptions{Buffer: -1})
	assert.Error(t, err)
	_, err = b.Subscribe(ctx, "t", SubscribeOptions{Policy: 42})
	assert.Error(t, err)
	assert.Error(t, b.SetTopicOptions("t", HistoryOptions{Size: -1}))
	assert.NoError(t, b.Unsubscribe(nil))
}

func TestPublishDoesNotAllocate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		b := newBus(t, Config{History: HistoryOptions{Size: 16}})
		var n atomic.Int64
		for range 100 {
			_, err := b.Subscribe(ctx, "t", SubscribeOptions{OnPublication: func(Publication) { n.Add(1) }})
			require.NoError(t, err)
		}
		for range 10 {
			_, err := b.Subscribe(ctx, "t", SubscribeOptions{Buffer: 4, Policy: DropOldest})
			require.NoError(t, err)
		}
		payload := []byte("shared")
		allocs := testing.AllocsPerRun(1000, func() {
			_, _ = b.Publish(ctx, "t", payload)
		})
		assert.Zero(t, allocs, "allocations per Publish to 110 subscribers")
		synctest.Wait()
		assert.Equal(t, int64(100*1001), n.Load())
	})
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := t.Context()
		o, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
		require.NoError(t, err)
		b := newBus(t, Config{Observer: o, History: HistoryOptions{Size: 2}})
		_, err = b.Subscribe(ctx, "t", SubscribeOptions{Buffer: 1, Policy: DropNewest})
		require.NoError(t, err)
		var p Publication
		for range 3 {
			p, err = b.Publish(ctx, "t", nil)
			require.NoError(t, err)
		}
		_, err = b.Recover(ctx, "t", 2, p.Epoch)
		require.NoError(t, err)
		_, err = b.Recover(ctx, "t", 0, p.Epoch)
		require.ErrorIs(t, err, ErrRecoveryGap)
		synctest.Wait()

		m := b.m
		assert.Equal(t, 3.0, testutil.ToFloat64(m.pubs))
		assert.Equal(t, 3.0, testutil.ToFloat64(m.deliveries), "attempted deliveries")
		assert.Equal(t, 2.0, testutil.ToFloat64(m.drops[DropNewest]))
		assert.Equal(t, 1.0, testutil.ToFloat64(m.recoverOK))
		assert.Equal(t, 1.0, testutil.ToFloat64(m.recoverGap))
		assert.Equal(t, 1.0, testutil.ToFloat64(m.subs))
		assert.Equal(t, 1.0, testutil.ToFloat64(m.topics))
		n, err := testutil.GatherAndCount(o.Gatherer(), "switchboard_fanout_publish_to_deliver_seconds")
		require.NoError(t, err)
		assert.Equal(t, 1, n)
	})
}
