package queuebench

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/panjf2000/ants/v2"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/queue"
)

// ants starts a package-level default pool in init; its housekeeping
// goroutines are not ours.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"))
}

const workers = 2

// counter is the shared no-op task: count and signal the last one.
type counter struct {
	n    atomic.Int64
	want int64
	done chan struct{}
}

func (c *counter) hit() {
	if c.n.Add(1) == c.want {
		c.done <- struct{}{}
	}
}

func (c *counter) reset(n int) {
	c.n.Store(0)
	c.want = int64(n)
}

func report(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
}

// BenchmarkThroughput pushes b.N no-op tasks round-robin over three tiers and
// waits until all have run on a pool of 2 workers.
func BenchmarkThroughput(b *testing.B) {
	b.Run("impl=switchboard", benchSwitchboard)
	b.Run("impl=chan-select", benchChannels)
	b.Run("impl=ants", benchAnts)
}

func benchSwitchboard(b *testing.B) {
	c := &counter{done: make(chan struct{}, 1)}
	q, err := queue.New(queue.Config[*counter]{Tiers: queue.TaskQueueTiers()})
	if err != nil {
		b.Fatal(err)
	}
	p, err := queue.NewPool(q, queue.PoolConfig[*counter]{
		Workers: workers,
		Run: func(_ context.Context, it queue.Item[*counter]) error {
			it.Value.hit()
			return nil
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	p.Start()
	ctx := context.Background()
	// Warm up the slab and rings so the timed loop is steady state.
	c.reset(3 * 4096)
	for i := 0; i < 3*4096; i++ {
		_ = q.PushWait(ctx, "", i%3, c)
	}
	<-c.done
	c.reset(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := q.PushWait(ctx, "", i%3, c); err != nil {
			b.Fatal(err)
		}
	}
	<-c.done
	report(b, start)
	b.StopTimer()
	if err := p.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
}

// benchChannels is the naive design: a buffered channel per tier and workers
// that try P0, then P1, then block on all three.
func benchChannels(b *testing.B) {
	c := &counter{done: make(chan struct{}, 1)}
	var chs [3]chan *counter
	for i := range chs {
		chs[i] = make(chan *counter, 4096)
	}
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var t *counter
				select {
				case t = <-chs[0]:
				default:
					select {
					case t = <-chs[0]:
					case t = <-chs[1]:
					default:
						select {
						case t = <-chs[0]:
						case t = <-chs[1]:
						case t = <-chs[2]:
						case <-quit:
							return
						}
					}
				}
				t.hit()
			}
		}()
	}
	c.reset(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		chs[i%3] <- c
	}
	<-c.done
	report(b, start)
	b.StopTimer()
	close(quit)
	wg.Wait()
}

func benchAnts(b *testing.B) {
	c := &counter{done: make(chan struct{}, 1)}
	p, err := ants.NewPoolWithFunc(workers, func(arg any) { arg.(*counter).hit() })
	if err != nil {
		b.Fatal(err)
	}
	c.reset(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := p.Invoke(c); err != nil {
			b.Fatal(err)
		}
	}
	<-c.done
	report(b, start)
	b.StopTimer()
	if err := p.ReleaseTimeout(5 * time.Second); err != nil {
		b.Fatal(err)
	}
}
