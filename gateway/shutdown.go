package gateway

import (
	"context"
	"time"
)

// pollerStartGrace is the minimum engine uptime before Shutdown stops it.
const pollerStartGrace = 200 * time.Millisecond

// Shutdown drains the gateway: the readiness check fails at once, the own
// listeners stop accepting and new handshakes (also through ServeHTTP) are
// refused with 503; open connections are closed with 1001 in batches of
// Config.DrainBatch every Config.DrainInterval; Shutdown then waits until
// every connection is released (OnClose returned) and stops the engine, the
// sweeper and the executor (waiting for running handlers). It returns nil
// when all is released, or ctx.Err() when ctx ends first, after forcing the
// remaining connections closed. Calling it again returns nil at once.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	prev := g.state.Load()
	if prev == gwDraining || prev == gwStopped {
		g.mu.Unlock()
		return nil
	}
	g.state.Store(gwDraining)
	listeners := g.listeners
	g.mu.Unlock()
	if prev == gwNew {
		g.state.Store(gwStopped)
		return nil
	}
	for _, l := range listeners {
		l.close()
	}
	for _, l := range listeners {
		<-l.done // the accept goroutine has handed its last connection to nbhttp
	}
	g.handshake.Wait()

	err := g.drain(ctx)

	close(g.sweepStop)
	<-g.sweepDone
	// nbio v1.6.8's poller resets its shutdown flag when its goroutine
	// first runs, so stopping an engine whose pollers have not been
	// scheduled yet hangs forever. Give a just-started engine time to
	// schedule them.
	if d := pollerStartGrace - time.Since(g.startedAt); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	stopped := make(chan struct{})
	go func() {
		// engine.Stop waits for the event loops, and with InlineHandlers a
		// loop may be inside a handler; exec.shutdown waits for the
		// executor's handlers.
		g.engine.Stop()
		g.exec.shutdown()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		// A handler is stuck; the goroutine ends when it returns.
		err = ctx.Err()
	}
	// Connections whose close job never ran (the engine was stopped under
	// a cancelled ctx) are released here, so every context is cancelled
	// and OnClose runs once.
	g.reg.rangeAll(func(c *Conn) bool {
		g.release(c, nil, err == nil)
		return true
	})
	nbioLogs.pop(g.logRoute)
	g.state.Store(gwStopped)
	return err
}

// drain closes connections with 1001 in paced batches and waits until the
// registry is empty or ctx ends.
func (g *Gateway) drain(ctx context.Context) error {
	batch := 0
	var pause *time.Timer
	defer func() {
		if pause != nil {
			pause.Stop()
		}
	}()
	var err error
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
				err = ctx.Err()
				return false
			}
		}
		if c.closeWith(CloseGoingAway, "server shutting down", false) {
			batch++
		}
		return true
	})
	if err != nil {
		return err
	}
	for g.reg.n.Load() > 0 {
		select {
		case <-g.emptied:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
