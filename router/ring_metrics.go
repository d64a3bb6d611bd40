package router

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-go/switchboard/observe"
)

// ringMetrics is built only when RingConfig.Observer is set; every method is
// a no-op on a nil receiver.
type ringMetrics struct {
	name      string
	logger    *slog.Logger
	stripes   *ringStripes
	collector *ringLookupCollector

	changes      map[string]prometheus.Counter
	nodes        prometheus.Gauge
	points       prometheus.Gauge
	rebuild      prometheus.Observer
	movedRatio   prometheus.Observer
	acquires     prometheus.Counter
	overflows    prometheus.Counter
	held         prometheus.Gauge
	memberErrors prometheus.Counter
}

const ringSubsystem = "router"

// ringMovedBuckets are the histogram buckets for the moved key-space share.
var ringMovedBuckets = []float64{0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}

func newRingMetrics(o *observe.Observer, name string) *ringMetrics {
	m := &ringMetrics{name: name, logger: o.Logger().With("component", "router.ring", "ring", name)}
	changes := o.Counter(ringSubsystem, "ring_changes_total", "Ring membership changes applied, by operation (add, remove, weight, members).", "ring", "op")
	m.changes = map[string]prometheus.Counter{}
	for _, op := range []string{"add", "remove", "weight", "members"} {
		m.changes[op] = changes.WithLabelValues(name, op)
	}
	m.nodes = o.Gauge(ringSubsystem, "ring_nodes", "Members in the ring.", "ring").WithLabelValues(name)
	m.points = o.Gauge(ringSubsystem, "ring_points", "Virtual nodes (points) on the ring.", "ring").WithLabelValues(name)
	m.rebuild = o.Histogram(ringSubsystem, "ring_rebuild_seconds", "Time to build and publish a new ring snapshot.", nil, "ring").WithLabelValues(name)
	m.movedRatio = o.Histogram(ringSubsystem, "ring_moved_ratio", "Share of the key space whose owner changed, per membership change.", ringMovedBuckets, "ring").WithLabelValues(name)
	m.acquires = o.Counter(ringSubsystem, "ring_bounded_acquires_total", "Bounded-load acquisitions.", "ring").WithLabelValues(name)
	m.overflows = o.Counter(ringSubsystem, "ring_bounded_overflows_total", "Bounded-load acquisitions placed past the key's owner because it was at capacity.", "ring").WithLabelValues(name)
	m.held = o.Gauge(ringSubsystem, "ring_bounded_held", "Bounded-load units currently acquired and not released.", "ring").WithLabelValues(name)
	m.memberErrors = o.Counter(ringSubsystem, "ring_membership_errors_total", "Member lists rejected by Follow.", "ring").WithLabelValues(name)

	c := &ringLookupCollector{
		desc: prometheus.NewDesc(prometheus.BuildFQName(o.Namespace(), ringSubsystem, "ring_lookups_total"),
			"Ring lookups (Lookup, LookupBytes, LookupN, AppendLookupN).", []string{"ring"}, nil),
		live:    map[*ringStripes]string{},
		retired: map[string]uint64{},
	}
	if err := o.Registerer().Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		existing, ok := (*ringLookupCollector)(nil), false
		if errors.As(err, &are) {
			existing, ok = are.ExistingCollector.(*ringLookupCollector)
		}
		if !ok {
			m.logger.Error("ring lookups metric not registered", "err", err)
			return m
		}
		c = existing
	}
	m.collector = c
	m.stripes = new(ringStripes)
	c.attach(m.stripes, name)
	return m
}

func (m *ringMetrics) setShape(s *ringSnapshot) {
	if m == nil {
		return
	}
	m.nodes.Set(float64(len(s.nodes)))
	m.points.Set(float64(len(s.points)))
}

func (m *ringMetrics) rebuilt(op string, s *ringSnapshot, start time.Time) {
	m.rebuild.Observe(observe.Since(start))
	m.changes[op].Inc()
	m.setShape(s)
	m.logger.Info("ring membership changed", "op", op, "version", s.version, "nodes", len(s.nodes))
}

func (m *ringMetrics) moved(ch RingChange) {
	if m == nil {
		return
	}
	m.movedRatio.Observe(ch.MovedFraction)
}

func (m *ringMetrics) acquired(overflow bool, held int) {
	if m == nil {
		return
	}
	m.acquires.Inc()
	if overflow {
		m.overflows.Inc()
	}
	m.held.Set(float64(held))
}

func (m *ringMetrics) released(held int) {
	if m == nil {
		return
	}
	m.held.Set(float64(held))
}

func (m *ringMetrics) memberError(err error) {
	if m == nil {
		return
	}
	m.memberErrors.Inc()
	m.logger.Warn("member list rejected", "err", err)
}

func (m *ringMetrics) close() {
	if m == nil || m.collector == nil {
		return
	}
	m.collector.detach(m.stripes)
}

// ringStripes counts lookups without a shared hot word: a per-thread random
// number (math/rand/v2's runtime source, lock-free) picks one of 64
// cache-line-sized counters, so parallel lookups rarely touch the same line,
// even when they all look up the same hot key.
type ringStripes [64]struct {
	n atomic.Uint64
	_ [56]byte
}

func (s *ringStripes) inc() { s[rand.Uint32()&63].n.Add(1) }

func (s *ringStripes) sum() uint64 {
	var t uint64
	for i := range s {
		t += s[i].n.Load()
	}
	return t
}

// ringLookupCollector exports ring_lookups_total for every ring sharing an
// Observer, summed by ring name. Closed rings are folded into retired so the
// counter never goes backwards.
type ringLookupCollector struct {
	desc    *prometheus.Desc
	mu      sync.Mutex
	live    map[*ringStripes]string
	retired map[string]uint64
}

func (c *ringLookupCollector) attach(s *ringStripes, name string) {
	c.mu.Lock()
	c.live[s] = name
	c.mu.Unlock()
}

func (c *ringLookupCollector) detach(s *ringStripes) {
	c.mu.Lock()
	if name, ok := c.live[s]; ok {
		c.retired[name] += s.sum()
		delete(c.live, s)
	}
	c.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (c *ringLookupCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *ringLookupCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	sums := make(map[string]uint64, len(c.retired)+len(c.live))
	for name, v := range c.retired {
		sums[name] += v
	}
	for s, name := range c.live {
		sums[name] += s.sum()
	}
	c.mu.Unlock()
	for name, v := range sums {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v), name)
	}
}
