package router

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-go/switchboard/observe"
)

// assignKind says how a conversation reached its agent (metric label).
type assignKind uint8

const (
	assignKindAuto      assignKind = iota // the strategy's ordering
	assignKindPreferred                   // the strategy's preferred agent (sticky hit)
	assignKindManual
	assignKindTransfer
)

// assignMetrics holds pre-resolved children; nil when the Observer is nil.
type assignMetrics struct {
	assigned       [4]prometheus.Counter
	noAgent        prometheus.Counter
	offersMade     prometheus.Counter
	offersAccepted prometheus.Counter
	offersDeclined prometheus.Counter
	offersExpired  prometheus.Counter
	offersCanceled prometheus.Counter
	presence       [4]prometheus.Gauge
	capUsed        prometheus.Gauge
	capOnline      prometheus.Gauge
	requeued       prometheus.Counter
	capEvents      prometheus.Counter
	latAssign      prometheus.Observer
	latOffer       prometheus.Observer
}

const assignSubsystem = "router"

func newAssignMetrics(o *observe.Observer, autoLabel, prefLabel string) *assignMetrics {
	if o == nil {
		return nil
	}
	m := &assignMetrics{}
	assigned := o.Counter(assignSubsystem, "assign_total",
		"Conversations assigned, by strategy (the built-in strategy name, sticky, manual or transfer).", "strategy")
	m.assigned[assignKindAuto] = assigned.WithLabelValues(autoLabel)
	m.assigned[assignKindPreferred] = assigned.WithLabelValues(prefLabel)
	m.assigned[assignKindManual] = assigned.WithLabelValues("manual")
	m.assigned[assignKindTransfer] = assigned.WithLabelValues("transfer")
	m.noAgent = o.Counter(assignSubsystem, "assign_no_agent_total",
		"Assign or Offer calls that found no eligible agent.").WithLabelValues()
	offers := o.Counter(assignSubsystem, "offers_total",
		"Offers by outcome: made, accepted, declined, expired (timed out) or canceled (agent offline or removed, conversation released or assigned manually).", "event")
	m.offersMade = offers.WithLabelValues("made")
	m.offersAccepted = offers.WithLabelValues("accepted")
	m.offersDeclined = offers.WithLabelValues("declined")
	m.offersExpired = offers.WithLabelValues("expired")
	m.offersCanceled = offers.WithLabelValues("canceled")
	pres := o.Gauge(assignSubsystem, "agents_by_presence", "Agents known to the assigner, by presence.", "presence")
	for p := range m.presence {
		m.presence[p] = pres.WithLabelValues(Presence(p).String())
	}
	m.capUsed = o.Gauge(assignSubsystem, "agents_capacity_in_use",
		"Conversation slots in use (active plus offered) across all agents.").WithLabelValues()
	m.capOnline = o.Gauge(assignSubsystem, "agents_capacity_online",
		"Sum of the finite capacities of online agents.").WithLabelValues()
	m.requeued = o.Counter(assignSubsystem, "agents_offline_conversations_total",
		"Conversations handed back to the host because their agent went offline.").WithLabelValues()
	m.capEvents = o.Counter(assignSubsystem, "agents_capacity_events_total",
		"Capacity-gain events delivered to OnCapacity.").WithLabelValues()
	lat := o.Histogram(assignSubsystem, "assign_duration_seconds",
		"Time to choose and claim an agent, by operation (assign or offer).", nil, "op")
	m.latAssign = lat.WithLabelValues("assign")
	m.latOffer = lat.WithLabelValues("offer")
	return m
}

// agentSnap is the part of an agent the gauges track.
type agentSnap struct {
	present  bool
	presence Presence
	load     int
	online   int // finite capacity if online
}

func agentSnapOf(g *agentState) agentSnap {
	s := agentSnap{present: true, presence: g.presence, load: g.load.Active + g.load.Reserved}
	if g.presence == Online {
		s.online = g.load.Capacity
	}
	return s
}

// account moves the gauges from pre to post for one agent.
func (m *assignMetrics) account(pre, post agentSnap) {
	if m == nil {
		return
	}
	if pre.present != post.present || pre.presence != post.presence {
		if pre.present {
			m.presence[pre.presence].Dec()
		}
		if post.present {
			m.presence[post.presence].Inc()
		}
	}
	if d := post.load - pre.load; d != 0 {
		m.capUsed.Add(float64(d))
	}
	if d := post.online - pre.online; d != 0 {
		m.capOnline.Add(float64(d))
	}
}
