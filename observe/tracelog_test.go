package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
)

func decodeLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

func TestLogsCarryTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	o, err := New(Config{
		DisableRuntimeCollectors: true,
		LogHandler:               slog.NewJSONHandler(&buf, nil),
		Sampling:                 SamplingConfig{Disabled: true},
	})
	require.NoError(t, err)
	ctx := Extract(context.Background(), MapCarrier{TraceparentKey: validTraceparent})
	log := o.Logger()

	log.InfoContext(ctx, "plain")
	log.With("conn", 3).InfoContext(ctx, "with attrs")
	log.WithGroup("req").With("id", "r1").WithGroup("inner").InfoContext(ctx, "grouped", "k", "v")
	log.InfoContext(context.Background(), "no span")
	// More than slog's five inline attrs, so the record has a shared back array.
	log.LogAttrs(ctx, slog.LevelInfo, "many",
		slog.Int("a", 1), slog.Int("b", 2), slog.Int("c", 3), slog.Int("d", 4), slog.Int("e", 5), slog.Int("f", 6))

	lines := decodeLines(t, &buf)
	require.Len(t, lines, 5)
	for i, m := range lines {
		if m["msg"] == "no span" {
			assert.NotContains(t, m, TraceIDKey)
			assert.NotContains(t, m, SpanIDKey)
			continue
		}
		assert.Equal(t, validTraceID, m[TraceIDKey], "line %d: trace_id is top-level", i)
		assert.Equal(t, validSpanID, m[SpanIDKey], "line %d", i)
		assert.NotContains(t, m, "!BUG")
	}
	grouped := lines[2]
	req := grouped["req"].(map[string]any)
	assert.Equal(t, "r1", req["id"])
	assert.Equal(t, map[string]any{"k": "v"}, req["inner"])
	assert.NotContains(t, req, TraceIDKey)
	assert.Equal(t, 3.0, lines[1]["conn"])
	assert.Equal(t, 6.0, lines[4]["f"])
}

func TestTraceHandlerWithHostSpan(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(TraceHandler(slog.NewJSONHandler(&buf, nil)))
	ctx := EnsureTrace(context.Background())
	sc := trace.SpanContextFromContext(ctx)
	log.InfoContext(ctx, "hello")
	log.Info("no context") // context.Background inside slog
	lines := decodeLines(t, &buf)
	require.Len(t, lines, 2)
	assert.Equal(t, sc.TraceID().String(), lines[0][TraceIDKey])
	assert.Equal(t, sc.SpanID().String(), lines[0][SpanIDKey])
	assert.NotContains(t, lines[1], TraceIDKey)

	h := TraceHandler(slog.NewJSONHandler(&buf, nil))
	assert.Same(t, h, h.WithGroup(""))
	assert.Same(t, h, h.WithAttrs(nil))
	//lint:ignore SA1012 a nil context must not crash the handler
	assert.NoError(t, h.Handle(nil, slog.NewRecord(time.Now(), slog.LevelInfo, "nil ctx", 0)))
}
