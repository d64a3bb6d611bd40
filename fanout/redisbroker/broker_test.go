package redisbroker_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/fanout/redisbroker"
	"github.com/switchboard-go/switchboard/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// node is one fanout.Bus on its own redisbroker.Broker: one "machine".
func node(t *testing.T, addr string, hist fanout.HistoryOptions) *fanout.Bus {
	t.Helper()
	br, err := redisbroker.New(redisbroker.Config{
		Options: &redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond},
		Prefix:  "test", Shards: 4,
	})
	require.NoError(t, err)
	b, err := fanout.New(fanout.Config{Broker: br, History: hist, BrokerTimeout: 2 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// collector is a callback subscriber.
type collector struct {
	mu   sync.Mutex
	pubs []fanout.Publication
	evs  []fanout.PresenceEvent
}

func (c *collector) opts() fanout.SubscribeOptions {
	return fanout.SubscribeOptions{
		OnPublication: func(p fanout.Publication) { c.mu.Lock(); c.pubs = append(c.pubs, p); c.mu.Unlock() },
		OnPresence:    func(e fanout.PresenceEvent) { c.mu.Lock(); c.evs = append(c.evs, e); c.mu.Unlock() },
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pubs)
}

func (c *collector) snapshot() []fanout.Publication {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]fanout.Publication(nil), c.pubs...)
}

func TestPublishOnOneNodeReachesTheOther(t *testing.T) {
	ctx := t.Context()
	addr, _ := redistest.Start(t)
	a := node(t, addr, fanout.HistoryOptions{Size: 100})
	b := node(t, addr, fanout.HistoryOptions{Size: 100})
	var onA, onB collector
	_, err := a.Subscribe(ctx, "conv:1", onA.opts())
	require.NoError(t, err)
	subB, err := b.Subscribe(ctx, "conv:1", fanout.SubscribeOptions{})
	require.NoError(t, err)
	_, err = b.Subscribe(ctx, "conv:1", onB.opts())
	require.NoError(t, err)

	var sent []fanout.Publication
	for i := range 20 {
		p, err := a.Publish(ctx, "conv:1", []byte("m"+strconv.Itoa(i)))
		require.NoError(t, err)
		sent = append(sent, p)
	}
	assert.Equal(t, uint64(1), sent[0].Offset)
	require.Eventually(t, func() bool { return onA.count() == 20 && onB.count() == 20 }, 5*time.Second, 5*time.Millisecond)
	for i, p := range onB.snapshot() {
		assert.Equal(t, sent[i].Offset, p.Offset)
		assert.Equal(t, sent[i].Epoch, p.Epoch, "same epoch on every node")
		assert.Equal(t, "m"+strconv.Itoa(i), string(p.Payload))
		assert.Equal(t, "conv:1", p.Topic)
	}
	assert.Equal(t, onA.snapshot()[19].Offset, onB.snapshot()[19].Offset)
	first := <-subB.C()
	assert.Equal(t, uint64(1), first.Offset)

	// Publishing on B is seen on A with the next offset.
	p, err := b.Publish(ctx, "conv:1", []byte("from b"))
	require.NoError(t, err)
	assert.Equal(t, uint64(21), p.Offset)
	require.Eventually(t, func() bool { return onA.count() == 21 }, 5*time.Second, 5*time.Millisecond)
}

func TestRecoveryAcrossNodesAfterPublisherDies(t *testing.T) {
	ctx := t.Context()
	addr, _ := redistest.Start(t)
	a := node(t, addr, fanout.HistoryOptions{Size: 1000, TTL: time.Minute})
	b := node(t, addr, fanout.HistoryOptions{Size: 1000, TTL: time.Minute})

	p0, err := a.Publish(ctx, "conv", []byte("seen"))
	require.NoError(t, err)
	const n = 50
	for i := range n {
		_, err := a.Publish(ctx, "conv", []byte(strconv.Itoa(i)))
		require.NoError(t, err)
	}
	require.NoError(t, a.Close()) // the publishing node is gone

	pubs, err := b.Recover(ctx, "conv", p0.Offset, p0.Epoch)
	require.NoError(t, err)
	require.Len(t, pubs, n)
	for i, p := range pubs {
		assert.Equal(t, p0.Offset+uint64(i)+1, p.Offset)
		assert.Equal(t, strconv.Itoa(i), string(p.Payload))
		assert.Equal(t, p0.Epoch, p.Epoch)
	}
	pubs, err = b.Recover(ctx, "conv", p0.Offset+n, p0.Epoch)
	require.NoError(t, err)
	assert.Empty(t, pubs)
	_, err = b.Recover(ctx, "conv", p0.Offset, "stale")
	assert.ErrorIs(t, err, fanout.ErrRecoveryGap)
	pos, err := b.Position(ctx, "conv")
	require.NoError(t, err)
	assert.Equal(t, fanout.Position{Offset: n + 1, Epoch: p0.Epoch}, pos)
}

func TestRecoveryGapWhenStreamTrimmed(t *testing.T) {
	ctx := t.Context()
	addr, _ := redistest.Start(t)
	a := node(t, addr, fanout.HistoryOptions{Size: 10})
	var last fanout.Publication
	for range 1000 {
		var err error
		last, err = a.Publish(ctx, "t", []byte("x"))
		require.NoError(t, err)
	}
	_, err := a.Recover(ctx, "t", 1, last.Epoch)
	require.ErrorIs(t, err, fanout.ErrRecoveryGap)
	pubs, err := a.Recover(ctx, "t", last.Offset-5, last.Epoch)
	require.NoError(t, err)
	assert.Len(t, pubs, 5)
}

// A publication whose pub/sub message never arrived is filled from the
// stream when the next one shows the hole.
func TestLostPubSubMessageFilledFromHistory(t *testing.T) {
	ctx := t.Context()
	addr, _ := redistest.Start(t)
	a := node(t, addr, fanout.HistoryOptions{Size: 100})
	var c collector
	_, err := a.Subscribe(ctx, "t", c.opts())
	require.NoError(t, err)
	p1, err := a.Publish(ctx, "t", []byte("1"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.count() == 1 }, 5*time.Second, 5*time.Millisecond)

	// Append offset 2 to the history the way the script does, but without
	// the PUBLISH: as if the message were lost in transit.
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()
	require.NoError(t, rc.HIncrBy(ctx, "test:m:{t}", "o", 1).Err())
	require.NoError(t, rc.XAdd(ctx, &redis.XAddArgs{Stream: "test:h:{t}", ID: "2-0",
		Values: []any{"d", "2", "t", strconv.FormatInt(time.Now().UnixNano(), 10)}}).Err())

	_, err = a.Publish(ctx, "t", []byte("3"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.count() == 3 }, 5*time.Second, 5*time.Millisecond)
	got := c.snapshot()
	for i, p := range got {
		assert.Equal(t, uint64(i+1), p.Offset)
		assert.Equal(t, strconv.Itoa(i+1), string(p.Payload))
		assert.Equal(t, p1.Epoch, p.Epoch)
	}
}

// Redis is killed and restarted while a publisher runs: every publication
// acknowledged before the crash is either delivered to the subscriber on the
// other node, or that subscriber is closed with ErrInsufficientState and a
// recovery reports the gap. Nothing is lost silently, and publishing works
// again in a new epoch.
func TestRedisKilledAndRestartedMidStream(t *testing.T) {
	ctx := t.Context()
	srv := redistest.StartServer(t)
	hist := fanout.HistoryOptions{Size: 10_000}
	a := node(t, srv.Addr(), hist)
	b := node(t, srv.Addr(), hist)
	var c collector
	sub, err := b.Subscribe(ctx, "conv", c.opts())
	require.NoError(t, err)

	var acked []fanout.Publication
	for i := range 100 {
		p, err := a.Publish(ctx, "conv", []byte(strconv.Itoa(i)))
		require.NoError(t, err)
		acked = append(acked, p)
	}
	srv.Kill()
	_, err = a.Publish(ctx, "conv", []byte("during outage"))
	require.Error(t, err, "publish fails loudly while Redis is down")
	srv.Restart()

	var after fanout.Publication
	require.Eventually(t, func() bool {
		after, err = a.Publish(ctx, "conv", []byte("after restart"))
		return err == nil
	}, 10*time.Second, 20*time.Millisecond)
	assert.NotEqual(t, acked[0].Epoch, after.Epoch, "Redis lost its data: new epoch")
	assert.Equal(t, uint64(1), after.Offset)

	select {
	case <-sub.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber was neither recovered nor told about the gap")
	}
	assert.ErrorIs(t, sub.Err(), fanout.ErrInsufficientState)
	got := c.snapshot()
	for i, p := range got {
		require.Equal(t, uint64(i+1), p.Offset, "delivered offsets are contiguous")
		require.Equal(t, acked[0].Epoch, p.Epoch)
	}
	last := acked[0]
	if len(got) > 0 {
		last = got[len(got)-1]
	}
	_, err = b.Recover(ctx, "conv", last.Offset, last.Epoch)
	assert.ErrorIs(t, err, fanout.ErrRecoveryGap, "the client learns it must reload")

	// The client reloads and resubscribes: live delivery works again.
	var c2 collector
	_, err = b.Subscribe(ctx, "conv", c2.opts())
	require.NoError(t, err)
	p, err := a.Publish(ctx, "conv", []byte("fresh"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c2.count() == 1 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, p.Offset, c2.snapshot()[0].Offset)
}

// When only the pub/sub connection drops (Redis keeps its data), the
// messages published meanwhile are delivered from the stream after the
// reconnect.
func TestPubSubReconnectDeliversMissed(t *testing.T) {
	ctx := t.Context()
	addr, _ := redistest.Start(t)
	a := node(t, addr, fanout.HistoryOptions{Size: 1000})
	b := node(t, addr, fanout.HistoryOptions{Size: 1000})
	var c collector
	sub, err := b.Subscribe(ctx, "conv", c.opts())
	require.NoError(t, err)
	rc := redis.NewClient(&redis.Options{Addr: addr})
	defer rc.Close()

	const n = 300
	for i := range n {
		_, err := a.Publish(ctx, "conv", []byte(strconv.Itoa(i)))
		require.NoError(t, err)
		if i%100 == 50 {
			require.NoError(t, rc.ClientKillByFilter(ctx, "TYPE", "pubsub").Err())
		}
	}
	require.Eventually(t, func() bool { return c.count() == n }, 10*time.Second, 10*time.Millisecond)
	for i, p := range c.snapshot() {
		require.Equal(t, uint64(i+1), p.Offset)
	}
	assert.Nil(t, sub.Err())
}

func TestPresenceAcrossNodesAndTTLExpiry(t *testing.T) {
	ctx := t.Context()
	addr, _ := redistest.Start(t)
	a := node(t, addr, fanout.HistoryOptions{})
	b := node(t, addr, fanout.HistoryOptions{})
	var c collector
	_, err := b.Subscribe(ctx, "conv", c.opts())
	require.NoError(t, err)

	require.NoError(t, a.Join(ctx, "conv", fanout.Member{ID: "agent", Info: []byte("Ann")}, time.Minute))
	require.NoError(t, a.Join(ctx, "conv", fanout.Member{ID: "crashy", Info: []byte("Bob")}, 300*time.Millisecond))
	require.NoError(t, a.Join(ctx, "conv", fanout.Member{ID: "agent", Info: []byte("Ann")}, time.Minute))
	ms, err := b.Members(ctx, "conv")
	require.NoError(t, err)
	require.Len(t, ms, 2)
	assert.Equal(t, "agent", ms[0].ID)
	assert.Equal(t, "Ann", string(ms[0].Info))
	require.NoError(t, a.Refresh(ctx, "conv", "agent", time.Minute))

	// "crashy" is never refreshed: it disappears and a leave is sent once.
	require.Eventually(t, func() bool {
		ms, err := b.Members(ctx, "conv")
		return err == nil && len(ms) == 1 && ms[0].ID == "agent"
	}, 5*time.Second, 50*time.Millisecond)
	require.NoError(t, a.Leave(ctx, "conv", "agent"))
	require.ErrorIs(t, a.Leave(ctx, "conv", "agent"), fanout.ErrNotMember)
	require.ErrorIs(t, a.Refresh(ctx, "conv", "crashy", time.Second), fanout.ErrNotMember)

	require.Eventually(t, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.evs) == 4
	}, 5*time.Second, 10*time.Millisecond)
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := []string{}
	for _, e := range c.evs {
		kinds = append(kinds, e.Kind.String()+":"+e.Member.ID)
	}
	assert.Equal(t, []string{"join:agent", "join:crashy", "leave:crashy", "leave:agent"}, kinds)
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []redisbroker.Config{
		{Shards: -1}, {HistorySize: -1}, {HistoryTTL: -1}, {MetaTTL: -1}, {PresenceTTL: -1}, {HealthCheck: -1},
	} {
		_, err := redisbroker.New(cfg)
		assert.Error(t, err)
	}
	br, err := redisbroker.New(redisbroker.Config{})
	require.NoError(t, err)
	require.NoError(t, br.Close())
	require.NoError(t, br.Close())
	assert.True(t, errors.Is(br.Start(nil), redisbroker.ErrClosed))
	assert.ErrorIs(t, br.Ready(), redisbroker.ErrClosed)
	assert.ErrorIs(t, br.AcquireLease(context.Background(), "l", "o", time.Second), redisbroker.ErrClosed)
}
