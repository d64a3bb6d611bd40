package observe

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a slog.Handler that keeps every record it receives.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }
func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.recs)
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"bad namespace", Config{Namespace: "switch-board"}, "Namespace"},
		{"negative ready timeout", Config{ReadyTimeout: -1}, "ReadyTimeout"},
		{"rate above one", Config{Sampling: SamplingConfig{Info: R(1.5)}}, "Sampling.Info"},
		{"negative rate", Config{Sampling: SamplingConfig{Warn: R(-0.1)}}, "Sampling.Warn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := New(tt.cfg)
			require.Error(t, err)
			assert.Nil(t, o)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.field)
		})
	}
}

func TestNewDefaults(t *testing.T) {
	o, err := New(Config{})
	require.NoError(t, err)
	assert.Equal(t, DefaultNamespace, o.Namespace())
	assert.NotNil(t, o.Registerer())
	assert.NotNil(t, o.Gatherer())
	assert.NotNil(t, o.Logger())
	assert.Equal(t, DefaultReadyTimeout, o.readyTimeout)
	require.NoError(t, o.Ready(context.Background()))
}

func TestNewConflictingRuntimeCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(collectors.NewGoCollector())) // the host's own Go collector
	_, err := New(Config{Registerer: reg})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "DisableRuntimeCollectors")

	o, err := New(Config{Registerer: reg, DisableRuntimeCollectors: true})
	require.NoError(t, err)
	assert.Same(t, prometheus.Gatherer(reg), o.Gatherer())
}

func TestTwoObserversShareRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := New(Config{Registerer: reg})
	require.NoError(t, err)
	b, err := New(Config{Registerer: reg})
	require.NoError(t, err, "a second Observer on the same registry reuses its collectors")
	ca := a.Counter("queue", "tasks_total", "Tasks.", "tier")
	cb := b.Counter("queue", "tasks_total", "Tasks.", "tier")
	assert.Same(t, ca, cb)
}

func TestNilObserver(t *testing.T) {
	var o *Observer
	assert.Nil(t, o.Counter("x", "y_total", "h"))
	assert.Nil(t, o.Gauge("x", "y", "h"))
	assert.Nil(t, o.Histogram("x", "y_seconds", "h", nil))
	o.GaugeFunc("x", "z", "h", func() float64 { return 1 })
	o.AddReadyCheck("c", func(context.Context) error { return errors.New("no") })
	o.RemoveReadyCheck("c")
	assert.NoError(t, o.Ready(context.Background()))
	assert.Nil(t, o.Registerer())
	assert.Nil(t, o.Gatherer())
	assert.Equal(t, "", o.Namespace())
	require.NotNil(t, o.Logger())
	o.Logger().Error("discarded")
	assert.Equal(t, DefaultReadyTimeout, o.ReadyTimeout())
}

func TestMetricHelpersReuseAndName(t *testing.T) {
	o, err := New(Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	h1 := o.Histogram("queue", "wait_seconds", "Wait.", nil, "tier")
	h2 := o.Histogram("queue", "wait_seconds", "Wait.", nil, "tier")
	assert.Same(t, h1, h2)
	h1.WithLabelValues("p0").Observe(0.001)
	o.GaugeFunc("session", "live", "Live sessions.", func() float64 { return 7 })
	o.GaugeFunc("session", "live", "Live sessions.", func() float64 { return 8 }) // ignored
	mfs, err := o.Gatherer().Gather()
	require.NoError(t, err)
	names := map[string]float64{}
	for _, mf := range mfs {
		names[mf.GetName()] = 0
		if mf.GetName() == "switchboard_session_live" {
			names[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		}
		if mf.GetName() == "switchboard_queue_wait_seconds" {
			assert.Len(t, mf.GetMetric()[0].GetHistogram().GetBucket(), len(LatencyBuckets))
		}
	}
	assert.Contains(t, names, "switchboard_queue_wait_seconds")
	assert.Equal(t, 7.0, names["switchboard_session_live"])
	assert.Panics(t, func() { o.Gauge("queue", "wait_seconds", "Conflicting type.", "tier") })
	assert.Panics(t, func() { o.Counter("bad-subsystem", "x_total", "h") })
}

func TestReadyOrderRemoveAndPanic(t *testing.T) {
	o, err := New(Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	errA := errors.New("a down")
	o.AddReadyCheck("a", func(context.Context) error { return errA })
	o.AddReadyCheck("b", func(context.Context) error { panic("boom") })
	err = o.Ready(context.Background())
	var nr *NotReadyError
	require.ErrorAs(t, err, &nr)
	assert.Equal(t, "a", nr.Check)
	assert.ErrorIs(t, err, errA)
	assert.Equal(t, "observe: not ready: a: a down", err.Error())

	o.RemoveReadyCheck("a")
	err = o.Ready(context.Background())
	require.ErrorAs(t, err, &nr)
	assert.Equal(t, "b", nr.Check)
	assert.Contains(t, err.Error(), "panicked: boom")

	o.AddReadyCheck("b", func(context.Context) error { return nil }) // replace keeps position
	o.RemoveReadyCheck("missing")
	assert.NoError(t, o.Ready(context.Background()))
}

func newTestObserver(t *testing.T, cfg Config) *Observer {
	t.Helper()
	if cfg.LogHandler == nil {
		cfg.LogHandler = &recorder{}
	}
	o, err := New(cfg)
	require.NoError(t, err)
	return o
}

// TestNoDefaultServeMuxRegistration: importing observe (as every component
// does) must not register pprof or metrics on http.DefaultServeMux.
// (/debug/vars is registered by the standard library's expvar, which
// prometheus/client_golang imports; it is documented in the package doc.)
func TestNoDefaultServeMuxRegistration(t *testing.T) {
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/profile", "/metrics"} {
		_, pattern := http.DefaultServeMux.Handler(httptest.NewRequest(http.MethodGet, p, nil))
		assert.Empty(t, pattern, "%s is registered on http.DefaultServeMux", p)
	}
}
