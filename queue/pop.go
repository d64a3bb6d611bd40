package queue

import (
	"context"
	"sync/atomic"
	"time"
)

// event is one callback for the queue's delivery goroutine: a deadline
// action (kind, item) or, when ups is non-nil, a batch of positions.
type event[T any] struct {
	kind Action
	item Item[T]
	ups  []PositionUpdate
}

type takeResult[T any] struct {
	item   Item[T]
	ok     bool
	again  bool    // an item was dropped: release wake, then take again
	wake   *waiter // a PushWait caller to release
	waitNs int64
}

// takeLocked hands out the next item by quota and EDF, applying deadline
// actions to expired fronts first (their callbacks are queued for the
// delivery goroutine). It returns early, with again set, after dropping an
// item so that the caller releases a PushWait caller before taking again.
func (q *Queue[T]) takeLocked(now int64) (r takeResult[T]) {
	for {
		ti := q.pickLocked()
		if ti < 0 {
			return r
		}
		t := &q.tiers[ti]
		idx := t.at(0)
		n := &q.nodes[idx]
		if n.dl < now && !n.escalated {
			dropped, handOut := q.expireLocked(ti, 0, idx, now)
			if !handOut {
				if dropped {
					r.wake = q.nextSpaceWaiterLocked(ti)
					r.again = true
					return r
				}
				continue
			}
		}
		// Charge the tier's quota and hand the front out.
		q.vt = t.pass
		t.pass += t.stride
		r.item = q.itemLocked(idx)
		r.ok = true
		r.waitNs = now - n.enq
		q.removeLocked(ti, 0)
		t.stats.Popped++
		q.freeLocked(idx)
		if m := q.m; m != nil {
			m.wait[ti].Observe(float64(r.waitNs) / 1e9)
		}
		q.positionsChangedLocked()
		r.wake = q.nextSpaceWaiterLocked(ti)
		return r
	}
}

// expireLocked applies tier ti's deadline action to the expired node idx at
// rank pos and queues its callback. handOut reports that the node stays
// (escalated) at its place; dropped that it was removed and freed.
func (q *Queue[T]) expireLocked(ti, pos int, idx int32, now int64) (dropped, handOut bool) {
	t := &q.tiers[ti]
	n := &q.nodes[idx]
	action := t.cfg.OnDeadline
	if action == RetryOnce && n.retried {
		action = Drop
	}
	switch action {
	case Escalate:
		n.escalated = true
		t.stats.Escalated++
		q.m.action(ti, Escalate)
		if q.cfg.OnEscalate != nil {
			q.notes.Post(event[T]{kind: Escalate, item: q.itemLocked(idx)})
		}
		return false, true
	case RetryOnce:
		n.retried = true
		n.dl = now + t.maxWait
		t.stats.Retried++
		q.m.action(ti, RetryOnce)
		q.removeLocked(ti, pos)
		q.count++ // removeLocked counted a departure; the item stays
		q.insertLocked(ti, idx)
		if q.cfg.EagerDeadlines && (!q.dlArmed || n.dl < q.dlArmedAt) {
			q.armDeadlineLocked(n.dl, now)
		}
		q.positionsChangedLocked()
		if q.cfg.OnRetry != nil {
			q.notes.Post(event[T]{kind: RetryOnce, item: q.itemLocked(idx)})
		}
		return false, false
	default: // Drop
		t.stats.Dropped++
		t.stats.Abandoned++
		q.m.action(ti, Drop)
		if q.cfg.OnDrop != nil {
			q.notes.Post(event[T]{kind: Drop, item: q.itemLocked(idx)})
		}
		q.removeLocked(ti, pos)
		q.freeLocked(idx)
		q.positionsChangedLocked()
		return true, false
	}
}

// deliver runs one callback on the delivery goroutine.
func (q *Queue[T]) deliver(ev event[T]) {
	if ev.ups != nil {
		q.cfg.OnPosition(ev.ups)
		return
	}
	switch ev.kind {
	case Escalate:
		q.cfg.OnEscalate(ev.item)
	case Drop:
		q.cfg.OnDrop(ev.item)
	case RetryOnce:
		q.cfg.OnRetry(ev.item)
	}
}

// TryPop hands out the next item without blocking; ok is false when the queue
// is empty. Deadline actions for expired items are applied first; their
// callbacks are queued for the queue's delivery goroutine, not run by
// TryPop. It allocates nothing in steady state unless a deadline callback
// is queued.
func (q *Queue[T]) TryPop() (Item[T], bool) {
	for {
		now := q.nanotime()
		q.mu.Lock()
		r := q.takeLocked(now)
		q.mu.Unlock()
		r.wake.wake()
		if r.ok {
			return r.item, true
		}
		if !r.again {
			return Item[T]{}, false
		}
	}
}

// Pop blocks until an item is available and hands it out by quota and EDF,
// applying deadline actions before handing anything out. It returns ctx.Err()
// when ctx is done first, and ErrClosed once the queue is closed and empty.
// A parked Pop costs no CPU; it allocates nothing in steady state.
func (q *Queue[T]) Pop(ctx context.Context) (Item[T], error) {
	w := q.waiters.Get().(*waiter)
	it, _, err := q.pop(ctx, w, 0, nil)
	q.waiters.Put(w)
	return it, err
}

// pop is Pop with a caller-owned waiter and an optional stop flag (Pool
// shutdown). A Pool worker passes prevStart, the hand-out time of the task it
// just finished (0 for none): the first clock read here ends that task, so
// its service time is recorded under the same lock without another read. It
// returns the hand-out time of the item.
func (q *Queue[T]) pop(ctx context.Context, w *waiter, prevStart int64, stop *atomic.Bool) (Item[T], int64, error) {
	for {
		now := q.nanotime()
		q.mu.Lock()
		if w.woken {
			w.woken = false
			q.waking--
		}
		if prevStart != 0 {
			if d := now - prevStart; d >= 0 {
				q.recordServiceLocked(d)
			}
			prevStart = 0
		}
		if stop != nil && stop.Load() {
			q.mu.Unlock()
			return Item[T]{}, 0, context.Canceled
		}
		r := q.takeLocked(now)
		if r.ok || r.again {
			q.mu.Unlock()
			r.wake.wake()
			if r.ok {
				return r.item, now, nil
			}
			continue
		}
		if q.closed {
			q.mu.Unlock()
			return Item[T]{}, 0, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			q.mu.Unlock()
			return Item[T]{}, 0, err
		}
		w.queued = true
		q.popWaiters = append(q.popWaiters, w)
		q.mu.Unlock()
		w.parks++
		select {
		case <-w.ch:
		case <-ctx.Done():
			q.mu.Lock()
			if w.queued {
				removeWaiter(&q.popWaiters, w)
				q.mu.Unlock()
			} else {
				// Woken concurrently with cancellation: pass the wake-up on.
				if w.woken {
					w.woken = false
					q.waking--
				}
				next := q.wakePopperLocked()
				q.mu.Unlock()
				next.wake()
			}
			select {
			case <-w.ch:
			default:
			}
			return Item[T]{}, 0, ctx.Err()
		}
	}
}

// armDeadlineLocked (re)arms the eager deadline timer for absolute time at.
func (q *Queue[T]) armDeadlineLocked(at, now int64) {
	if q.closed {
		return
	}
	d := time.Duration(at - now)
	if d < 0 {
		d = 0
	}
	d += time.Nanosecond // fire strictly after the deadline
	q.dlArmed, q.dlArmedAt = true, at
	if q.dlTimer == nil {
		q.dlTimer = time.AfterFunc(d, q.onDeadlineTimer)
	} else {
		q.dlTimer.Reset(d)
	}
}

// onDeadlineTimer applies deadline actions to every expired item (eager
// mode), then re-arms for the next deadline.
func (q *Queue[T]) onDeadlineTimer() {
	now := q.nanotime()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.dlArmed = false
	var wake []*waiter
	next := int64(0)
	for ti := range q.tiers {
		t := &q.tiers[ti]
		for pos := 0; pos < t.len(); {
			idx := t.at(pos)
			n := &q.nodes[idx]
			if n.escalated {
				pos++
				continue
			}
			if n.dl >= now {
				if next == 0 || n.dl < next {
					next = n.dl
				}
				break
			}
			_, stays := q.expireLocked(ti, pos, idx, now)
			if stays {
				pos++
			} else if w := q.nextSpaceWaiterLocked(ti); w != nil {
				wake = append(wake, w)
			}
		}
	}
	if next != 0 && (!q.dlArmed || next < q.dlArmedAt) {
		q.armDeadlineLocked(next, now)
	}
	q.mu.Unlock()
	for _, w := range wake {
		w.wake()
	}
}
