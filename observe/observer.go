package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// DefaultNamespace is the metric namespace used when Config.Namespace is empty.
const DefaultNamespace = "switchboard"

// Config configures an Observer. The zero value is usable: a private
// Prometheus registry with runtime and process collectors, namespace
// "switchboard", and a sampled JSON logger writing to stderr.
type Config struct {
	// Registerer receives every collector. Default: a new private
	// prometheus.Registry (also used as Gatherer).
	Registerer prometheus.Registerer
	// Gatherer is what /metrics serves. Default: the Registerer when it is a
	// *prometheus.Registry, otherwise prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Namespace prefixes every metric name. Default "switchboard".
	Namespace string
	// DisableRuntimeCollectors skips the Go runtime and process collectors
	// (useful when the host registers its own). Default false.
	DisableRuntimeCollectors bool
	// LogHandler is the handler that sampled records are passed to.
	// Default: slog.NewJSONHandler(os.Stderr, nil) at level DEBUG.
	LogHandler slog.Handler
	// Sampling sets the per-level log sampling rates and the first-N rule.
	// The zero value means the documented defaults (see SamplingConfig).
	Sampling SamplingConfig
	// ReadyTimeout bounds one /readyz evaluation of all ready checks.
	// Default DefaultReadyTimeout (2 s); negative is invalid.
	ReadyTimeout time.Duration
}

// Observer is the shared observability root that components accept as an
// optional *Observer. A nil *Observer is valid everywhere and means "off":
// its methods return no-op values and components skip their metrics.
// An Observer is safe for concurrent use.
type Observer struct {
	reg       prometheus.Registerer
	gatherer  prometheus.Gatherer
	namespace string
	logger    *slog.Logger
	sampler   *SamplingHandler

	readyTimeout time.Duration

	readyMu sync.RWMutex
	checks  map[string]ReadyCheck
	order   []string
}

// ErrInvalidConfig is wrapped by New when a Config field is invalid.
var ErrInvalidConfig = errors.New("observe: invalid config")

// New builds an Observer from cfg, registering the runtime collectors unless
// disabled. It returns an error wrapping ErrInvalidConfig naming the bad field.
func New(cfg Config) (*Observer, error) {
	o := &Observer{namespace: cfg.Namespace, checks: map[string]ReadyCheck{}, readyTimeout: cfg.ReadyTimeout}
	switch {
	case o.readyTimeout < 0:
		return nil, fmt.Errorf("%w: ReadyTimeout %v is negative", ErrInvalidConfig, cfg.ReadyTimeout)
	case o.readyTimeout == 0:
		o.readyTimeout = DefaultReadyTimeout
	}
	if o.namespace == "" {
		o.namespace = DefaultNamespace
	}
	if !validName(o.namespace) {
		return nil, fmt.Errorf("%w: Namespace %q is not a valid Prometheus name", ErrInvalidConfig, cfg.Namespace)
	}
	o.reg = cfg.Registerer
	o.gatherer = cfg.Gatherer
	if o.reg == nil {
		r := prometheus.NewRegistry()
		o.reg = r
		if o.gatherer == nil {
			o.gatherer = r
		}
	}
	if o.gatherer == nil {
		if g, ok := o.reg.(prometheus.Gatherer); ok {
			o.gatherer = g
		} else {
			o.gatherer = prometheus.DefaultGatherer
		}
	}
	if !cfg.DisableRuntimeCollectors {
		if err := registerOrReuse(o.reg, newRuntimeCollector()); err != nil {
			return nil, fmt.Errorf("observe: register Go runtime collector (set DisableRuntimeCollectors when the Registerer already has one): %w", err)
		}
		if err := registerOrReuse(o.reg, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
			return nil, fmt.Errorf("observe: register process collector (set DisableRuntimeCollectors when the Registerer already has one): %w", err)
		}
	}
	base := cfg.LogHandler
	if base == nil {
		base = slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})
	}
	dropped := o.Counter("log", "records_dropped_total", "Log records dropped by the sampler, by level.", "level")
	s, err := NewSamplingHandler(TraceHandler(base), cfg.Sampling, dropped)
	if err != nil {
		return nil, err
	}
	o.sampler = s
	o.logger = slog.New(s)
	return o, nil
}

func registerOrReuse(reg prometheus.Registerer, c prometheus.Collector) error {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return nil
		}
		return err
	}
	return nil
}

var discardLogger = slog.New(slog.DiscardHandler)

// Logger returns the sampled, trace-aware logger. On a nil Observer it
// returns a logger that discards everything.
func (o *Observer) Logger() *slog.Logger {
	if o == nil {
		return discardLogger
	}
	return o.logger
}

// Registerer returns the registerer metrics are added to (nil on a nil Observer).
func (o *Observer) Registerer() prometheus.Registerer {
	if o == nil {
		return nil
	}
	return o.reg
}

// Gatherer returns what /metrics serves (nil on a nil Observer).
func (o *Observer) Gatherer() prometheus.Gatherer {
	if o == nil {
		return nil
	}
	return o.gatherer
}

// DefaultReadyTimeout bounds one readiness evaluation when
// Config.ReadyTimeout is zero.
const DefaultReadyTimeout = 2 * time.Second

// ReadyTimeout is the bound on one readiness evaluation (Config.ReadyTimeout,
// or DefaultReadyTimeout); DefaultReadyTimeout on a nil Observer.
func (o *Observer) ReadyTimeout() time.Duration {
	if o == nil {
		return DefaultReadyTimeout
	}
	return o.readyTimeout
}

// Namespace returns the metric namespace ("" on a nil Observer).
func (o *Observer) Namespace() string {
	if o == nil {
		return ""
	}
	return o.namespace
}

// ReadyCheck reports whether a component is ready to take traffic; a non-nil
// error means not ready and its text is shown by /readyz.
type ReadyCheck func(ctx context.Context) error

// AddReadyCheck registers (or replaces) the readiness check called name.
// /readyz answers 503 naming the first failing check. No-op on a nil Observer.
func (o *Observer) AddReadyCheck(name string, check ReadyCheck) {
	if o == nil || check == nil {
		return
	}
	o.readyMu.Lock()
	defer o.readyMu.Unlock()
	if _, ok := o.checks[name]; !ok {
		o.order = append(o.order, name)
	}
	o.checks[name] = check
}

// RemoveReadyCheck removes the readiness check called name, if present.
func (o *Observer) RemoveReadyCheck(name string) {
	if o == nil {
		return
	}
	o.readyMu.Lock()
	defer o.readyMu.Unlock()
	if _, ok := o.checks[name]; !ok {
		return
	}
	delete(o.checks, name)
	for i, n := range o.order {
		if n == name {
			o.order = append(o.order[:i], o.order[i+1:]...)
			break
		}
	}
}

// NotReadyError names the readiness check that failed.
type NotReadyError struct {
	Check string
	Err   error
}

// Error returns "observe: not ready: <check>: <cause>".
func (e *NotReadyError) Error() string {
	return "observe: not ready: " + e.Check + ": " + e.Err.Error()
}

// Unwrap returns the check's error.
func (e *NotReadyError) Unwrap() error { return e.Err }

// Ready runs the readiness checks in registration order and returns a
// *NotReadyError for the first that fails, or nil when all pass.
func (o *Observer) Ready(ctx context.Context) error {
	if o == nil {
		return nil
	}
	o.readyMu.RLock()
	names := append([]string(nil), o.order...)
	checks := make([]ReadyCheck, len(names))
	for i, n := range names {
		checks[i] = o.checks[n]
	}
	o.readyMu.RUnlock()
	for i, c := range checks { // checks run outside the lock
		if err := runCheck(ctx, c); err != nil {
			return &NotReadyError{Check: names[i], Err: err}
		}
	}
	return nil
}

// runCheck runs c, turning a panic into an error so that a faulty check
// reports "not ready" instead of failing the probe request.
func runCheck(ctx context.Context, c ReadyCheck) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("check panicked: %v", p)
		}
	}()
	return c(ctx)
}
