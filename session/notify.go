package session

import (
	"context"
	"math"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// An evictQueue's two buffers keep the capacity of the largest backlog seen
// so that a loaded store stops allocating; buffers above keepSlots evictions
// (or twice the queue's limits) are released when the queue runs empty at
// least shrinkAfter after the last backlog that needed them.
const (
	keepSlots   = 4096
	shrinkAfter = time.Second
)

// eviction is one pending OnEvict call.
type eviction[K comparable, V any] struct {
	key    K
	value  V
	reason Reason
}

// evictQueue delivers a store's evictions to OnEvict on a goroutine the
// store owns, one at a time, in the order they were posted, so that OnEvict
// never runs on the goroutine of a caller that is inside the store (and may
// hold its own locks) and never under a lock of the store.
//
// Evictions are posted under the lock of the shard where they happen, so
// the queue order is the order of the removals (per key in particular); the
// queue's lock nests inside the shard locks and is never held while OnEvict
// runs. The goroutine takes all pending evictions at once and swaps two
// buffers with the posters, so posting does not allocate in the steady
// state and delivering costs little more than the OnEvict calls.
//
// Back-pressure: once more than limit evictions are undelivered (counting
// those the goroutine has taken), the poster waits in pace, after releasing
// the shard lock, until its own eviction is within limit of delivery.
// Posting itself never waits, so the backlog can exceed limit by the
// evictions of the calls in progress (at most two per call, a janitor
// batch). Calls into the store are held to limit, 0 meaning never; the
// janitor to sweepLimit.
type evictQueue[K comparable, V any] struct {
	fn         func(K, V, Reason)
	limit      int           // for calls into the store; 0: none
	sweepLimit int           // for the janitor; > 0
	keep       int           // the buffer capacity kept in any case
	done       chan struct{} // closed when the delivery goroutine exits
	bigAt      time.Time     // the goroutine's: when it last took a batch above keep

	// delivered counts the OnEvict calls that returned; only the goroutine
	// adds to it. wakeAt is the smallest delivered count a waiter needs
	// (MaxUint64: none), written under mu; the goroutine takes mu to wake
	// the waiters once delivered reaches it. A waiter stores wakeAt before
	// it reads delivered, so one of the two sees the other.
	delivered atomic.Uint64
	wakeAt    atomic.Uint64
	drop      atomic.Bool // set under mu with dropping, for the goroutine's batch loop

	mu       sync.Mutex
	more     sync.Cond        // the goroutine waits here while idle
	room     sync.Cond        // pace and flush wait here
	buf      []eviction[K, V] // pending, in order
	spare    []eviction[K, V] // the goroutine's previous batch, for reuse
	posted   uint64           // evictions ever posted
	idle     bool             // the goroutine waits on more
	busy     bool             // the goroutine is delivering a batch
	closing  bool             // Shutdown began: the janitor no longer waits
	draining bool             // the goroutine exits once nothing is pending
	dropping bool             // discard what is pending and what is posted
	exited   bool             // the goroutine is gone: posts are discarded
}

// newEvictQueue starts the delivery goroutine; stop ends it.
func newEvictQueue[K comparable, V any](fn func(K, V, Reason), limit, sweepLimit int) *evictQueue[K, V] {
	q := &evictQueue[K, V]{fn: fn, limit: limit, sweepLimit: sweepLimit, done: make(chan struct{})}
	q.keep = max(keepSlots, 2*limit, 2*sweepLimit)
	q.wakeAt.Store(math.MaxUint64)
	q.more.L = &q.mu
	q.room.L = &q.mu
	go deliveryRoot(q.run)
	return q
}

// post queues one eviction. The caller holds the lock of the shard the entry
// left. It returns 0, or a ticket to pass to pace once the shard lock is
// released when the backlog is over the limit.
func (q *evictQueue[K, V]) post(k K, v V, r Reason) uint64 {
	q.mu.Lock()
	if q.dropping || q.exited {
		q.mu.Unlock()
		return 0
	}
	q.reserveLocked(1)
	q.buf = append(q.buf, eviction[K, V]{key: k, value: v, reason: r})
	q.postedLocked(1)
	t := q.ticketLocked(q.limit)
	q.mu.Unlock()
	return t
}

// postAll is post for a janitor batch, under one acquisition of the lock.
func (q *evictQueue[K, V]) postAll(evs []evicted[K, V]) uint64 {
	q.mu.Lock()
	if q.dropping || q.exited {
		q.mu.Unlock()
		return 0
	}
	q.reserveLocked(len(evs))
	for i := range evs {
		q.buf = append(q.buf, eviction[K, V]{key: evs[i].key, value: evs[i].value, reason: evs[i].reason})
	}
	q.postedLocked(len(evs))
	t := q.ticketLocked(q.sweepLimit)
	q.mu.Unlock()
	return t
}

// reserveLocked makes room for n more pending evictions, doubling the
// buffer (from 64) so that a growing backlog costs few allocations.
func (q *evictQueue[K, V]) reserveLocked(n int) {
	if len(q.buf)+n > cap(q.buf) {
		buf := make([]eviction[K, V], len(q.buf), max(64, 2*cap(q.buf), len(q.buf)+n))
		copy(buf, q.buf)
		q.buf = buf
	}
}

func (q *evictQueue[K, V]) postedLocked(n int) {
	q.posted += uint64(n)
	if q.idle {
		q.idle = false
		q.more.Signal()
	}
}

// ticketLocked returns the number of the eviction just posted if more than
// limit (> 0) are undelivered, else 0.
func (q *evictQueue[K, V]) ticketLocked(limit int) uint64 {
	if limit > 0 && q.posted-q.delivered.Load() > uint64(limit) {
		return q.posted
	}
	return 0
}

// pace applies back-pressure for ticket t (non-zero, from post or postAll):
// it waits until at most limit (the janitor: sweepLimit) evictions up to
// and including t are undelivered, or until the queue stops; the janitor
// also stops waiting once Shutdown begins. A call made from OnEvict never
// waits, since the delivery it would wait for is its own caller's.
func (q *evictQueue[K, V]) pace(t uint64, janitor bool) {
	limit := q.limit
	if janitor {
		limit = q.sweepLimit
	}
	need := t - uint64(limit)
	checked := janitor // the janitor is not a delivery goroutine
	q.mu.Lock()
	for !q.dropping && !q.exited && !(janitor && q.closing) && !q.reachedLocked(need) {
		if q.busy && !checked {
			q.mu.Unlock()
			if onDeliveryGoroutine() {
				return
			}
			checked = true
			q.mu.Lock()
			continue
		}
		q.room.Wait()
	}
	q.mu.Unlock()
}

// reachedLocked reports whether need evictions have been delivered, and if
// not, registers need in wakeAt so that the goroutine wakes room when they
// have.
func (q *evictQueue[K, V]) reachedLocked(need uint64) bool {
	if need < q.wakeAt.Load() {
		q.wakeAt.Store(need)
	}
	return q.delivered.Load() >= need
}

// flush waits until nothing is pending (delivered or dropped), including
// evictions that OnEvict causes meanwhile. Tests use it to observe OnEvict
// deterministically once their own calls have returned.
func (q *evictQueue[K, V]) flush() {
	q.mu.Lock()
	for !q.dropping && !q.exited && !q.reachedLocked(q.posted) {
		q.room.Wait()
	}
	q.mu.Unlock()
}

// run is the delivery goroutine.
func (q *evictQueue[K, V]) run() {
	defer close(q.done)
	if rootPC.Load() == 0 {
		rootPC.Store(findRootPC())
	}
	q.mu.Lock()
	for {
		if len(q.buf) == 0 || q.dropping {
			clear(q.buf)
			q.buf = q.buf[:0]
			if q.draining || q.dropping {
				q.exited = true
				q.room.Broadcast()
				q.mu.Unlock()
				return
			}
			if max(cap(q.buf), cap(q.spare)) > q.keep && time.Since(q.bigAt) >= shrinkAfter {
				q.buf, q.spare = nil, nil
			}
			q.idle = true
			for q.idle {
				q.more.Wait()
			}
			continue
		}
		batch := q.buf
		q.buf, q.spare = q.spare[:0], nil
		if cap(q.buf) < cap(batch) {
			q.buf = make([]eviction[K, V], 0, cap(batch)) // keep the two buffers alike
		}
		q.busy = true
		q.mu.Unlock()
		if cap(batch) > q.keep {
			q.bigAt = time.Now()
		}
		for i := range batch {
			if q.drop.Load() {
				clear(batch[i:])
				break
			}
			q.fn(batch[i].key, batch[i].value, batch[i].reason)
			batch[i] = eviction[K, V]{}
			if q.delivered.Add(1) >= q.wakeAt.Load() {
				q.mu.Lock()
				q.wakeAt.Store(math.MaxUint64)
				q.room.Broadcast()
				q.mu.Unlock()
			}
		}
		q.mu.Lock()
		q.busy = false
		q.spare = batch[:0]
	}
}

// close marks the start of Shutdown: the janitor stops waiting for room.
func (q *evictQueue[K, V]) close() {
	q.mu.Lock()
	q.closing = true
	q.room.Broadcast()
	q.mu.Unlock()
}

// stop ends delivery. It waits until nothing is pending (evictions posted
// meanwhile are delivered too) or until ctx is done; then it discards what
// is pending and returns ctx.Err() once the OnEvict call in progress, if
// any, has returned. Either way the goroutine has exited when stop returns
// and later posts are discarded. stop must not be called from OnEvict.
func (q *evictQueue[K, V]) stop(ctx context.Context) error {
	q.mu.Lock()
	q.draining = true
	q.idle = false
	q.more.Signal()
	q.mu.Unlock()
	if ctx.Err() == nil {
		select {
		case <-q.done:
			return nil
		case <-ctx.Done():
		}
	}
	q.mu.Lock()
	gaveUp := len(q.buf) > 0 || q.busy
	q.dropping = true
	q.drop.Store(true)
	clear(q.buf)
	q.buf = q.buf[:0]
	q.idle = false
	q.more.Signal()
	q.room.Broadcast()
	q.mu.Unlock()
	<-q.done
	if gaveUp {
		return ctx.Err()
	}
	return nil
}

// deliveryRoot is the outermost frame of every store's delivery goroutine,
// so a goroutine has it on its stack exactly when it is running OnEvict.
//
//go:noinline
func deliveryRoot(run func()) { run() }

// rootPC is the return address of the call to run in deliveryRoot: the
// program counter that deliveryRoot's frame has in every stack trace of a
// delivery goroutine. The first delivery goroutine finds it.
var rootPC atomic.Uintptr

// findRootPC returns the program counter of deliveryRoot's frame on the
// calling delivery goroutine's stack.
func findRootPC() uintptr {
	entry := runtime.FuncForPC(reflect.ValueOf(deliveryRoot).Pointer()).Entry()
	var pcs [16]uintptr
	for _, pc := range pcs[:runtime.Callers(2, pcs[:])] {
		if f := runtime.FuncForPC(pc - 1); f != nil && f.Entry() == entry {
			return pc
		}
	}
	panic("session: deliveryRoot is not on the delivery goroutine's stack")
}

// onDeliveryGoroutine reports whether the calling goroutine is the delivery
// goroutine of a store (of any type): whether the caller is inside an
// OnEvict. Go has no goroutine identity, so it looks for deliveryRoot's
// frame on the stack, comparing program counters (no allocation, about a
// microsecond); only a caller about to wait for back-pressure asks.
func onDeliveryGoroutine() bool {
	root := rootPC.Load()
	if root == 0 {
		return false
	}
	var pcs [64]uintptr
	for skip := 2; ; {
		n := runtime.Callers(skip, pcs[:])
		for _, pc := range pcs[:n] {
			if pc == root {
				return true
			}
		}
		if n < len(pcs) {
			return false
		}
		skip += n
	}
}
