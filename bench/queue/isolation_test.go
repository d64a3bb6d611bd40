package queuebench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/queue"
)

// spin burns roughly d of CPU, standing in for a task's real work.
func spin(iters int) int {
	x := 1
	for i := 0; i < iters; i++ {
		x = x*31 + i
	}
	return x
}

var sink int

func itersFor(d time.Duration) int {
	const probe = 2_000_000
	start := time.Now()
	sink += spin(probe)
	el := time.Since(start)
	return max(1, int(float64(probe)*float64(d)/float64(el)))
}

// system is one contender in the isolation scenario.
type system struct {
	push func(tier int, v time.Duration) error
	stop func()
}

// BenchmarkIsolation floods P2 at 10× what the pool can serve while P0 and
// P1 receive a light steady load, and reports each tier's wait (push to
// hand-out) P50/P99 in µs, for queue.Pool and for the naive channel-per-tier
// design. Each op is a one-second scenario; run it with -benchtime 1x
// -count 5. producer-wakeups/op shows how often the producer actually ran
// (1,000 = every tick): the load is paced by elapsed time, so a starved
// producer still offers the full flood, in bigger bursts.
func BenchmarkIsolation(b *testing.B) {
	b.Run("impl=switchboard", func(b *testing.B) {
		isolation(b, func(run func(tier int, v time.Duration)) system {
			q, err := queue.New(queue.Config[time.Duration]{Tiers: queue.TaskQueueTiers()})
			if err != nil {
				b.Fatal(err)
			}
			p, err := queue.NewPool(q, queue.PoolConfig[time.Duration]{
				Workers: workers,
				Run: func(_ context.Context, it queue.Item[time.Duration]) error {
					run(it.Tier, it.Value)
					return nil
				},
			})
			if err != nil {
				b.Fatal(err)
			}
			p.Start()
			return system{
				push: func(tier int, v time.Duration) error { return q.Push("", tier, v) },
				stop: func() {
					if err := p.Shutdown(context.Background()); err != nil {
						b.Fatal(err)
					}
				},
			}
		})
	})
	b.Run("impl=chan-select", func(b *testing.B) {
		isolation(b, func(run func(tier int, v time.Duration)) system {
			var chs [3]chan time.Duration
			for i := range chs {
				chs[i] = make(chan time.Duration, queue.DefaultCapacity)
			}
			quit := make(chan struct{})
			var wg sync.WaitGroup
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						var v time.Duration
						var tier int
						select {
						case v = <-chs[0]:
						default:
							select {
							case v = <-chs[0]:
							case v = <-chs[1]:
								tier = 1
							default:
								select {
								case v = <-chs[0]:
								case v = <-chs[1]:
									tier = 1
								case v = <-chs[2]:
									tier = 2
								case <-quit:
									return
								}
							}
						}
						run(tier, v)
					}
				}()
			}
			return system{
				push: func(tier int, v time.Duration) error {
					select {
					case chs[tier] <- v:
						return nil
					default:
						return queue.ErrFull
					}
				},
				stop: func() { close(quit); wg.Wait() },
			}
		})
	})
}

func isolation(b *testing.B, mk func(run func(tier int, v time.Duration)) system) {
	const (
		service  = 20 * time.Microsecond
		tick     = time.Millisecond
		capPerMs = int(workers * tick / service) // what the pool can serve per tick
		p2PerMs  = 10 * capPerMs                 // the flood
		p1PerMs  = 4
		p0PerMs  = 2
		scenario = time.Second
	)
	iters := itersFor(service)
	base := time.Now()
	var mu sync.Mutex
	// Room for everything up front: growing a 100k-entry slice under mu
	// would stall both workers (and feed the GC) in the middle of the
	// measurement.
	perRun := b.N * int(scenario/tick)
	waits := [3][]time.Duration{
		make([]time.Duration, 0, 2*perRun*p0PerMs),
		make([]time.Duration, 0, 2*perRun*p1PerMs),
		make([]time.Duration, 0, 2*perRun*capPerMs),
	}
	served := 0
	sys := mk(func(tier int, v time.Duration) {
		w := time.Since(base) - v
		mu.Lock()
		waits[tier] = append(waits[tier], w)
		served++
		mu.Unlock()
		sink += spin(iters)
	})
	full, offered, wakeups := 0, 0, 0
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		t := time.NewTicker(tick)
		start := time.Now()
		sent := 0 // ticks' worth of load pushed so far
		for now := range t.C {
			if now.Sub(start) > scenario {
				break
			}
			// Push every tick's load that is due, not one tick's per wake-up:
			// a producer the scheduler keeps waiting (a Ticker drops the
			// ticks it misses) must still offer both contenders the same
			// 10× flood, in bigger bursts.
			due := int(time.Since(start) / tick)
			k := due - sent
			sent = due
			wakeups++
			for i := 0; i < k*p2PerMs; i++ {
				offered++
				if err := sys.push(2, time.Since(base)); errors.Is(err, queue.ErrFull) {
					full++
				}
			}
			for i := 0; i < k*p1PerMs; i++ {
				_ = sys.push(1, time.Since(base))
			}
			for i := 0; i < k*p0PerMs; i++ {
				_ = sys.push(0, time.Since(base))
			}
		}
		t.Stop()
	}
	b.StopTimer()
	sys.stop()
	mu.Lock()
	defer mu.Unlock()
	for ti, ws := range waits {
		if len(ws) == 0 {
			continue
		}
		slices.Sort(ws)
		b.ReportMetric(float64(ws[len(ws)/2].Microseconds()), fmt.Sprintf("P%d-p50-µs", ti))
		b.ReportMetric(float64(ws[len(ws)*99/100].Microseconds()), fmt.Sprintf("P%d-p99-µs", ti))
		b.ReportMetric(float64(len(ws))/float64(b.N), fmt.Sprintf("P%d-served/op", ti))
	}
	b.ReportMetric(float64(full)/float64(b.N), "P2-rejected/op")
	b.ReportMetric(float64(offered)/float64(b.N), "P2-offered/op")
	// 1,000 when the producer ran on every tick; fewer means it was kept
	// waiting and pushed in catch-up bursts.
	b.ReportMetric(float64(wakeups)/float64(b.N), "producer-wakeups/op")
}
