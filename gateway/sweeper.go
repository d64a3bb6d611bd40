package gateway

import (
	"time"
)

// sweeper advances the coarse clock and, every tick, pings silent
// connections and closes idle or stuck ones. It is the only periodic
// goroutine of the gateway; Shutdown stops it.
func (g *Gateway) sweeper(t Ticker) {
	defer close(g.sweepDone)
	defer t.Stop()
	for {
		select {
		case <-g.sweepStop:
			return
		case <-t.C():
			g.sweep(g.cfg.Clock.Now())
		}
	}
}

// sweep checks every connection once; it runs outside registry locks.
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
