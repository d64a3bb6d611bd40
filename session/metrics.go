package session

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-go/switchboard/observe"
)

// storeMetrics exports a store's per-shard counters. The hot paths only bump
// uncontended per-shard atomics under the shard lock; the sums are computed
// when Prometheus scrapes.
type storeMetrics struct {
	reg       prometheus.Registerer
	collector prometheus.Collector
}

type collectFunc struct {
	descs   []*prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c *collectFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collectFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

func newStoreMetrics[K comparable, V any](o *observe.Observer, name string, s *Store[K, V]) (*storeMetrics, error) {
	labels := prometheus.Labels{"store": name}
	fq := func(n string) string { return prometheus.BuildFQName(o.Namespace(), "session", n) }
	hits := prometheus.NewDesc(fq("hits_total"), "Store lookups (Get) that found a live entry.", nil, labels)
	misses := prometheus.NewDesc(fq("misses_total"), "Store lookups (Get) that found nothing or an expired entry.", nil, labels)
	evictions := prometheus.NewDesc(fq("evictions_total"), "Entries that left the store or were replaced, by reason (capacity, expired, deleted, replaced).", []string{"reason"}, labels)
	entries := prometheus.NewDesc(fq("entries"), "Entries held, including expired ones not yet removed by the janitor.", nil, labels)
	c := &collectFunc{descs: []*prometheus.Desc{hits, misses, evictions, entries}}
	c.collect = func(ch chan<- prometheus.Metric) {
		var h, m uint64
		var ev [numReasons]uint64
		for i := range s.shards {
			st := &s.shards[i].stats
			h += st.hits.Load()
			m += st.misses.Load()
			for r := range ev {
				ev[r] += st.evictions[r].Load()
			}
		}
		ch <- prometheus.MustNewConstMetric(hits, prometheus.CounterValue, float64(h))
		ch <- prometheus.MustNewConstMetric(misses, prometheus.CounterValue, float64(m))
		for r := Capacity; int(r) < numReasons; r++ {
			ch <- prometheus.MustNewConstMetric(evictions, prometheus.CounterValue, float64(ev[r]), r.String())
		}
		ch <- prometheus.MustNewConstMetric(entries, prometheus.GaugeValue, float64(s.Len()))
	}
	reg := o.Registerer()
	if err := reg.Register(c); err != nil {
		return nil, err
	}
	return &storeMetrics{reg: reg, collector: c}, nil
}

func (m *storeMetrics) unregister() { m.reg.Unregister(m.collector) }
