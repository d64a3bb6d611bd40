package observe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeClock is a settable clock for SamplingConfig.Now.
type fakeClock struct{ sec atomic.Int64 }

func (c *fakeClock) now() time.Time { return time.Unix(c.sec.Load(), 0) }

func newDropped() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped_total", Help: "h"}, []string{"level"})
}

func record(level slog.Level, msg string) slog.Record {
	return slog.NewRecord(time.Unix(1_000, 0), level, msg, 0)
}

func TestSamplerDefaultRatesDeterministic(t *testing.T) {
	const n = 10_000
	tests := []struct {
		level slog.Level
		want  int
	}{
		{slog.LevelDebug, 0},
		{slog.LevelInfo, n / 100},
		{slog.LevelWarn, n / 5},
		{slog.LevelError, n},
		{slog.LevelError + 4, n}, // above ERROR counts as ERROR
		{slog.LevelInfo + 2, n / 100},
	}
	for _, tt := range tests {
		t.Run(tt.level.String(), func(t *testing.T) {
			rec := &recorder{}
			dropped := newDropped()
			h, err := NewSamplingHandler(rec, SamplingConfig{FirstN: -1}, dropped)
			require.NoError(t, err)
			for i := range n {
				require.NoError(t, h.Handle(context.Background(), record(tt.level, fmt.Sprint("m", i%7))))
			}
			assert.Equal(t, tt.want, rec.len())
			lvl := levelNames[levelIndex(tt.level)]
			assert.Equal(t, float64(n-tt.want), testutil.ToFloat64(dropped.WithLabelValues(lvl)))
		})
	}
}

// With rate p exactly ⌊k·p⌋ of the first k records pass, for every k.
func TestSamplerRatePrefixExact(t *testing.T) {
	for _, p := range []float64{0.01, 0.2, 1.0 / 3, 0.999999, 0.5, 0.000001} {
		rec := &recorder{}
		h, err := NewSamplingHandler(rec, SamplingConfig{Info: R(p), FirstN: -1}, nil)
		require.NoError(t, err)
		num := int(p*rateDen + 0.5)
		for k := 1; k <= 3000; k++ {
			require.NoError(t, h.Handle(context.Background(), record(slog.LevelInfo, "x")))
			require.Equal(t, k*num/rateDen, rec.len(), "p=%v after %d records", p, k)
		}
	}
}

func TestSamplerRatesExactUnderConcurrency(t *testing.T) {
	rec := &recorder{}
	dropped := newDropped()
	h, err := NewSamplingHandler(rec, SamplingConfig{FirstN: -1, Warn: R(0.25)}, dropped)
	require.NoError(t, err)
	const workers, each = 8, 2_500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				_ = h.Handle(context.Background(), record(slog.LevelWarn, fmt.Sprint("w", w, i)))
			}
		})
	}
	wg.Wait()
	assert.Equal(t, workers*each/4, rec.len())
	assert.Equal(t, float64(workers*each*3/4), testutil.ToFloat64(dropped.WithLabelValues("warn")))
}

func TestSamplerDisabledAndZeroRates(t *testing.T) {
	rec := &recorder{}
	h, err := NewSamplingHandler(rec, SamplingConfig{Disabled: true}, nil)
	require.NoError(t, err)
	for range 50 {
		_ = h.Handle(context.Background(), record(slog.LevelDebug, "d"))
	}
	assert.Equal(t, 50, rec.len())

	rec = &recorder{}
	h, err = NewSamplingHandler(rec, SamplingConfig{FirstN: -1, Error: R(0), Info: R(1)}, nil)
	require.NoError(t, err)
	_ = h.Handle(context.Background(), record(slog.LevelError, "e"))
	_ = h.Handle(context.Background(), record(slog.LevelInfo, "i"))
	require.Equal(t, 1, rec.len())
	assert.Equal(t, "i", rec.recs[0].Message)

	_, err = NewSamplingHandler(nil, SamplingConfig{}, nil)
	assert.ErrorIs(t, err, ErrInvalidConfig)
}

// distinctSlot returns a message whose first-N slot differs from every slot
// in taken, so tests never depend on hash collisions of the random seed.
func distinctSlot(t *testing.T, h *SamplingHandler, prefix string, taken map[uint64]bool) string {
	t.Helper()
	for i := 0; ; i++ {
		m := fmt.Sprint(prefix, i)
		s := slotOf(h, m)
		if !taken[s] {
			taken[s] = true
			return m
		}
	}
}

func slotOf(h *SamplingHandler, msg string) uint64 {
	return hashSlot(h.st.seed, msg)
}

func TestSamplerFirstNPerSecond(t *testing.T) {
	clk := &fakeClock{}
	clk.sec.Store(1_000)
	rec := &recorder{}
	dropped := newDropped()
	h, err := NewSamplingHandler(rec, SamplingConfig{Info: R(0), FirstN: 3, Now: clk.now}, dropped)
	require.NoError(t, err)
	taken := map[uint64]bool{}
	a := distinctSlot(t, h, "rare a ", taken)
	b := distinctSlot(t, h, "rare b ", taken)
	ctx := context.Background()
	passed := func() map[string]int { // INFO records passed, by text
		m := map[string]int{}
		for _, r := range rec.recs {
			if r.Level == slog.LevelInfo {
				m[r.Message]++
			}
		}
		return m
	}

	for range 5 {
		_ = h.Handle(ctx, record(slog.LevelInfo, a))
	}
	for range 2 {
		_ = h.Handle(ctx, record(slog.LevelInfo, b))
	}
	assert.Equal(t, map[string]int{a: 3, b: 2}, passed(), "first 3 of each text per second")
	assert.Equal(t, 2.0, testutil.ToFloat64(dropped.WithLabelValues("info")))

	// The same text at another level has its own budget.
	for range 4 {
		_ = h.Handle(ctx, record(slog.LevelDebug, a))
	}
	assert.Equal(t, 3, len(rec.recs)-5)

	// Next second: a fresh budget.
	clk.sec.Add(1)
	for range 4 {
		_ = h.Handle(ctx, record(slog.LevelInfo, a))
	}
	assert.Equal(t, 6, passed()[a])
	assert.Equal(t, 3.0, testutil.ToFloat64(dropped.WithLabelValues("info")))
	assert.Equal(t, 1.0, testutil.ToFloat64(dropped.WithLabelValues("debug")))
}

func TestSamplerFirstNUsesRecordTime(t *testing.T) {
	rec := &recorder{}
	h, err := NewSamplingHandler(rec, SamplingConfig{Info: R(0), FirstN: 2}, nil)
	require.NoError(t, err)
	ctx := context.Background()
	at := func(sec int64) slog.Record { return slog.NewRecord(time.Unix(sec, 0), slog.LevelInfo, "m", 0) }
	for range 3 {
		_ = h.Handle(ctx, at(50))
	}
	assert.Equal(t, 2, rec.len())
	for range 3 {
		_ = h.Handle(ctx, at(51))
	}
	assert.Equal(t, 4, rec.len())
	// A late record (older second) counts against the current window.
	_ = h.Handle(ctx, at(50))
	assert.Equal(t, 4, rec.len())
	// Zero time falls back to the wall clock: a fresh window.
	_ = h.Handle(ctx, slog.NewRecord(time.Time{}, slog.LevelInfo, "m", 0))
	assert.Equal(t, 5, rec.len())
}

func TestSamplerFirstNThenRate(t *testing.T) {
	clk := &fakeClock{}
	clk.sec.Store(7)
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	o, err := New(Config{Registerer: reg, DisableRuntimeCollectors: true, LogHandler: rec, Sampling: SamplingConfig{Now: clk.now}})
	require.NoError(t, err)
	for range 1_000 {
		o.Logger().Info("hot path")
	}
	// 10 by first-N, then ⌊990·1%⌋ = 9 by rate.
	assert.Equal(t, 19, rec.len())
	dropped := o.Counter("log", "records_dropped_total", "Log records dropped by the sampler, by level.", "level")
	assert.Equal(t, 981.0, testutil.ToFloat64(dropped.WithLabelValues("info")))
	assert.Equal(t, 0.0, testutil.ToFloat64(dropped.WithLabelValues("error")))
	n, err := testutil.GatherAndCount(reg, "switchboard_log_records_dropped_total")
	require.NoError(t, err)
	assert.Equal(t, 4, n, "one series per level, present from the start")
}

func TestSamplerWithAttrsAndGroupShareSampling(t *testing.T) {
	var buf bytes.Buffer
	clk := &fakeClock{}
	h, err := NewSamplingHandler(slog.NewJSONHandler(&buf, nil), SamplingConfig{FirstN: -1, Info: R(0.1), Now: clk.now}, nil)
	require.NoError(t, err)
	base := slog.New(h)
	loggers := []*slog.Logger{
		base,
		base.With("conn", 7),
		base.WithGroup("req").With("id", "r1"),
	}
	assert.Same(t, h, base.WithGroup("").Handler())
	assert.Same(t, h, h.WithAttrs(nil))
	for i := range 400 {
		loggers[i%len(loggers)].Info("tick", "i", i)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 40, "10% across all derived loggers together")
	var sawConn, sawGroup bool
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		if m["conn"] == 7.0 {
			sawConn = true
		}
		if g, ok := m["req"].(map[string]any); ok {
			assert.Equal(t, "r1", g["id"])
			assert.Contains(t, g, "i")
			sawGroup = true
		}
	}
	assert.True(t, sawConn, "WithAttrs attributes are kept")
	assert.True(t, sawGroup, "WithGroup nests attributes")
}

func TestSamplerDropAllocsNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	h, err := NewSamplingHandler(slog.NewJSONHandler(io.Discard, nil), SamplingConfig{}, newDropped())
	require.NoError(t, err)
	r := record(slog.LevelDebug, "dropped debug line")
	ctx := context.Background()
	for range 20 { // use up the first-N budget
		_ = h.Handle(ctx, r)
	}
	assert.Zero(t, testing.AllocsPerRun(1000, func() { _ = h.Handle(ctx, r) }))

	logger := slog.New(h).With("conn", 1)
	assert.Zero(t, testing.AllocsPerRun(1000, func() {
		logger.LogAttrs(ctx, slog.LevelDebug, "dropped debug line", slog.Int("n", 1), slog.String("k", "v"))
	}))
}

func BenchmarkSamplingHandlerDrop(b *testing.B) {
	h, err := NewSamplingHandler(slog.NewJSONHandler(io.Discard, nil), SamplingConfig{}, newDropped())
	require.NoError(b, err)
	r := record(slog.LevelDebug, "dropped debug line")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = h.Handle(ctx, r)
	}
}

func BenchmarkSamplingHandlerDropParallel(b *testing.B) {
	h, err := NewSamplingHandler(slog.NewJSONHandler(io.Discard, nil), SamplingConfig{}, newDropped())
	require.NoError(b, err)
	r := record(slog.LevelInfo, "dropped info line")
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = h.Handle(ctx, r)
		}
	})
}

// The rate counter is reduced modulo rateDen; the pass pattern must not
// skip or double a pass across that boundary, however many records came first.
func TestSamplerRateAcrossCounterPeriods(t *testing.T) {
	for _, start := range []uint64{rateDen - 50, 3*rateDen - 7, 1 << 50} {
		rec := &recorder{}
		h, err := NewSamplingHandler(rec, SamplingConfig{Info: R(0.01), FirstN: -1}, nil)
		require.NoError(t, err)
		h.st.levels[lvlInfo].seen.Store(start)
		for range 1000 {
			_ = h.Handle(context.Background(), record(slog.LevelInfo, "x"))
		}
		assert.Equal(t, 10, rec.len(), "start %d", start)
	}
}
