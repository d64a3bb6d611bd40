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
	if t.warn != nil {
		t.warn.Stop()
	}
	t.fired.Stop()
}

// startSLA starts the clock kind ("first_response" or "next_response") of cv,
// due at due. The warning fires at SLAWarnAt of the target; when a rebuilt
// clock's warning time has already passed it is not sent again, and a clock
// already past due fires its breach at once.
func (c *core) startSLA(cv *conv, kind string, due time.Time) *slaTimer {
	target := c.cfg.Tiers[cv.rec.Tier].FirstResponse
	if kind == "next_response" {
		target = c.cfg.Tiers[cv.rec.Tier].NextResponse
	}
	t := &slaTimer{kind: kind, due: due}
	now := time.Now()
	warnAt := due.Add(-time.Duration(float64(target) * (1 - c.cfg.SLAWarnAt)))
	if warnAt.After(now) {
		t.warn = time.AfterFunc(warnAt.Sub(now), func() { c.box.post(func() { c.slaEvent(cv, t, "warning") }) })
	}
	t.fired = time.AfterFunc(max(0, due.Sub(now)), func() { c.box.post(func() { c.slaEvent(cv, t, "breached") }) })
	return t
}

func (c *core) slaEvent(cv *conv, t *slaTimer, status string) {
	if cv.frt != t && cv.nrt != t {
		return // answered in the meantime
	}
	tier := tierNames[cv.rec.Tier]
	if m := c.metrics; m != nil {
		if status == "breached" {
			m.slaBreaches.WithLabelValues(tier, t.kind).Inc()
		} else {
			m.slaWarnings.WithLabelValues(tier, t.kind).Inc()
		}
	}
	c.log.Warn("sla "+status, "conv", cv.id(), "tier", tier, "kind", t.kind)
	c.toSupervisors(&protocol.Envelope{
		Type: protocol.TypeSLA, Conv: cv.id(), Tier: tier, Kind: t.kind, State: status,
		Due: t.due.UnixMilli(), Agent: cv.rec.Conversation.Assignee, Customer: cv.rec.Customer, Name: cv.rec.CustomerName,
	})
}
