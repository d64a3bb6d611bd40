package fanout

import (
	"context"
	"time"
)

// sweepLoop runs sweep every Config.SweepInterval until Shutdown.
func (b *Bus) sweepLoop() {
	defer close(b.sweepDone)
	tick := time.NewTicker(b.cfg.SweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-b.stopSweep:
			return
		case <-tick.C:
			b.sweep()
		}
	}
}

// sweep expires presence members and history entries, drops idle topics
// and, with a Broker, unsubscribes topics left without local subscribers
// and asks the broker to expire the presence of topics this node has
// joined or subscribed, one call each, each bounded by
// Config.BrokerTimeout and by the bus's lifetime.
func (b *Bus) sweep() {
	now := time.Now()
	var presence, idle []*topic
	for _, t := range b.topics() {
		if b.broker != nil {
			t.mu.Lock()
			use := t.presenceUse
			t.mu.Unlock()
			n := t.nsubs.Load()
			if use && n > 0 {
				presence = append(presence, t)
			}
			if n == 0 && t.brokerSubbed.Load() {
				idle = append(idle, t)
			}
		} else {
			b.expirePresence(t, now)
		}
		b.maybeDrop(t, now)
	}
	for _, t := range idle {
		b.brokerRelease(t)
	}
	for _, t := range presence {
		ctx, cancel := context.WithTimeout(b.life, b.cfg.BrokerTimeout)
		if _, err := b.broker.Members(ctx, t.name); err != nil && b.life.Err() == nil {
			b.log.Warn("fanout: presence sweep failed", "topic", t.name, "err", err)
		}
		cancel()
	}
}

// maybeDrop removes a topic that has no subscriber, no pending work, no
// presence, no unexpired history and no broker subscription.
func (b *Bus) maybeDrop(t *topic, now time.Time) {
	sh := t.sh
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hist.expire(now)
	if t.removed || t.shut || t.queued || len(t.ops) > 0 || t.nsubs.Load() > 0 ||
		len(t.members) > 0 || t.hist.n > 0 || t.brokerSubbed.Load() {
		return
	}
	if t.histOpts.Size > 0 && now.Sub(t.lastPub) < t.histOpts.TTL {
		return
	}
	t.removed = true
	delete(sh.topics, t.name)
	b.m.topicsDelta(-1)
}
