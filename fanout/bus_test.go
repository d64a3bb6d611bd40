package fanout

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/observe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a manual Clock; its tickers never fire (tests call Sweep).
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) NewTicker(time.Duration) Ticker { return fakeTicker{} }

type fakeTicker struct{}

func (fakeTicker) C() <-chan time.Time { return nil }
func (fakeTicker) Stop()               {}

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
	b := newBus(t, Config{})
	var rec recorder
	ch, err := b.Subscribe("conv:1", SubscribeOptions{})
	require.NoError(t, err)
	_, err = b.Subscribe("conv:1", SubscribeOptions{OnPublication: rec.onPub})
	require.NoError(t, err)
	other, err := b.Subscribe("conv:2", SubscribeOptions{})
	require.NoError(t, err)

	payload := []byte("hello")
	for i := 1; i <= 50; i++ {
		p, err := b.Publish("conv:1", payload)
		require.NoError(t, err)
		require.Equal(t, uint64(i), p.Offset)
		require.NotEmpty(t, p.Epoch)
	}
	assert.Equal(t, seq(1, 50), rec.offsets())
	for i := 1; i <= 50; i++ {
		p := <-ch.C()
		assert.Equal(t, uint64(i), p.Offset)
		assert.Equal(t, "conv:1", p.Topic)
		assert.Same(t, &payload[0], &p.Payload[0], "payload is shared, not copied")
	}
	assert.Empty(t, other.C(), "other topics get nothing")
	assert.Nil(t, ch.Err())
}

// One subscriber that never reads must not delay the publisher or anyone
// else, whatever its policy.
func TestStuckSubscriberDoesNotBlockOthers(t *testing.T) {
	const n = 10_000
	for _, policy := range []Policy{DropOldest, DropNewest, Disconnect} {
		t.Run(policy.String(), func(t *testing.T) {
			var disconnects atomic.Int32
			b := newBus(t, Config{OnDisconnect: func(s *Subscription, reason error) {
				if errors.Is(reason, ErrSlowSubscriber) {
					disconnects.Add(1)
				}
			}})
			stuck, err := b.Subscribe("room", SubscribeOptions{Buffer: 8, Policy: policy})
			require.NoError(t, err)
			recs := make([]*recorder, 3)
			for i := range recs {
				recs[i] = &recorder{}
				_, err := b.Subscribe("room", SubscribeOptions{OnPublication: recs[i].onPub})
				require.NoError(t, err)
			}
			reader, err := b.Subscribe("room", SubscribeOptions{Buffer: n, Policy: policy})
			require.NoError(t, err)

			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < n; i++ {
					_, err := b.Publish("room", []byte("x"))
					assert.NoError(t, err)
				}
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("publisher blocked by a subscriber that never reads")
			}
			for _, r := range recs {
				assert.Equal(t, seq(1, n), r.offsets())
			}
			for i := uint64(1); i <= n; i++ {
				p := <-reader.C()
				require.Equal(t, i, p.Offset)
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
				assert.Equal(t, int32(1), disconnects.Load())
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
	b := newBus(t, Config{History: HistoryOptions{Size: 100}})
	sub, err := b.Subscribe("conv", SubscribeOptions{})
	require.NoError(t, err)
	for range 5 {
		_, err := b.Publish("conv", []byte("before"))
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
		_, err := b.Publish("conv", []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}
	// Reconnect: subscribe first, then recover, skipping duplicates.
	sub2, err := b.Subscribe("conv", SubscribeOptions{})
	require.NoError(t, err)
	_, err = b.Publish("conv", []byte("live"))
	require.NoError(t, err)
	missed, err := b.Recover("conv", last.Offset, last.Epoch)
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
	clock := newFakeClock()
	b := newBus(t, Config{Clock: clock, History: HistoryOptions{Size: 5, TTL: time.Minute}})
	var p Publication
	for range 10 {
		var err error
		p, err = b.Publish("t", []byte("x"))
		require.NoError(t, err)
	}
	pubs, err := b.Recover("t", 5, p.Epoch)
	require.NoError(t, err)
	assert.Len(t, pubs, 5)

	_, err = b.Recover("t", 4, p.Epoch)
	require.ErrorIs(t, err, ErrRecoveryGap, "offset 5 was trimmed")
	var ge *GapError
	require.ErrorAs(t, err, &ge)
	assert.Equal(t, Position{Offset: 10, Epoch: p.Epoch}, ge.Current)

	_, err = b.Recover("t", 9, "other-epoch")
	require.ErrorIs(t, err, ErrRecoveryGap)

	pubs, err = b.Recover("t", 10, p.Epoch)
	require.NoError(t, err)
	assert.Empty(t, pubs, "nothing missed")

	clock.Advance(time.Minute)
	_, err = b.Recover("t", 9, p.Epoch)
	require.ErrorIs(t, err, ErrRecoveryGap, "history expired")

	_, err = b.Recover("nope", 0, "")
	require.NoError(t, err)
	_, err = b.Recover("nope", 3, "e")
	require.ErrorIs(t, err, ErrRecoveryGap)
}

func TestSetTopicOptionsAndIdleTopicDropped(t *testing.T) {
	clock := newFakeClock()
	b := newBus(t, Config{Clock: clock})
	require.NoError(t, b.SetTopicOptions("kept", HistoryOptions{Size: 3, TTL: time.Second}))
	var first Publication
	for i := range 4 {
		p, err := b.Publish("kept", []byte("x"))
		require.NoError(t, err)
		if i == 0 {
			first = p
		}
	}
	pubs, err := b.Recover("kept", 1, first.Epoch)
	require.NoError(t, err)
	assert.Len(t, pubs, 3)

	_, err = b.Publish("plain", []byte("x"))
	require.NoError(t, err)
	_, err = b.Recover("plain", 0, "")
	require.ErrorIs(t, err, ErrRecoveryGap, "no history by default")

	b.Sweep()
	assert.Equal(t, 1, b.topicCount(), "topic without history is dropped, history topic kept")
	clock.Advance(2 * time.Second)
	b.Sweep()
	assert.Equal(t, 0, b.topicCount())
	p, err := b.Publish("kept", []byte("x"))
	require.NoError(t, err)
	assert.Equal(t, uint64(1), p.Offset)
	assert.NotEqual(t, first.Epoch, p.Epoch, "recreated topic has a new epoch")
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
	b := newBus(t, Config{})
	recs := make([]*recorder, 4)
	for i := range recs {
		recs[i] = &recorder{}
		_, err := b.Subscribe("t", SubscribeOptions{OnPublication: recs[i].onPub})
		require.NoError(t, err)
	}
	const writers, each = 4, 500
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				_, err := b.Publish("t", nil)
				assert.NoError(t, err)
			}
		}()
	}
	wg.Wait()
	for _, r := range recs {
		assert.Equal(t, seq(1, writers*each), r.offsets())
	}
}

func TestCallbackMayReenterBus(t *testing.T) {
	b := newBus(t, Config{})
	var rec recorder
	var self *Subscription
	var err error
	self, err = b.Subscribe("t", SubscribeOptions{OnPublication: func(p Publication) {
		rec.onPub(p)
		if p.Offset == 1 {
			_, err := b.Publish("t", []byte("echo")) // same topic: enqueued, not deadlocked
			assert.NoError(t, err)
		}
		if p.Offset == 2 {
			assert.NoError(t, self.Close())
		}
	}})
	require.NoError(t, err)
	_, err = b.Publish("t", []byte("first"))
	require.NoError(t, err)
	_, err = b.Publish("t", []byte("after close"))
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2}, rec.offsets())
	<-self.Done()
	assert.ErrorIs(t, self.Err(), ErrUnsubscribed)
	require.NoError(t, self.Close(), "closing twice is a no-op")
}

func TestPresenceJoinLeaveAndTTL(t *testing.T) {
	clock := newFakeClock()
	b := newBus(t, Config{Clock: clock})
	var rec recorder
	_, err := b.Subscribe("conv", SubscribeOptions{OnPublication: rec.onPub, OnPresence: rec.onPresence})
	require.NoError(t, err)

	require.NoError(t, b.Join("conv", Member{ID: "agent-1", Info: []byte(`{"role":"agent"}`)}, 10*time.Second))
	require.NoError(t, b.Join("conv", Member{ID: "sup-1"}, 10*time.Second))
	require.NoError(t, b.Join("conv", Member{ID: "agent-1", Info: []byte(`{"role":"agent"}`)}, 10*time.Second), "rejoin refreshes silently")
	ms, err := b.Members("conv")
	require.NoError(t, err)
	assert.Equal(t, []string{"agent-1", "sup-1"}, ids(ms))

	clock.Advance(8 * time.Second)
	require.NoError(t, b.Refresh("conv", "agent-1", 10*time.Second))
	clock.Advance(3 * time.Second) // sup-1 expired, agent-1 refreshed
	b.Sweep()
	ms, err = b.Members("conv")
	require.NoError(t, err)
	assert.Equal(t, []string{"agent-1"}, ids(ms))

	require.NoError(t, b.Leave("conv", "agent-1"))
	require.ErrorIs(t, b.Leave("conv", "agent-1"), ErrNotMember)
	require.ErrorIs(t, b.Refresh("conv", "sup-1", time.Second), ErrNotMember)
	require.Error(t, b.Join("conv", Member{}, time.Second))
	require.Error(t, b.Join("conv", Member{ID: "x"}, 0))

	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.evs, 4)
	want := []struct {
		k  PresenceKind
		id string
	}{{Join, "agent-1"}, {Join, "sup-1"}, {Leave, "sup-1"}, {Leave, "agent-1"}}
	for i, w := range want {
		assert.Equal(t, w.k, rec.evs[i].Kind, i)
		assert.Equal(t, w.id, rec.evs[i].Member.ID, i)
	}
	assert.Equal(t, `{"role":"agent"}`, string(rec.evs[3].Member.Info))
}

func ids(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func TestShutdownClosesSubscriptions(t *testing.T) {
	var reasons sync.Map
	b, err := New(Config{OnDisconnect: func(s *Subscription, reason error) { reasons.Store(s, reason) }})
	require.NoError(t, err)
	subs := make([]*Subscription, 5)
	for i := range subs {
		subs[i], err = b.Subscribe("t"+strconv.Itoa(i%2), SubscribeOptions{Value: i})
		require.NoError(t, err)
	}
	require.NoError(t, b.Shutdown(context.Background()))
	for i, s := range subs {
		<-s.Done()
		assert.ErrorIs(t, s.Err(), ErrShutdown)
		assert.Equal(t, i, s.Value())
		r, ok := reasons.Load(s)
		assert.True(t, ok)
		assert.ErrorIs(t, r.(error), ErrShutdown)
	}
	_, err = b.Publish("t0", nil)
	assert.ErrorIs(t, err, ErrClosed)
	_, err = b.Subscribe("t0", SubscribeOptions{})
	assert.ErrorIs(t, err, ErrClosed)
	assert.NoError(t, b.Close())
}

func TestInvalidArguments(t *testing.T) {
	b := newBus(t, Config{})
	_, err := b.Publish("", nil)
	assert.ErrorIs(t, err, ErrInvalidTopic)
	_, err = b.Subscribe(string(make([]byte, MaxTopicLen+1)), SubscribeOptions{})
	assert.ErrorIs(t, err, ErrInvalidTopic)
	_, err = b.Subscribe("t", SubscribeOptions{Buffer: -1})
	assert.Error(t, err)
	_, err = b.Subscribe("t", SubscribeOptions{Policy: 42})
	assert.Error(t, err)
	assert.Error(t, b.SetTopicOptions("t", HistoryOptions{Size: -1}))
	assert.NoError(t, b.Unsubscribe(nil))
}

func TestPublishDoesNotAllocate(t *testing.T) {
	b := newBus(t, Config{History: HistoryOptions{Size: 16}})
	var n atomic.Int64
	for range 100 {
		_, err := b.Subscribe("t", SubscribeOptions{OnPublication: func(Publication) { n.Add(1) }})
		require.NoError(t, err)
	}
	for range 10 {
		_, err := b.Subscribe("t", SubscribeOptions{Buffer: 4, Policy: DropOldest})
		require.NoError(t, err)
	}
	payload := []byte("shared")
	allocs := testing.AllocsPerRun(1000, func() {
		_, _ = b.Publish("t", payload)
	})
	assert.Zero(t, allocs, "allocations per Publish to 110 subscribers")
	assert.Equal(t, int64(100*1001), n.Load())
}

func TestMetrics(t *testing.T) {
	o, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	b := newBus(t, Config{Observer: o, History: HistoryOptions{Size: 2}})
	_, err = b.Subscribe("t", SubscribeOptions{Buffer: 1, Policy: DropNewest})
	require.NoError(t, err)
	var p Publication
	for range 3 {
		p, err = b.Publish("t", nil)
		require.NoError(t, err)
	}
	_, err = b.Recover("t", 2, p.Epoch)
	require.NoError(t, err)
	_, err = b.Recover("t", 0, p.Epoch)
	require.ErrorIs(t, err, ErrRecoveryGap)

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
}

func TestShutdownRespectsContext(t *testing.T) {
	b, err := New(Config{})
	require.NoError(t, err)
	_, err = b.Subscribe("t", SubscribeOptions{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = b.Shutdown(ctx)
	assert.True(t, errors.Is(err, context.Canceled))
}
