package desk

import (
	"time"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
)

// slaTimer fires an "about to breach" and a "breached" event for one SLA
// clock of one conversation. Stale timers (stopped or replaced) are ignored
// when their event reaches the core.
type slaTimer struct {
	kind        string
	due         time.Time
	warn, fired *time.Timer
}

func (t *slaTimer) stop() {
	if t == nil {
		return
	}
	t.warn.Stop()
	t.fired.Stop()
}

// startSLA starts the clock kind ("first_response" or "next_response") of cv
// with the given target.
func (c *core) startSLA(cv *conv, kind string, target time.Duration) *slaTimer {
	t := &slaTimer{kind: kind, due: time.Now().Add(target)}
	warnAfter := time.Duration(float64(target) * c.cfg.SLAWarnAt)
	t.warn = time.AfterFunc(warnAfter, func() { c.box.post(func() { c.slaEvent(cv, t, "warning") }) })
	t.fired = time.AfterFunc(target, func() { c.box.post(func() { c.slaEvent(cv, t, "breached") }) })
	return t
}

func (c *core) slaEvent(cv *conv, t *slaTimer, status string) {
	if cv.frt != t && cv.nrt != t {
		return // answered in the meantime
	}
	tier := tierNames[cv.tier]
	if m := c.metrics; m != nil {
		if status == "breached" {
			m.slaBreaches.WithLabelValues(tier, t.kind).Inc()
		} else {
			m.slaWarnings.WithLabelValues(tier, t.kind).Inc()
		}
	}
	c.log.Warn("sla "+status, "conv", cv.id, "tier", tier, "kind", t.kind)
	c.toSupervisors(&protocol.Envelope{
		Type: protocol.TypeSLA, Conv: cv.id, Tier: tier, Kind: t.kind, State: status,
		Due: t.due.UnixMilli(), Agent: cv.agent, Customer: cv.customer, Name: cv.custName,
	})
}
