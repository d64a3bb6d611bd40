package observe

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// W3C trace-context field names, as used in HTTP headers and in message
// envelopes.
const (
	TraceparentKey = "traceparent"
	TracestateKey  = "tracestate"
)

// MapCarrier carries trace context in a message envelope's string map (for
// example the headers of a queued task or a fan-out message). Keys are the
// lower-case W3C names "traceparent" and "tracestate". It is the
// OpenTelemetry propagation.MapCarrier, so either name can be used.
type MapCarrier = propagation.MapCarrier

// propagator is the W3C Trace Context propagator. It is stateless, so one
// value serves every Observer; no global OpenTelemetry state is read or set.
var propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Propagator returns the W3C Trace Context propagator used by Extract and
// Inject, for hosts that want to compose it with others (for example
// propagation.NewCompositeTextMapPropagator(observe.Propagator(),
// propagation.Baggage{})).
func Propagator() propagation.TextMapPropagator { return propagator }

// Extract returns ctx with the remote span context read from carrier's
// "traceparent" and "tracestate" fields. A missing or malformed traceparent
// is ignored and ctx is returned unchanged (call EnsureTrace to start a new
// trace then); a malformed tracestate is dropped while a valid traceparent is
// kept, as the W3C specification requires. Extract never panics on any
// input. A nil carrier returns ctx.
func Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	if carrier == nil {
		return ctx
	}
	return propagator.Extract(ctx, carrier)
}

// Inject writes ctx's span context into carrier as "traceparent" (and
// "tracestate" when non-empty). It does nothing when ctx carries no valid
// span context or carrier is nil.
func Inject(ctx context.Context, carrier propagation.TextMapCarrier) {
	if carrier == nil {
		return
	}
	propagator.Inject(ctx, carrier)
}

// ExtractHTTP is Extract for HTTP request headers. Following the W3C
// specification, a request with more than one traceparent header is treated
// as having none, and several tracestate headers are combined in order.
func ExtractHTTP(ctx context.Context, h http.Header) context.Context {
	if h == nil {
		return ctx
	}
	return propagator.Extract(ctx, httpCarrier(h))
}

// InjectHTTP is Inject for HTTP headers (request headers of an outgoing call,
// or response headers). Existing traceparent/tracestate values are replaced.
func InjectHTTP(ctx context.Context, h http.Header) {
	if h == nil {
		return
	}
	propagator.Inject(ctx, propagation.HeaderCarrier(h))
}

// httpCarrier reads W3C fields from http.Header with the specification's
// rules for repeated headers.
type httpCarrier http.Header

func (c httpCarrier) Get(key string) string {
	vs := http.Header(c).Values(key)
	switch {
	case len(vs) == 0:
		return ""
	case len(vs) == 1:
		return vs[0]
	case strings.EqualFold(key, TracestateKey):
		return strings.Join(vs, ",")
	default: // several traceparent headers: invalid
		return ""
	}
}

func (c httpCarrier) Set(key, value string) { http.Header(c).Set(key, value) }

func (c httpCarrier) Keys() []string { return propagation.HeaderCarrier(c).Keys() }

// TraceID returns the hex trace ID of ctx's span context, or "" when ctx
// carries none.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}

// SpanID returns the hex span ID of ctx's span context, or "" when ctx
// carries none.
func SpanID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.SpanID().String()
	}
	return ""
}

// EnsureTrace returns ctx unchanged when it already carries a valid span
// context; otherwise it returns ctx with a new local span context made of a
// fresh random trace ID and span ID, so that logs and downstream messages
// correlate even when the host installed no tracer. The new span context is
// not sampled (nothing records it) and carries the W3C "random" flag. With a
// tracer installed, prefer starting a real span on the extracted context;
// note that a parent-based sampler honours the unsampled flag of a span
// context made here. It is safe for concurrent use and allocates only when
// it starts a trace.
func EnsureTrace(ctx context.Context) context.Context {
	if trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	return trace.ContextWithSpanContext(ctx, NewSpanContext())
}

// NewSpanContext returns a valid, local, unsampled span context with a fresh
// random trace ID and span ID (math/rand/v2's ChaCha8 generator; never all
// zeros).
func NewSpanContext() trace.SpanContext {
	var cfg trace.SpanContextConfig
	for !cfg.TraceID.IsValid() {
		binary.BigEndian.PutUint64(cfg.TraceID[:8], rand.Uint64())
		binary.BigEndian.PutUint64(cfg.TraceID[8:], rand.Uint64())
	}
	for !cfg.SpanID.IsValid() {
		binary.BigEndian.PutUint64(cfg.SpanID[:], rand.Uint64())
	}
	cfg.TraceFlags = trace.FlagsRandom
	return trace.NewSpanContext(cfg)
}
