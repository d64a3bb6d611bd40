package gateway

import (
	"time"
)

// startSweeper starts the sweeper goroutine; stopSweeper stops it and
// waits for it.
func (g *Gateway) startSweeper() {
	g.sweepStop = make(chan struct{})
	g.sweepDone = make(chan struct{})
	go g.sweeper()
}

func (g *Gateway) stopSweeper() {
	close(g.sweepStop)
	<-g.sweepDone
}

// sweeper advances the coarse clock and, every Config.SweepInterval, pings
// silent connections and closes idle or stuck ones. It is the only periodic
// goroutine of the gateway; Shutdown stops it.
func (g *Gateway) sweeper() {
	defer close(g.sweepDone)
	t := time.NewTicker(g.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-g.sweepStop:
			return
		case now := <-t.C:
			g.sweep(now)
		}
	}
}

// sweep checks every connection once at now, which it also makes the
// coarse clock's time; it runs outside registry locks. Tests of the
// timeouts over real sockets call it with a time of their choosing.
func (g *Gateway) sweep(now time.Time) {
	nowN := now.UnixNano()
	g.now.Store(nowN)
	idle := int64(g.cfg.IdleTimeout)
	ping := int64(g.cfg.PingInterval)
	wto := int64(g.cfg.WriteTimeout)
	if g.ips != nil {
		g.ips.evictIdle(nowN)
	}
	g.reg.rangeAll(func(c *Conn) bool {
		if c.state.Load() != stateOpen {
			return true
		}
		switch silent := nowN - c.lastRead.Load(); {
		case c.queued.Load() > 0 && nowN-c.lastProgress.Load() >= wto:
			c.fail(CloseWriteTimeout, "write timeout")
		case silent >= idle:
			c.closeWith(CloseIdleTimeout, "idle timeout", false)
		case silent >= ping && nowN-c.lastPing.Load() >= ping:
			c.lastPing.Store(nowN)
			if c.write(g.pingFrame, false) == errSlow {
				c.fail(CloseSlowConsumer, "slow consumer")
			}
		}
		return true
	})
}
