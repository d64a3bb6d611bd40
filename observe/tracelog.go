package observe

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys added by TraceHandler.
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// TraceHandler wraps next so that records logged with a context carrying a
// valid span context (a span from the host's tracer, one extracted with
// Extract/ExtractHTTP, or one made by EnsureTrace) get trace_id and span_id
// attributes, as lower-case hex. The attributes are always at the top level
// of the record, also when the logger has groups open, so that log pipelines
// find them in one place. Records without a span pass through untouched and
// without allocation. The handler is safe for concurrent use.
func TraceHandler(next slog.Handler) slog.Handler { return &traceHandler{next: next, root: next} }

// traceHandler keeps, next to the fully derived handler, the handler as it
// was before the first WithGroup (root) and the derivations made since
// (ops). A record with a span under open groups is handled by replaying ops
// on root.WithAttrs(trace attrs), which keeps the trace attrs top-level; that
// costs allocations only on that (already sampled-in) path.
type traceHandler struct {
	next slog.Handler
	root slog.Handler
	ops  []handlerOp
}

type handlerOp struct {
	group string      // non-empty: WithGroup(group)
	attrs []slog.Attr // otherwise: WithAttrs(attrs)
}

func (h *traceHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		return h.next.Handle(ctx, r)
	}
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.next.Handle(ctx, r)
	}
	ids := [2]slog.Attr{
		slog.String(TraceIDKey, sc.TraceID().String()),
		slog.String(SpanIDKey, sc.SpanID().String()),
	}
	if len(h.ops) == 0 {
		r = r.Clone() // never append into a caller's shared attr array
		r.AddAttrs(ids[:]...)
		return h.next.Handle(ctx, r)
	}
	d := h.root.WithAttrs(ids[:])
	for _, op := range h.ops {
		if op.group != "" {
			d = d.WithGroup(op.group)
		} else {
			d = d.WithAttrs(op.attrs)
		}
	}
	return d.Handle(ctx, r)
}

func (h *traceHandler) WithAttrs(a []slog.Attr) slog.Handler {
	if len(a) == 0 {
		return h
	}
	n := &traceHandler{next: h.next.WithAttrs(a)}
	if len(h.ops) == 0 {
		n.root = n.next
		return n
	}
	n.root = h.root
	n.ops = append(h.ops[:len(h.ops):len(h.ops)], handlerOp{attrs: a})
	return n
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &traceHandler{
		next: h.next.WithGroup(name),
		root: h.root,
		ops:  append(h.ops[:len(h.ops):len(h.ops)], handlerOp{group: name}),
	}
}
