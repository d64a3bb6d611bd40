// Package observe is Switchboard's bottom floor: Prometheus metrics with the
// Go runtime collectors, a sampled log/slog handler, W3C trace-context
// propagation through the OpenTelemetry API, and one debug/ops HTTP handler
// (/metrics, /debug/pprof, /debug/trace, /healthz, /readyz).
//
// Components accept an optional *Observer; a nil *Observer means "off" and
// costs nothing on hot paths. observe imports no other Switchboard package.
package observe
