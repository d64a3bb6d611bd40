package redisbroker_test

import (
	"bufio"
	"context"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/fanout/redisbroker"
	"github.com/switchboard-go/switchboard/internal/redistest"
)

// pauseRedis stops the redis-server at addr with SIGSTOP, so that it
// accepts connections but answers nothing, until the returned resume is
// called (also registered with t.Cleanup; register it after the buses so
// that it runs before they are closed). The process is the one redistest
// started for this test: its PID comes from INFO server.
func pauseRedis(t *testing.T, addr string) (resume func()) {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr})
	info, err := rc.Info(t.Context(), "server").Result()
	require.NoError(t, rc.Close())
	require.NoError(t, err)
	pid := 0
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "process_id:"); ok {
			pid, err = strconv.Atoi(v)
			require.NoError(t, err)
		}
	}
	require.NotZero(t, pid, "no process_id in INFO server")
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	resumed := false
	resume = func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	return resume
}

// slowNode is a bus on a broker whose client would wait 10s for a reply:
// anything quicker than that was bounded by the caller's ctx.
func slowNode(t *testing.T, addr string, health time.Duration) (*fanout.Bus, *redisbroker.Broker) {
	t.Helper()
	br, err := redisbroker.New(redisbroker.Config{
		Options: &redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second},
		Prefix: "ctx-test", Shards: 4, HealthCheck: health,
	})
	require.NoError(t, err)
	b, err := fanout.New(fanout.Config{Broker: br})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	return b, br
}

func cancelAfter(parent context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithCancel(parent)
	time.AfterFunc(d, cancel)
	return ctx
}

// A cancelled ctx bounds every call while Redis answers nothing, and Ready
// reports Redis unresponsive meanwhile.
func TestContextBoundsBlockedRedis(t *testing.T) {
	addr, _ := redistest.Start(t)
	bus, br := slowNode(t, addr, 50*time.Millisecond)
	ctx := t.Context()
	_, err := bus.Publish(ctx, "warm", []byte("x"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return bus.Ready() == nil }, 5*time.Second, 10*time.Millisecond)

	resume := pauseRedis(t, addr)
	calls := map[string]func(context.Context) error{
		"Publish": func(ctx context.Context) error {
			_, err := bus.Publish(ctx, "t", []byte("x"))
			return err
		},
		"Subscribe": func(ctx context.Context) error {
			_, err := bus.Subscribe(ctx, "t", fanout.SubscribeOptions{})
			return err
		},
		"Members": func(ctx context.Context) error {
			_, err := bus.Members(ctx, "t")
			return err
		},
		"Recover": func(ctx context.Context) error {
			_, err := bus.Recover(ctx, "t", 0, "")
			return err
		},
		"Join": func(ctx context.Context) error {
			return bus.Join(ctx, "t", fanout.Member{ID: "m"}, time.Minute)
		},
		"AcquireLease": func(ctx context.Context) error {
			return br.AcquireLease(ctx, "lease", "me", time.Minute)
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := call(cancelAfter(ctx, 100*time.Millisecond))
			assert.ErrorIs(t, err, context.Canceled)
			assert.Less(t, time.Since(start), 3*time.Second, "bounded by ctx, not by the client's 10s timeout")

			dctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			start = time.Now()
			assert.ErrorIs(t, call(dctx), context.DeadlineExceeded)
			assert.Less(t, time.Since(start), 3*time.Second)

			canceled, cancel2 := context.WithCancel(ctx)
			cancel2()
			assert.ErrorIs(t, call(canceled), context.Canceled, "already canceled")
		})
	}
	require.Eventually(t, func() bool {
		err := bus.Ready()
		return errors.Is(err, fanout.ErrBrokerUnavailable) && errors.Is(err, redisbroker.ErrDisconnected)
	}, 5*time.Second, 10*time.Millisecond, "Ready reports an unresponsive Redis")

	resume()
	require.Eventually(t, func() bool { return bus.Ready() == nil }, 10*time.Second, 10*time.Millisecond)
	var c collector
	_, err = bus.Subscribe(ctx, "t", c.opts())
	require.NoError(t, err, "an abandoned subscribe leaves nothing in the way")
	p, err := bus.Publish(ctx, "t", []byte("again"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return c.count() > 0 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, p.Offset, c.snapshot()[0].Offset, "%+v", c.snapshot())
}

// Close does not wait for Redis: round trips abandoned by their callers end
// when the broker closes the client it owns.
func TestCloseWhileRedisBlocked(t *testing.T) {
	addr, _ := redistest.Start(t)
	br, err := redisbroker.New(redisbroker.Config{
		Options: &redis.Options{Addr: addr, MaxRetries: -1, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second},
		Prefix:  "close-test", HealthCheck: time.Hour,
	})
	require.NoError(t, err)
	bus, err := fanout.New(fanout.Config{Broker: br})
	require.NoError(t, err)
	ctx := t.Context()
	require.Eventually(t, func() bool { return bus.Ready() == nil }, 5*time.Second, 10*time.Millisecond)
	pauseRedis(t, addr)
	for range 3 {
		_, err := bus.Publish(cancelAfter(ctx, 50*time.Millisecond), "t", []byte("x"))
		require.ErrorIs(t, err, context.Canceled)
	}
	start := time.Now()
	require.NoError(t, bus.Close())
	assert.Less(t, time.Since(start), 5*time.Second)
	assert.ErrorIs(t, bus.Ready(), fanout.ErrClosed)
	// goleak (TestMain) checks that the abandoned round trips have ended.
}

func TestBrokerLifecycle(t *testing.T) {
	srv := redistest.StartServer(t)
	ctx := t.Context()
	br, err := redisbroker.New(redisbroker.Config{
		Options: &redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond},
		Prefix:  "life", Shards: 2, HealthCheck: 50 * time.Millisecond,
	})
	require.NoError(t, err)
	assert.ErrorIs(t, br.Ready(), redisbroker.ErrDisconnected, "not started")
	bus, err := fanout.New(fanout.Config{Broker: br})
	require.NoError(t, err)
	t.Cleanup(func() { _ = bus.Close() })
	require.Eventually(t, func() bool { return bus.Ready() == nil }, 5*time.Second, 10*time.Millisecond)
	sub, err := bus.Subscribe(ctx, "conv", fanout.SubscribeOptions{})
	require.NoError(t, err)

	srv.Kill()
	require.Eventually(t, func() bool {
		err := bus.Ready()
		return errors.Is(err, fanout.ErrBrokerUnavailable) && errors.Is(err, redisbroker.ErrDisconnected)
	}, 5*time.Second, 10*time.Millisecond, "Ready reports the lost connection")
	srv.Restart()
	require.Eventually(t, func() bool { return bus.Ready() == nil }, 10*time.Second, 10*time.Millisecond,
		"ready again once Redis answers and the shard is resubscribed")

	require.NoError(t, bus.Shutdown(ctx))
	<-sub.Done()
	assert.ErrorIs(t, sub.Err(), fanout.ErrShutdown)
	assert.ErrorIs(t, bus.Ready(), fanout.ErrClosed)
	assert.ErrorIs(t, br.Ready(), redisbroker.ErrClosed)
	_, err = br.Publish(ctx, "t", nil, fanout.HistoryOptions{})
	assert.ErrorIs(t, err, redisbroker.ErrClosed)
	assert.ErrorIs(t, br.Subscribe(ctx, "t"), redisbroker.ErrClosed)
	assert.NoError(t, br.Shutdown(ctx), "idempotent")
	assert.NoError(t, br.Close(), "idempotent")
	assert.NoError(t, bus.Close(), "idempotent")
}

// Shutdown with a ctx that ends while a round trip it waits for is stuck
// returns ctx's error, after stopping everything anyway.
func TestBrokerShutdownRespectsContext(t *testing.T) {
	addr, _ := redistest.Start(t)
	br, err := redisbroker.New(redisbroker.Config{
		Options: &redis.Options{Addr: addr, MaxRetries: -1, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second},
		Prefix:  "shut-test", HealthCheck: time.Hour,
	})
	require.NoError(t, err)
	require.NoError(t, br.Start(nopHandler{}))
	ctx := t.Context()
	require.Eventually(t, func() bool { return br.Ready() == nil }, 5*time.Second, 10*time.Millisecond)
	pauseRedis(t, addr)
	_, err = br.Publish(cancelAfter(ctx, 50*time.Millisecond), "t", nil, fanout.HistoryOptions{})
	require.ErrorIs(t, err, context.Canceled)
	sctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = br.Shutdown(sctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded, "the abandoned publish was still running")
	assert.Less(t, time.Since(start), 5*time.Second)
}

type nopHandler struct{}

func (nopHandler) HandlePublication(fanout.Publication)    {}
func (nopHandler) HandlePresence(fanout.PresenceEvent)     {}
func (nopHandler) HandleReconnect(func(topic string) bool) {}
