package fanout

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-go/switchboard/observe"
)

const subsystem = "fanout"

// metrics holds pre-resolved collectors; a nil *metrics is off and every
// method is a nil check.
type metrics struct {
	topics, subs     prometheus.Gauge
	pubs             prometheus.Counter
	publishFail      prometheus.Counter
	deliveries       prometheus.Counter
	drops            [Disconnect + 1]prometheus.Counter
	recoverOK        prometheus.Counter
	recoverGap       prometheus.Counter
	recoverErr       prometheus.Counter
	resyncs, lostCnt prometheus.Counter
	latency          prometheus.Observer
	joins, leaves    prometheus.Counter
}

func newMetrics(o *observe.Observer, _ *Bus) *metrics {
	if o == nil {
		return nil
	}
	drops := o.Counter(subsystem, "drops_total", "Publications not delivered to a subscriber, by overflow policy (disconnect counts closed subscriptions).", "policy")
	rec := o.Counter(subsystem, "recoveries_total", "Recover calls by result (ok, gap, error).", "result")
	pres := o.Counter(subsystem, "presence_events_total", "Presence events emitted by this node, by kind.", "kind")
	m := &metrics{
		topics:      o.Gauge(subsystem, "topics", "Topics currently held in memory.").WithLabelValues(),
		subs:        o.Gauge(subsystem, "subscribers", "Open subscriptions.").WithLabelValues(),
		pubs:        o.Counter(subsystem, "publications_total", "Publications accepted by Publish.").WithLabelValues(),
		publishFail: o.Counter(subsystem, "publish_errors_total", "Publish calls that failed at the broker.").WithLabelValues(),
		deliveries:  o.Counter(subsystem, "deliveries_total", "Publications handed to subscribers.").WithLabelValues(),
		recoverOK:   rec.WithLabelValues("ok"),
		recoverGap:  rec.WithLabelValues("gap"),
		recoverErr:  rec.WithLabelValues("error"),
		resyncs:     o.Counter(subsystem, "resyncs_total", "Gaps in the broker stream filled from history.").WithLabelValues(),
		lostCnt:     o.Counter(subsystem, "lost_state_total", "Times a topic's subscribers were disconnected with ErrInsufficientState.").WithLabelValues(),
		latency:     o.Histogram(subsystem, "publish_to_deliver_seconds", "Time from publication to the end of its local fan-out.", nil).WithLabelValues(),
		joins:       pres.WithLabelValues("join"),
		leaves:      pres.WithLabelValues("leave"),
	}
	for _, p := range []Policy{DropOldest, DropNewest, Disconnect} {
		m.drops[p] = drops.WithLabelValues(p.String())
	}
	return m
}

func (m *metrics) topicsDelta(d float64) {
	if m != nil {
		m.topics.Add(d)
	}
}

func (m *metrics) subsDelta(d float64) {
	if m != nil {
		m.subs.Add(d)
	}
}

func (m *metrics) published() {
	if m != nil {
		m.pubs.Inc()
	}
}

func (m *metrics) publishFailed() {
	if m != nil {
		m.publishFail.Inc()
	}
}

func (m *metrics) drop(p Policy) {
	if m != nil {
		m.drops[p].Inc()
	}
}

func (m *metrics) delivered(n int, lat time.Duration) {
	if m != nil {
		m.deliveries.Add(float64(n))
		m.latency.Observe(lat.Seconds())
	}
}

func (m *metrics) recovered(err error) {
	if m == nil {
		return
	}
	switch {
	case err == nil:
		m.recoverOK.Inc()
	case isGap(err):
		m.recoverGap.Inc()
	default:
		m.recoverErr.Inc()
	}
}

func (m *metrics) resynced() {
	if m != nil {
		m.resyncs.Inc()
	}
}

func (m *metrics) lost() {
	if m != nil {
		m.lostCnt.Inc()
	}
}

func (m *metrics) presenceEvent(k PresenceKind) {
	if m == nil {
		return
	}
	if k == Join {
		m.joins.Inc()
	} else {
		m.leaves.Inc()
	}
}
