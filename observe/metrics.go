package observe

import (
	"errors"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// LatencyBuckets are the default histogram buckets for durations in seconds:
// 50 µs to 10 s, roughly ×2.5 apart.
var LatencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
	0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
}

// SizeBuckets are default histogram buckets for byte sizes: 64 B to 1 MiB.
var SizeBuckets = prometheus.ExponentialBuckets(64, 4, 8)

var nameRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

func validName(s string) bool { return nameRE.MatchString(s) }

// checkName panics unless subsystem (may be empty) and name are classic
// Prometheus name parts. client_golang accepts UTF-8 names, but Switchboard
// keeps every metric queryable without quoting.
func checkName(subsystem, name string) {
	if (subsystem != "" && !validName(subsystem)) || !validName(name) {
		panic("observe: invalid metric name part: subsystem " + strconv.Quote(subsystem) + ", name " + strconv.Quote(name))
	}
}

// Counter returns a counter vector named namespace_subsystem_name with the
// given label names, registering it on first use. Asking again for the same
// name returns the already registered vector, so several component instances
// can share one Observer. It returns nil on a nil Observer and panics on an
// invalid name or a conflicting registration (a programming error).
func (o *Observer) Counter(subsystem, name, help string, labels ...string) *prometheus.CounterVec {
	if o == nil {
		return nil
	}
	checkName(subsystem, name)
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: o.namespace, Subsystem: subsystem, Name: name, Help: help}, labels)
	return mustRegister(o.reg, c)
}

// Gauge is like Counter for gauges.
func (o *Observer) Gauge(subsystem, name, help string, labels ...string) *prometheus.GaugeVec {
	if o == nil {
		return nil
	}
	checkName(subsystem, name)
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: o.namespace, Subsystem: subsystem, Name: name, Help: help}, labels)
	return mustRegister(o.reg, g)
}

// GaugeFunc registers a gauge whose value is read from fn at scrape time.
// A second registration of the same name is ignored. No-op on a nil Observer.
func (o *Observer) GaugeFunc(subsystem, name, help string, fn func() float64) {
	if o == nil {
		return
	}
	checkName(subsystem, name)
	g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: o.namespace, Subsystem: subsystem, Name: name, Help: help}, fn)
	mustRegister(o.reg, g)
}

// Histogram is like Counter for histograms; nil buckets means LatencyBuckets
// (durations are observed in seconds).
func (o *Observer) Histogram(subsystem, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	if o == nil {
		return nil
	}
	if buckets == nil {
		buckets = LatencyBuckets
	}
	checkName(subsystem, name)
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: o.namespace, Subsystem: subsystem, Name: name, Help: help, Buckets: buckets}, labels)
	return mustRegister(o.reg, h)
}

func mustRegister[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("observe: " + err.Error())
	}
	return c
}

// Since returns the seconds elapsed since t, for Histogram.Observe.
func Since(t time.Time) float64 { return time.Since(t).Seconds() }

// newRuntimeCollector returns the Go collector with the runtime/metrics
// histograms for scheduler latency (/sched/latencies:seconds, exported as
// go_sched_latencies_seconds) and GC pauses (/sched/pauses/total/gc:seconds,
// exported as go_sched_pauses_total_gc_seconds), so that "goroutine
// scheduling delay" and "GC pause P95" are one histogram_quantile each.
func newRuntimeCollector() prometheus.Collector {
	return collectors.NewGoCollector(
		collectors.WithGoCollectorRuntimeMetrics(
			collectors.MetricsGC,
			collectors.MetricsScheduler,
			collectors.MetricsMemory,
		),
	)
}
