package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/observe"
)

func TestNewPoolValidation(t *testing.T) {
	q, err := New(Config[int]{})
	require.NoError(t, err)
	run := func(context.Context, Item[int]) error { return nil }
	_, err = NewPool[int](nil, PoolConfig[int]{Run: run})
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewPool(q, PoolConfig[int]{Workers: -1, Run: run})
	require.ErrorContains(t, err, "Workers")
	_, err = NewPool(q, PoolConfig[int]{})
	require.ErrorContains(t, err, "Run")
	_, err = NewPool(q, PoolConfig[int]{Run: run, TaskTimeout: -1})
	require.ErrorContains(t, err, "TaskTimeout")
}

func TestPoolRunsEverythingAndDrains(t *testing.T) {
	obs, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	q, err := New(Config[int]{Tiers: tiers(40, 40, 20), Observer: obs, Name: "work"})
	require.NoError(t, err)
	var sum atomic.Int64
	var noDeadline atomic.Int32
	p, err := NewPool(q, PoolConfig[int]{
		Workers:  3,
		Observer: obs,
		Run: func(ctx context.Context, it Item[int]) error {
			if _, ok := ctx.Deadline(); !ok {
				noDeadline.Add(1)
			}
			sum.Add(int64(it.Value))
			if it.Value%10 == 0 {
				return errors.New("boom")
			}
			return nil
		},
	})
	require.NoError(t, err)
	p.Start()
	p.Start() // idempotent
	want := int64(0)
	for i := 1; i <= 1000; i++ {
		require.NoError(t, q.PushWait(context.Background(), "", i%3, i))
		want += int64(i)
	}
	require.NoError(t, p.Ready())
	require.NoError(t, p.Shutdown(context.Background()))
	assert.Zero(t, q.Len(), "everything was handed out")
	assert.ErrorIs(t, p.Ready(), ErrClosed)
	assert.ErrorIs(t, q.Ready(), ErrClosed)
	<-p.Done()
	assert.Equal(t, want, sum.Load())
	assert.Zero(t, noDeadline.Load())
	st := p.Stats()
	assert.Equal(t, PoolStats{Ran: 1000, Failed: 100}, st)
	require.ErrorIs(t, q.Push("", 0, 1), ErrClosed)

	// Metrics were recorded.
	mfs, err := obs.Gatherer().Gather()
	require.NoError(t, err)
	vals := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName() + labels(m)
			switch {
			case m.Counter != nil:
				vals[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				vals[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				vals[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	assert.Equal(t, 900.0, vals["switchboard_queue_tasks_run_total{queue=work,result=ok}"])
	assert.Equal(t, 100.0, vals["switchboard_queue_tasks_run_total{queue=work,result=error}"])
	assert.Equal(t, 0.0, vals["switchboard_queue_workers_busy{queue=work}"])
	assert.Equal(t, 0.0, vals["switchboard_queue_depth{queue=work,tier=P1}"])
	assert.Equal(t, 1000.0, vals["switchboard_queue_wait_seconds{queue=work,tier=P0}"]+
		vals["switchboard_queue_wait_seconds{queue=work,tier=P1}"]+vals["switchboard_queue_wait_seconds{queue=work,tier=P2}"])
}

func labels(m *dto.Metric) string {
	s := "{"
	for i, l := range m.GetLabel() {
		if i > 0 {
			s += ","
		}
		s += l.GetName() + "=" + l.GetValue()
	}
	return s + "}"
}

func TestPoolRecoversPanics(t *testing.T) {
	q, err := New(Config[int]{Tiers: tiers(1)})
	require.NoError(t, err)
	var mu sync.Mutex
	var recovered []any
	ran := make(chan int, 10)
	p, err := NewPool(q, PoolConfig[int]{
		Workers: 1,
		Run: func(_ context.Context, it Item[int]) error {
			if it.Value < 0 {
				panic("bad task")
			}
			ran <- it.Value
			return nil
		},
		OnPanic: func(it Item[int], r any) {
			mu.Lock()
			recovered = append(recovered, r)
			mu.Unlock()
		},
	})
	require.NoError(t, err)
	p.Start()
	require.NoError(t, q.Push("", 0, -1))
	require.NoError(t, q.Push("", 0, 5))
	assert.Equal(t, 5, <-ran, "the worker survives a panic")
	require.NoError(t, p.Shutdown(context.Background()))
	assert.Equal(t, []any{"bad task"}, recovered)
	assert.Equal(t, uint64(1), p.Stats().Panics)
	assert.Equal(t, uint64(2), p.Stats().Ran)
}

func TestPoolTaskContextDeadline(t *testing.T) {
	q, err := New(Config[int]{Tiers: []TierConfig{{MaxWait: time.Hour}}})
	require.NoError(t, err)
	type got struct {
		dl       time.Time
		deadline time.Time
		errDone  error
	}
	out := make(chan got, 2)
	p, err := NewPool(q, PoolConfig[int]{
		Workers: 1,
		Run: func(ctx context.Context, it Item[int]) error {
			dl, _ := ctx.Deadline()
			g := got{dl: dl, deadline: it.Deadline}
			if it.Value == 1 {
				// Deriving a child context works and sees the deadline.
				c, cancel := context.WithTimeout(ctx, time.Hour*2)
				d2, _ := c.Deadline()
				cancel()
				if !d2.Equal(dl) {
					g.errDone = errors.New("child deadline differs")
				}
			}
			out <- g
			return nil
		},
	})
	require.NoError(t, err)
	p.Start()
	require.NoError(t, q.Push("", 0, 1))
	require.NoError(t, q.Push("", 0, 2))
	for i := 0; i < 2; i++ {
		g := <-out
		require.NoError(t, g.errDone)
		assert.True(t, g.dl.Equal(g.deadline), "ctx deadline %v item deadline %v", g.dl, g.deadline)
	}
	require.NoError(t, p.Shutdown(context.Background()))
}

func TestPoolShutdownAbandons(t *testing.T) {
	q, err := New(Config[int]{Tiers: tiers(1)})
	require.NoError(t, err)
	started := make(chan struct{})
	ctxErr := make(chan error, 1)
	p, err := NewPool(q, PoolConfig[int]{
		Workers: 1,
		Run: func(ctx context.Context, it Item[int]) error {
			close(started)
			<-ctx.Done() // a task that only stops when cancelled
			ctxErr <- ctx.Err()
			return ctx.Err()
		},
	})
	require.NoError(t, err)
	p.Start()
	require.NoError(t, q.Push("running", 0, 0))
	<-started
	for _, id := range []string{"a", "b", "c"} {
		require.NoError(t, q.Push(id, 0, 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, p.Shutdown(ctx), context.DeadlineExceeded)
	select {
	case <-p.Done():
	default:
		t.Fatal("Shutdown returned before the workers exited")
	}
	require.ErrorIs(t, <-ctxErr, context.Canceled, "running task is cancelled")
	// What was never handed out stays in the closed queue, in order.
	var ids []string
	for {
		it, ok := q.TryPop()
		if !ok {
			break
		}
		ids = append(ids, it.ID)
	}
	assert.Equal(t, []string{"a", "b", "c"}, ids)
	assert.Zero(t, q.Stats(0).Abandoned, "left in the queue, not abandoned")
	require.ErrorIs(t, q.Push("d", 0, 0), ErrClosed)
}

func TestPoolShutdownBeforeStart(t *testing.T) {
	q, err := New(Config[int]{Tiers: tiers(1)})
	require.NoError(t, err)
	p, err := NewPool(q, PoolConfig[int]{Run: func(context.Context, Item[int]) error { return nil }})
	require.NoError(t, err)
	require.NoError(t, q.Push("a", 0, 1))
	require.ErrorIs(t, p.Ready(), ErrNotStarted)
	require.NoError(t, p.Shutdown(context.Background()))
	assert.Equal(t, 1, q.Len(), "nothing ran: the item stays in the queue")
	p.Start() // no-op after Shutdown
	<-p.Done()
	require.NoError(t, p.Shutdown(context.Background()))
	require.NoError(t, p.Close())
	assert.ErrorIs(t, p.Ready(), ErrClosed)
	it, ok := q.TryPop()
	require.True(t, ok)
	assert.Equal(t, "a", it.ID)
}

// Under saturation from a Pool's point of view each tier gets its quota.
func TestPoolQuotaUnderSaturation(t *testing.T) {
	quotas := []int{40, 40, 20}
	q, err := New(Config[int]{Tiers: tiers(quotas...)})
	require.NoError(t, err)
	const perTier = 3000
	for ti := range quotas {
		for i := 0; i < perTier; i++ {
			require.NoError(t, q.Push("", ti, i))
		}
	}
	var mu sync.Mutex
	var order []int
	p, err := NewPool(q, PoolConfig[int]{Workers: 2, Run: func(_ context.Context, it Item[int]) error {
		mu.Lock()
		order = append(order, it.Tier)
		mu.Unlock()
		return nil
	}})
	require.NoError(t, err)
	p.Start()
	require.NoError(t, p.Shutdown(context.Background()))
	require.Len(t, order, 3*perTier)
	// While all tiers had work (the first 5000 pops: P2 still had items),
	// shares match the quotas within the slack of concurrent appends.
	window := order[:5000]
	for ti, w := range quotas {
		share := float64(count(window, ti)) / float64(len(window))
		assert.GreaterOrEqual(t, share, float64(w)/100-0.01, "tier %d", ti)
	}
}

func TestPoolReportsServiceTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, err := New(Config[int]{Tiers: tiers(1)})
		require.NoError(t, err)
		done := make(chan struct{}, 4)
		p, err := NewPool(q, PoolConfig[int]{Workers: 2, Run: func(context.Context, Item[int]) error {
			time.Sleep(10 * time.Second) // the task takes 10 s of the bubble's time
			done <- struct{}{}
			return nil
		}})
		require.NoError(t, err)
		p.Start()
		require.NoError(t, q.Push("", 0, 1))
		<-done
		require.NoError(t, q.Push("", 0, 2))
		<-done
		synctest.Wait() // the workers are parked again, their times recorded
		q.mu.Lock()
		require.GreaterOrEqual(t, q.svcN, 1)
		q.mu.Unlock()
		require.NoError(t, q.Push("w", 0, 3)) // will be served; estimate taken before
		require.NoError(t, p.Shutdown(context.Background()))
		q.mu.Lock()
		mean := q.svcSum / int64(q.svcN)
		q.mu.Unlock()
		assert.Equal(t, int64(10*time.Second), mean)
	})
}

// TestPoolWorkerYieldsWhenSaturated checks that a worker handed tasks back to
// back yields its P once per yieldEvery (so timers and producers are not
// starved for Go's 10 ms preemption slice), and that one whose tasks are
// separated by idle parks does not. Time is the synctest bubble's.
func TestPoolWorkerYieldsWhenSaturated(t *testing.T) {
	const step = 100 * time.Microsecond // each task takes this much time
	for _, tc := range []struct {
		name      string
		preload   bool
		minYields uint64
		maxYields uint64
	}{
		// 50 tasks × 100 µs = 5 ms back to back: one yield per 500 µs.
		{name: "saturated", preload: true, minYields: 8, maxYields: 10},
		// One task at a time, the worker parks before each: never.
		{name: "idle between tasks", preload: false, minYields: 0, maxYields: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q, err := New(Config[int]{Tiers: tiers(1)})
				require.NoError(t, err)
				done := make(chan struct{}, 64)
				p, err := NewPool(q, PoolConfig[int]{Workers: 1, Run: func(context.Context, Item[int]) error {
					time.Sleep(step)
					done <- struct{}{}
					return nil
				}})
				require.NoError(t, err)
				const n = 50
				if tc.preload {
					for i := range n {
						require.NoError(t, q.Push("", 0, i))
					}
					p.Start()
					for range n {
						<-done
					}
				} else {
					p.Start()
					for i := range n {
						synctest.Wait() // the worker is parked before each push
						q.mu.Lock()
						require.Len(t, q.popWaiters, 1)
						q.mu.Unlock()
						require.NoError(t, q.Push("", 0, i))
						<-done
					}
				}
				require.NoError(t, p.Shutdown(context.Background()))
				y := p.yields.Load()
				assert.GreaterOrEqual(t, y, tc.minYields)
				assert.LessOrEqual(t, y, tc.maxYields)
			})
		})
	}
}
