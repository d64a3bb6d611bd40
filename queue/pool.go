package queue

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-go/switchboard/internal/lifetime"
)

// Pool runs items from a Queue on a fixed number of worker goroutines.
//
// Each task's context carries a deadline: start + PoolConfig.TaskTimeout when
// set, otherwise the item's deadline, or — for an item handed out late
// (Item.Escalated) — start + its tier's MaxWait, so a degraded reply still has
// time. A task must
// not use its context after Run returns (like an http.Request's): contexts
// that were never asked for Done() are recycled for the next task, so that
// running a task allocates nothing.
//
// Panics in Run are recovered, counted and reported to OnPanic; the worker
// keeps going. OnPanic and OnError run on the worker goroutine that ran the
// task, after Run has returned and before the worker takes another item: on
// a goroutine the Pool owns, never inside a host call (Push, Start,
// Stats…), so they may take the host's locks and call the Queue. Idle
// workers park on the queue without spinning. Service times are reported to
// the Queue for EstimatedWait.
//
// Lifecycle: Start launches the workers; Shutdown(ctx) stops intake,
// drains and waits for the workers; Close stops at once; Ready reports
// whether the pool is serving. Items still waiting when a Shutdown gives up
// stay in the (closed) Queue: the host takes them with TryPop, to persist
// them or hand them to another queue, and Position and Cancel keep seeing
// them.
//
// A worker that has been handed tasks back to back for yieldEvery (500 µs)
// without parking yields its P (runtime.Gosched) before
// taking the next one. Go only preempts a goroutine after 10 ms, and due
// timers and network readiness are only looked at when a P schedules, so
// without this a saturated pool with one worker per P starves the producers
// feeding it (a 1 ms ticker fired 20–70 times a second instead of 1,000) and
// every other goroutine of the process. The yield costs a few hundred ns per
// 500 µs of work and allocates nothing.
type Pool[T any] struct {
	q   *Queue[T]
	cfg PoolConfig[T]

	base       context.Context
	cancelBase context.CancelFunc
	popCtx     context.Context
	cancelPop  context.CancelFunc
	stop       atomic.Bool

	mu       sync.Mutex
	started  bool
	shutting bool
	live     int
	done     chan struct{}

	ran, failed, panics atomic.Uint64
	busy                atomic.Int64
	yields              atomic.Uint64
	m                   *poolMetrics
}

// PoolStats are a Pool's cumulative counters.
type PoolStats struct {
	// Ran counts tasks whose Run returned (with or without error) or panicked.
	Ran uint64
	// Failed counts tasks whose Run returned an error.
	Failed uint64
	// Panics counts recovered panics.
	Panics uint64
	// Busy is the number of workers running a task now.
	Busy int
}

// NewPool returns a stopped Pool over q; call Start. Workers defaults to
// GOMAXPROCS when zero; Run is required. Errors wrap ErrInvalidConfig.
func NewPool[T any](q *Queue[T], cfg PoolConfig[T]) (*Pool[T], error) {
	if q == nil {
		return nil, fmt.Errorf("%w: queue is nil", ErrInvalidConfig)
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Workers < 0 {
		return nil, fmt.Errorf("%w: Workers must be > 0, got %d", ErrInvalidConfig, cfg.Workers)
	}
	if cfg.Run == nil {
		return nil, fmt.Errorf("%w: Run is required", ErrInvalidConfig)
	}
	if cfg.TaskTimeout < 0 {
		return nil, fmt.Errorf("%w: TaskTimeout must be >= 0, got %v", ErrInvalidConfig, cfg.TaskTimeout)
	}
	if cfg.BaseContext == nil {
		cfg.BaseContext = context.Background()
	}
	p := &Pool[T]{q: q, cfg: cfg, done: make(chan struct{})}
	p.base, p.cancelBase = context.WithCancel(cfg.BaseContext)
	p.popCtx, p.cancelPop = context.WithCancel(context.Background())
	p.m = newPoolMetrics(q, cfg)
	return p, nil
}

// Start launches the workers. It is idempotent and does nothing after
// Shutdown.
func (p *Pool[T]) Start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started || p.shutting {
		return
	}
	p.started = true
	p.live = p.cfg.Workers
	p.q.addPoolWorkers(p.cfg.Workers)
	for range p.cfg.Workers {
		go p.worker()
	}
}

// Shutdown stops the pool gracefully: it stops intake by closing the
// queue's intake (Push returns ErrClosed), lets the workers drain what is
// waiting, waits for them to exit and then shuts the queue down
// (Queue.Shutdown: its queued callbacks are delivered), all bounded by ctx.
// If ctx ends first it stops the workers from taking more items, cancels
// the contexts of running tasks, waits for those tasks to return (a Run
// that ignores its context delays Shutdown), closes the queue and returns
// ctx.Err(). Items never handed to Run stay waiting in the closed queue:
// take them with TryPop (Queue.Len says how many). When Shutdown returns
// no worker runs and neither the Pool's nor the Queue's callbacks fire.
// Shutdown before Start runs nothing and leaves every item in the queue.
// It is idempotent: a later call waits in the same way. It must not be
// called from Run or a callback.
func (p *Pool[T]) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	first := !p.shutting
	p.shutting = true
	started := p.started
	p.mu.Unlock()
	p.q.closeIntake()
	if !started {
		if first {
			p.cancelBase()
			p.cancelPop()
			close(p.done)
		}
		return p.q.Shutdown(ctx)
	}
	select {
	case <-p.done:
		return p.q.Shutdown(ctx)
	case <-ctx.Done():
		p.stop.Store(true)
		p.cancelPop()
		p.cancelBase()
		<-p.done
		_ = p.q.Close() // ctx is done: drop the queue's undelivered callbacks
		return ctx.Err()
	}
}

// Close stops the pool at once: Shutdown with a context that is already
// done. Running tasks' contexts are canceled and Close returns when they
// have returned; waiting items stay in the closed queue. It is idempotent
// and returns nil.
func (p *Pool[T]) Close() error {
	ctx := lifetime.Canceled() // Close is Shutdown with a context already done
	_ = p.Shutdown(ctx)        // only reports that the drain was cut short, as Close documents
	return nil
}

// Ready returns nil while the pool is serving (started and not shut down),
// an error wrapping ErrNotStarted before Start, and one wrapping ErrClosed
// once Shutdown or Close has begun.
func (p *Pool[T]) Ready() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.shutting:
		return fmt.Errorf("%w: pool shut down", ErrClosed)
	case !p.started:
		return ErrNotStarted
	}
	return nil
}

// Done returns a channel closed when every worker has exited (after
// Shutdown or Close).
func (p *Pool[T]) Done() <-chan struct{} { return p.done }

// Stats returns the pool's counters.
func (p *Pool[T]) Stats() PoolStats {
	return PoolStats{Ran: p.ran.Load(), Failed: p.failed.Load(), Panics: p.panics.Load(), Busy: int(p.busy.Load())}
}

func (p *Pool[T]) worker() {
	defer p.exit()
	w := &waiter{ch: make(chan struct{}, 1)}
	tc := &taskCtx{parent: p.base}
	// since is when the current run of back-to-back tasks began; parks is
	// w.parks when we last looked, to notice that pop parked (and so let the
	// scheduler run everything else) in between.
	start, since, parks := int64(0), int64(0), uint32(0)
	for {
		if since != 0 && start-since >= yieldEvery {
			// Yield before taking an item, so no handed-out item waits.
			p.yields.Add(1)
			runtime.Gosched()
			since = start
		}
		it, s, err := p.q.pop(p.popCtx, w, start, &p.stop)
		if err != nil {
			return
		}
		if w.parks != parks || since == 0 {
			parks, since = w.parks, s
		}
		start = s
		p.run(tc, it, start)
		if !tc.finish() {
			tc = &taskCtx{parent: p.base}
		}
	}
}

// yieldEvery is how long a worker takes tasks back to back before it yields
// its P; see Pool.
const yieldEvery = int64(500 * time.Microsecond)

func (p *Pool[T]) exit() {
	p.q.addPoolWorkers(-1)
	p.mu.Lock()
	p.live--
	last := p.live == 0
	p.mu.Unlock()
	if last {
		p.cancelBase()
		p.cancelPop()
		close(p.done)
	}
}

// run executes one task handed out at start (Unix ns).
func (p *Pool[T]) run(tc *taskCtx, it Item[T], start int64) {
	switch {
	case p.cfg.TaskTimeout > 0:
		tc.deadline = time.Unix(0, start+int64(p.cfg.TaskTimeout))
	case it.Deadline.UnixNano() > start:
		tc.deadline = it.Deadline
	default:
		tc.deadline = time.Unix(0, start+p.q.tiers[it.Tier].maxWait)
	}
	p.busy.Add(1)
	if m := p.m; m != nil {
		m.busy.Inc()
	}
	err, panicked := p.call(tc, it)
	p.busy.Add(-1)
	p.ran.Add(1)
	m := p.m
	if m != nil {
		m.busy.Dec()
	}
	switch {
	case panicked:
		if m != nil {
			m.panicked.Inc()
			m.panics.Inc()
		}
	case err != nil:
		p.failed.Add(1)
		if m != nil {
			m.failed.Inc()
		}
		if p.cfg.OnError != nil {
			p.cfg.OnError(it, err)
		}
	default:
		if m != nil {
			m.ok.Inc()
		}
	}
}

// errPanicked marks a recovered panic internally.
var errPanicked = errors.New("queue: task panicked")

func (p *Pool[T]) call(tc *taskCtx, it Item[T]) (err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			p.panics.Add(1)
			err, panicked = errPanicked, true
			if p.cfg.OnPanic != nil {
				p.cfg.OnPanic(it, r)
			}
		}
	}()
	return p.cfg.Run(tc, it), false
}
