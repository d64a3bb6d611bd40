package observe

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

const (
	validTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	validTraceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	validSpanID      = "00f067aa0ba902b7"
)

func TestTraceRoundTripHTTP(t *testing.T) {
	ctx := EnsureTrace(context.Background())
	id := TraceID(ctx)
	require.Len(t, id, 32)

	h := http.Header{}
	InjectHTTP(ctx, h)
	require.NotEmpty(t, h.Get("Traceparent"))

	got := ExtractHTTP(context.Background(), h)
	assert.Equal(t, id, TraceID(got))
	assert.Equal(t, SpanID(ctx), SpanID(got))
	sc := trace.SpanContextFromContext(got)
	assert.True(t, sc.IsRemote())
	assert.False(t, sc.IsSampled())
	assert.True(t, sc.IsRandom())
}

func TestTraceRoundTripMap(t *testing.T) {
	state, err := trace.ParseTraceState("vendor=abc,other=1")
	require.NoError(t, err)
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: mustTraceID(t, validTraceID), SpanID: mustSpanID(t, validSpanID),
		TraceFlags: trace.FlagsSampled, TraceState: state,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), sc)

	env := MapCarrier{}
	Inject(ctx, env)
	assert.Equal(t, validTraceparent, env[TraceparentKey])
	assert.Equal(t, "vendor=abc,other=1", env[TracestateKey])

	// A plain map[string]string from a decoded envelope works too.
	raw := map[string]string(env)
	got := Extract(context.Background(), propagation.MapCarrier(raw))
	assert.Equal(t, validTraceID, TraceID(got))
	assert.Equal(t, validSpanID, SpanID(got))
	gsc := trace.SpanContextFromContext(got)
	assert.True(t, gsc.IsSampled())
	assert.Equal(t, "abc", gsc.TraceState().Get("vendor"))
}

func TestExtractMalformed(t *testing.T) {
	tests := []struct {
		name        string
		traceparent []string
		tracestate  []string
		wantTraceID string
		wantState   string
	}{
		{name: "absent"},
		{name: "empty", traceparent: []string{""}},
		{name: "garbage", traceparent: []string{"not-a-traceparent"}},
		{name: "short trace id", traceparent: []string{"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"}},
		{name: "upper-case hex", traceparent: []string{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}},
		{name: "zero trace id", traceparent: []string{"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}},
		{name: "zero span id", traceparent: []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"}},
		{name: "version ff", traceparent: []string{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
		{name: "version 00 with extra field", traceparent: []string{validTraceparent + "-extra"}},
		{name: "bad flags", traceparent: []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz"}},
		{name: "wrong delimiters", traceparent: []string{"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"}},
		{name: "huge", traceparent: []string{strings.Repeat("0", 1<<16)}},
		{name: "non-ascii", traceparent: []string{"00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01"}},
		{name: "two traceparent headers", traceparent: []string{validTraceparent, validTraceparent}},
		{name: "valid", traceparent: []string{validTraceparent}, wantTraceID: validTraceID},
		{name: "future version with extra field", traceparent: []string{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"}, wantTraceID: validTraceID},
		{name: "malformed tracestate keeps traceparent", traceparent: []string{validTraceparent}, tracestate: []string{"=,,bad key=1"}, wantTraceID: validTraceID},
		{name: "split tracestate headers combined", traceparent: []string{validTraceparent}, tracestate: []string{"a=1", "b=2"}, wantTraceID: validTraceID, wantState: "a=1,b=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.traceparent {
				h.Add(TraceparentKey, v)
			}
			for _, v := range tt.tracestate {
				h.Add(TracestateKey, v)
			}
			base := context.Background()
			ctx := ExtractHTTP(base, h)
			assert.Equal(t, tt.wantTraceID, TraceID(ctx))
			if tt.wantTraceID == "" {
				assert.Equal(t, base, ctx, "malformed input leaves the context unchanged")
				fresh := EnsureTrace(ctx)
				assert.Len(t, TraceID(fresh), 32, "a new trace starts")
				return
			}
			assert.Same(t, ctx, EnsureTrace(ctx), "an extracted trace is kept")
			if tt.wantState != "" {
				assert.Equal(t, tt.wantState, trace.SpanContextFromContext(ctx).TraceState().String())
			}
		})
	}
}

func TestTraceNilCarriersAndEmptyContext(t *testing.T) {
	ctx := context.Background()
	assert.Equal(t, ctx, Extract(ctx, nil))
	assert.Equal(t, ctx, ExtractHTTP(ctx, nil))
	Inject(EnsureTrace(ctx), nil)
	InjectHTTP(EnsureTrace(ctx), nil)
	h := http.Header{}
	InjectHTTP(ctx, h) // no span: nothing written
	assert.Empty(t, h)
	assert.Equal(t, "", TraceID(ctx))
	assert.Equal(t, "", SpanID(ctx))
	assert.Equal(t, []string{TraceparentKey, TracestateKey}, Propagator().Fields())
}

func TestEnsureTraceIsFreshEachTime(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := TraceID(EnsureTrace(context.Background()))
		require.Len(t, id, 32)
		require.False(t, seen[id], "duplicate trace id %s", id)
		seen[id] = true
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(validTraceparent, "vendor=abc")
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", "")
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", "a=1,b=2")
	f.Add("ff-", "=")
	f.Add("", "x")
	f.Add("00-"+strings.Repeat("f", 32)+"-"+strings.Repeat("f", 16)+"-ff", strings.Repeat("k=v,", 40))
	f.Fuzz(func(t *testing.T, traceparent, tracestate string) {
		base := context.Background()
		h := http.Header{}
		h.Set(TraceparentKey, traceparent)
		h.Set(TracestateKey, tracestate)
		fromHTTP := ExtractHTTP(base, h)
		fromMap := Extract(base, MapCarrier{TraceparentKey: traceparent, TracestateKey: tracestate})
		sc := trace.SpanContextFromContext(fromHTTP)
		require.Equal(t, sc, trace.SpanContextFromContext(fromMap), "HTTP and map carriers agree")
		if !sc.IsValid() {
			require.Equal(t, base, fromHTTP)
			require.Len(t, TraceID(EnsureTrace(fromHTTP)), 32)
			return
		}
		require.True(t, sc.IsRemote())
		// Re-injecting and extracting again is stable.
		out := MapCarrier{}
		Inject(fromHTTP, out)
		again := trace.SpanContextFromContext(Extract(base, out))
		require.Equal(t, sc.TraceID(), again.TraceID())
		require.Equal(t, sc.SpanID(), again.SpanID())
		require.Equal(t, sc.TraceFlags(), again.TraceFlags())
		require.Equal(t, sc.TraceState().String(), again.TraceState().String())
	})
}

func mustTraceID(t *testing.T, s string) trace.TraceID {
	t.Helper()
	id, err := trace.TraceIDFromHex(s)
	require.NoError(t, err)
	return id
}

func mustSpanID(t *testing.T, s string) trace.SpanID {
	t.Helper()
	id, err := trace.SpanIDFromHex(s)
	require.NoError(t, err)
	return id
}
