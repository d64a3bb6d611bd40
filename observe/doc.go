// Package observe is Switchboard's bottom floor: Prometheus metrics with the
// Go runtime collectors, a sampled and trace-aware log/slog logger, W3C
// trace-context propagation through the OpenTelemetry API, and one debug/ops
// HTTP handler. It imports no other Switchboard package.
//
// # Model
//
// An *Observer is the shared root that components accept in their Config.
// A nil *Observer is valid everywhere and means "off": its methods return
// nil vectors or a discarding logger, and components are expected to skip
// building their metrics so that hot paths pay one nil-pointer check. Build
// one with New(Config{}) (private registry, namespace "switchboard", JSON
// logs to stderr) or hand it the host's prometheus.Registerer and
// slog.Handler. Several Observers may coexist in a process (tests run
// several nodes); nothing here is a global singleton.
//
// Metrics: Counter, Gauge, Histogram and GaugeFunc create vectors named
// <namespace>_<subsystem>_<name>; components use their package name as the
// subsystem. Asking twice for the same name returns the registered vector,
// so instances can share an Observer. Durations are observed in seconds with
// LatencyBuckets (50 µs to 10 s) by default.
//
// Logging: Logger returns a *slog.Logger whose handler chain is
// SamplingHandler → TraceHandler → Config.LogHandler. The sampler keeps, per
// level, a deterministic fraction of records (defaults DEBUG 0%, INFO 1%,
// WARN 20%, ERROR 100%), but always lets the first FirstN (default 10)
// records of each message text through every second, so a rare line is never
// lost while a hot one is thinned. Sampling state is shared by every logger
// derived with With/WithGroup. Dropping a record allocates nothing and takes
// tens of nanoseconds. TraceHandler adds top-level "trace_id" and "span_id"
// attributes to records logged with a context carrying a span context; use
// the *Context logging methods (InfoContext, LogAttrs) to benefit.
//
// Tracing: the package uses only the OpenTelemetry API, never an SDK; the
// host installs its own TracerProvider if it wants spans recorded.
// ExtractHTTP/InjectHTTP and Extract/Inject move W3C traceparent/tracestate
// between a context and HTTP headers or a message envelope's string map
// (MapCarrier). A malformed traceparent is ignored — the context is returned
// unchanged — and EnsureTrace then starts a fresh random trace ID so that
// logs still correlate. TraceID and SpanID read the IDs back for envelopes
// and logs.
//
// Ops HTTP lives in the subpackage observe/opshttp: opshttp.Handler serves
// /metrics, /debug/pprof/…, /debug/trace?seconds=N (1 ≤ N ≤ 30, one capture
// at a time, 409 while one runs), /healthz and /readyz (503 naming the first
// failing check registered with AddReadyCheck, e.g. while a component
// drains). Serve it on a private listener only. This package does not import
// net/http/pprof; only hosts that import opshttp link pprof. (The standard
// library's expvar, imported by prometheus/client_golang, registers
// /debug/vars on http.DefaultServeMux: never serve DefaultServeMux publicly.)
//
// # Metrics emitted
//
// By observe itself (namespace "switchboard" unless configured):
//
//	switchboard_log_records_dropped_total{level}  counter  records dropped by the sampler; level is debug|info|warn|error
//
// Unless Config.DisableRuntimeCollectors is set, the Go collector with the
// runtime/metrics GC, scheduler and memory families, and the process
// collector. The two histograms behind the runtime dashboard panels are:
//
//	go_sched_latencies_seconds        histogram  time goroutines spend runnable before running (scheduling delay)
//	go_sched_pauses_total_gc_seconds  histogram  stop-the-world pause latencies caused by the GC
//
// e.g. histogram_quantile(0.95, sum by (le) (rate(go_sched_pauses_total_gc_seconds_bucket[5m])))
// is the GC pause P95. The dashboard in dashboards/switchboard.json uses
// these and the component metrics (switchboard_gateway_*, switchboard_queue_*,
// switchboard_sla_*, switchboard_fanout_*).
//
// # Errors
//
//	ErrInvalidConfig  wrapped by New and NewSamplingHandler; the message names the field
//	*NotReadyError    returned by Observer.Ready; Check names the failing check, Unwrap gives its error
//
// New also fails (with an unwrapped registration error) when the
// Registerer already holds a conflicting Go or process collector; set
// DisableRuntimeCollectors then. Counter, Gauge, Histogram and GaugeFunc
// panic on an invalid metric name or on a registration that conflicts with
// an existing one of another type or label set: both are programming errors.
//
// # Endpoints (observe/opshttp)
//
//	GET /metrics                 200 Prometheus exposition
//	    /debug/pprof/…           net/http/pprof
//	GET /debug/trace?seconds=N   200 runtime/trace data; 400 bad N; 405 other methods; 409 capture running
//	    /healthz                 200 "ok"
//	    /readyz                  200 "ok"; 503 "not ready: <check>: <error>"
package observe
