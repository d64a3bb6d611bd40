// Package notify delivers a component's callbacks on a goroutine the
// component owns (router.Assigner, router.Ring and queue.Queue use it), so
// that no callback runs on the goroutine of a host call into the component.
package notify

import (
	"context"
	"sync"
	"sync/atomic"
)

// Notifier delivers a component's callbacks on a goroutine it owns, one at
// a time, in the order they were posted, so that a callback never runs on
// the goroutine of a caller that is inside the component (and may hold its
// own locks) and never under the component's lock.
//
// The goroutine is started by the first post while none is running and
// exits as soon as nothing is pending, so an idle component runs no
// goroutine. Posting does not allocate in the steady state: two buffers are
// swapped between the posters and the goroutine.
type Notifier[E any] struct {
	deliver func(E)

	mu      sync.Mutex
	buf     []E           // pending, in post order
	spare   []E           // the goroutine's previous batch, for reuse
	running bool          // a delivery goroutine is live
	done    chan struct{} // closed when the running goroutine exits
	drop    atomic.Bool   // stopped: discard what is pending and what is posted
}

// New returns a Notifier that calls deliver for every posted event.
func New[E any](deliver func(E)) *Notifier[E] {
	return &Notifier[E]{deliver: deliver}
}

// Post queues e for delivery and starts the goroutine if none is running.
// It may be called with the component's lock held (the notifier's lock
// nests inside it) and from a callback. After Stop, e is discarded.
func (n *Notifier[E]) Post(e E) {
	n.mu.Lock()
	if n.drop.Load() {
		n.mu.Unlock()
		return
	}
	n.buf = append(n.buf, e)
	n.startLocked()
	n.mu.Unlock()
}

func (n *Notifier[E]) startLocked() {
	if n.running {
		return
	}
	n.running = true
	n.done = make(chan struct{})
	go n.run(n.done)
}

func (n *Notifier[E]) run(done chan struct{}) {
	defer close(done)
	for {
		n.mu.Lock()
		if len(n.buf) == 0 || n.drop.Load() {
			clear(n.buf)
			n.buf = n.buf[:0]
			n.running = false
			n.mu.Unlock()
			return
		}
		batch := n.buf
		n.buf, n.spare = n.spare[:0], nil
		n.mu.Unlock()
		var zero E
		for i := range batch {
			if !n.drop.Load() {
				n.deliver(batch[i])
			}
			batch[i] = zero
		}
		n.mu.Lock()
		n.spare = batch[:0]
		n.mu.Unlock()
	}
}

// Flush waits until everything posted so far has been delivered (or
// dropped). Tests use it to observe callbacks deterministically.
func (n *Notifier[E]) Flush() {
	for {
		n.mu.Lock()
		if !n.running {
			n.mu.Unlock()
			return
		}
		done := n.done
		n.mu.Unlock()
		<-done
	}
}

// Stop ends delivery: it waits until every pending event has been
// delivered, or until ctx is done, in which case what is still pending is
// discarded and it returns ctx.Err() once the callback running at that
// moment (if any) has returned. Either way nothing is delivered after Stop
// returns, and events posted later are discarded. Stop must not be called
// from a callback (it would wait for itself).
func (n *Notifier[E]) Stop(ctx context.Context) error {
	var err error
	for {
		n.mu.Lock()
		if !n.running {
			n.drop.Store(true)
			clear(n.buf)
			n.buf = n.buf[:0]
			n.mu.Unlock()
			return err
		}
		done := n.done
		n.mu.Unlock()
		if err == nil {
			if err = ctx.Err(); err == nil {
				select {
				case <-done:
					continue
				case <-ctx.Done():
					err = ctx.Err()
				}
			}
		}
		// Given up: drop the rest and wait for the callback in progress.
		n.drop.Store(true)
		<-done
	}
}
