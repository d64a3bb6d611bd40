package fanout

import (
	"context"
	"errors"
	"fmt"

	"github.com/switchboard-go/switchboard/internal/lifetime"
)

// Shutdown stops the bus gracefully. It stops intake at once (Subscribe,
// Publish, presence and recovery calls return ErrClosed; Ready too), stops
// the sweeper, lets the delivery goroutines deliver what was accepted
// before, closes every subscription with ErrShutdown (C closed, Done
// fired; OnDisconnect is not called for it), and shuts the broker down
// with ctx. When ctx ends first it stops waiting: undelivered publications
// are dropped, the broker is closed at once, and Shutdown returns an error
// wrapping ctx.Err() once the bus has stopped.
//
// When Shutdown returns, no goroutine of the bus runs and no callback is
// running or will be called. A callback already running is waited for, so
// do not call Shutdown while holding a lock your callbacks take, nor from a
// callback (it would wait for itself); the same holds for Close. Shutdown
// is idempotent: a later or concurrent call waits for the first to finish
// (hurrying it along if its own ctx ends) and returns the error releasing
// the broker returned, if any.
func (b *Bus) Shutdown(ctx context.Context) error {
	if err := b.shutdown(ctx); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil && b.abandon.Load() {
		return fmt.Errorf("fanout: shutdown: %w", err)
	}
	return nil
}

// Close stops the bus immediately: it is Shutdown with an already-canceled
// context, so publications not yet delivered are dropped, subscriptions
// are closed with ErrShutdown and the broker is closed at once. It waits
// only for callbacks already running. It returns the error releasing the
// broker returned, if any, never a context error. It is idempotent.
func (b *Bus) Close() error { return b.shutdown(lifetime.Canceled()) }

// Ready returns nil while the bus serves. After Shutdown has begun it
// returns ErrClosed; with a Broker that is not ready (for example its Redis
// connection is lost) it returns an error wrapping ErrBrokerUnavailable
// and the broker's own error. It makes no network call and does not block,
// so it can back a readiness probe.
func (b *Bus) Ready() error {
	if b.closed.Load() {
		return ErrClosed
	}
	if b.broker != nil {
		if err := b.broker.Ready(); err != nil {
			return fmt.Errorf("%w: %w", ErrBrokerUnavailable, err)
		}
	}
	return nil
}

// shutdown does the work of Shutdown and Close and returns the error of
// releasing the broker.
func (b *Bus) shutdown(ctx context.Context) error {
	if !b.shutting.CompareAndSwap(false, true) {
		select {
		case <-b.shutDone:
		case <-ctx.Done():
			b.hurryUp()
			<-b.shutDone
		}
		return b.shutErr
	}
	defer close(b.shutDone)
	b.closed.Store(true)
	if ctx.Err() != nil {
		b.hurryUp()
	}
	close(b.stopSweep)
	b.await(ctx, b.sweepDone)
	for _, t := range b.topics() {
		t.mu.Lock()
		if t.shut {
			t.mu.Unlock()
			continue
		}
		t.shut = true
		b.enqueueLocked(t, op{kind: opCloseAll, reason: ErrShutdown})
	}
	close(b.quit)
	b.await(ctx, b.workersDone)
	if b.broker != nil {
		var err error
		if b.abandon.Load() {
			err = b.broker.Close()
		} else if err = b.broker.Shutdown(ctx); err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			b.hurryUp()
			err = nil
		}
		b.shutErr = err
	}
	b.life.Stop()
	return b.shutErr
}

// await waits for done; when ctx ends (or another Shutdown hurries) first,
// it makes the bus stop waiting for deliveries and broker calls, then
// waits for done anyway, which then comes quickly.
func (b *Bus) await(ctx context.Context, done <-chan struct{}) {
	select {
	case <-done:
		return
	case <-ctx.Done():
		b.hurryUp()
	case <-b.hurry:
	}
	<-done
}

// hurryUp switches Shutdown to the immediate path: deliveries are skipped
// and the bus's own broker calls are cancelled.
func (b *Bus) hurryUp() {
	b.hurryOnce.Do(func() {
		b.abandon.Store(true)
		b.life.Stop()
		close(b.hurry)
	})
}
