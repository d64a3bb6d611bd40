package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/switchboard-go/switchboard/internal/lifetime"
)

// pollerStartGrace is the minimum engine uptime before Shutdown stops it.
const pollerStartGrace = 200 * time.Millisecond

// Ready reports whether the gateway serves, for a readiness check such as
// /readyz: nil between Start and the beginning of Shutdown or Close;
// otherwise ErrNotStarted before Start, ErrDraining while Shutdown drains
// and ErrClosed once the gateway stopped (or a Start failed). It does not
// block. With Config.Observer the same check is registered as the
// readiness check named Config.Name.
func (g *Gateway) Ready() error {
	switch g.state.Load() {
	case gwRunning:
		return nil
	case gwNew:
		return ErrNotStarted
	case gwDraining:
		return ErrDraining
	}
	return ErrClosed
}

// Shutdown drains the gateway and stops it: Ready fails at once, the own
// listeners stop accepting and new handshakes (also through ServeHTTP) are
// refused with 503; Shutdown waits for the handshakes in progress, closes
// the open connections with 1001 in batches of Config.DrainBatch every
// Config.DrainInterval and waits until every one is released (its OnClose
// and bound resources done). It then stops the sweeper, the engine and the
// executor.
//
// If ctx ends first, Shutdown stops draining: it cancels the context of
// every remaining connection, closes them at once (a 1001 close frame, best
// effort, then TCP), drops the messages not yet handed to OnMessage, and
// releases them (OnClose, bound resources) on the executor. It does not
// wait for peers past ctx, but it does wait for callbacks that are already
// running to return — it cannot stop them — so a callback that blocks for
// good blocks Shutdown; callbacks should watch Conn.Context. When Shutdown
// returns, no goroutine of the gateway runs and no callback starts again.
//
// Shutdown returns nil if it stopped the gateway before ctx ended, else
// ctx.Err(). It is idempotent: a call during or after another one waits
// for the gateway to stop in the same way (its own ctx ending cuts the
// drain short too). It must not be called from a callback, nor while
// holding a lock a callback takes, since it waits for the callbacks.
// Shutdown on a gateway never started returns nil at once.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	first := false
	switch g.state.Load() {
	case gwNew:
		g.setStoppedLocked()
	case gwRunning:
		g.state.Store(gwDraining)
		first = true
	}
	listeners := g.listeners
	g.mu.Unlock()
	if first {
		return g.stop(ctx, listeners)
	}
	select {
	case <-g.stopped:
		return nil
	case <-ctx.Done():
	}
	g.hurryUp()
	<-g.stopped
	return ctx.Err()
}

// Close stops the gateway at once: it is Shutdown with an already cancelled
// context (no drain pacing, no waiting for peers' close frames), and
// returns when the gateway has stopped, after the callbacks already running
// have returned. During a Shutdown it cuts the drain short. It is
// idempotent and returns nil.
func (g *Gateway) Close() error {
	ctx := lifetime.Canceled() // Close is Shutdown with a context already done
	if err := g.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// setStoppedLocked marks the gateway stopped; g.mu is held.
func (g *Gateway) setStoppedLocked() {
	g.state.Store(gwStopped)
	select {
	case <-g.stopped:
	default:
		close(g.stopped)
	}
}

// hurryUp tells the Shutdown in progress to stop draining.
func (g *Gateway) hurryUp() { g.hurryOnce.Do(func() { close(g.hurry) }) }

// stop is the first Shutdown's work; see Shutdown.
func (g *Gateway) stop(ctx context.Context, listeners []*listener) error {
	for _, l := range listeners {
		l.close()
	}
	for _, l := range listeners {
		<-l.done // the accept goroutine has handed its last connection to nbhttp
	}
	// Handshakes in progress run Authenticate and OnOpen; wait for them
	// like for any running callback (a mounted one also queues its close).
	g.handshake.Wait()

	err := g.drain(ctx)
	if g.reg.n.Load() > 0 {
		g.forceClose()
	}

	g.stopSweeper()
	// nbio v1.6.8's poller resets its shutdown flag when its goroutine
	// first runs, so stopping an engine whose pollers have not been
	// scheduled yet hangs forever. Give a just-started engine time to
	// schedule them, whatever ctx says: the wait is short and bounded.
	if d := pollerStartGrace - time.Since(g.startedAt); d > 0 {
		t := time.NewTimer(d)
		<-t.C
	}
	// engine.Stop closes every connection left and waits for the event
	// loops (with InlineHandlers a loop may be inside a handler); nbio
	// queues each connection's close job on the executor before it
	// returns. exec.shutdown then runs the jobs queued (releasing the
	// connections: OnClose, bound resources) and waits for the workers.
	g.engine.Stop()
	// A connection whose close job is still queued (behind a handler that
	// is running) or that nbio did not report closed is released on the
	// executor too, through its own job list so that OnClose never
	// overlaps its OnMessage; finalize is idempotent.
	g.reg.rangeAll(func(c *Conn) bool {
		c.nbc.MustExecute(func() { g.finalize(c, nil) })
		return true
	})
	g.exec.shutdown()
	nbioLogs.pop(g.logRoute)
	g.mu.Lock()
	g.setStoppedLocked()
	g.mu.Unlock()
	return err
}

// drain closes connections with 1001 in paced batches and waits until the
// registry is empty. It returns ctx.Err() as soon as ctx ends (and tells
// other Shutdown calls), and nil when the registry is empty or another
// call's context ended (Close).
func (g *Gateway) drain(ctx context.Context) error {
	// done reports whether to stop draining, with the error to return.
	done := func() (bool, error) {
		select {
		case <-ctx.Done():
			g.hurryUp()
			return true, ctx.Err()
		case <-g.hurry:
			return true, nil
		default:
			return false, nil
		}
	}
	if stop, err := done(); stop {
		return err
	}
	batch := 0
	var pause *time.Timer
	defer func() {
		if pause != nil {
			pause.Stop()
		}
	}()
	var err error
	stopped := false
	g.reg.rangeAll(func(c *Conn) bool {
		if batch == g.cfg.DrainBatch {
			batch = 0
			if pause == nil {
				pause = time.NewTimer(g.cfg.DrainInterval)
			} else {
				pause.Reset(g.cfg.DrainInterval)
			}
			select {
			case <-pause.C:
			case <-ctx.Done():
			case <-g.hurry:
			}
			if stopped, err = done(); stopped {
				return false
			}
		}
		if c.closeWith(CloseGoingAway, "server shutting down", false) {
			batch++
		}
		return true
	})
	if stopped {
		return err
	}
	for g.reg.n.Load() > 0 {
		select {
		case <-g.emptied:
		case <-ctx.Done():
		case <-g.hurry:
		}
		if stop, err := done(); stop {
			return err
		}
	}
	return nil
}

// forceClose ends every remaining connection at once: its context is
// cancelled (so handlers that watch it return), no further message reaches
// OnMessage, a 1001 close frame is sent if it fits and TCP is dropped.
// nbio then queues the connections' close jobs.
func (g *Gateway) forceClose() {
	g.reg.rangeAll(func(c *Conn) bool {
		c.cancelContext()
		if !c.closeWith(CloseGoingAway, "server shutting down", true) {
			_ = c.nbc.Close() // closing already: do not wait for the peer
		}
		return true
	})
}
