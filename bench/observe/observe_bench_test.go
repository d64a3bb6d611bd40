// Package observebench compares the cost of a log record dropped by
// observe's SamplingHandler with the same record handled unsampled by the
// same inner handler (slog's JSON handler writing to io.Discard), and with
// slog's own level filter as the floor.
package observebench

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/switchboard-go/switchboard/observe"
)

const msg = "message routed to agent"

func inner() slog.Handler {
	return slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug})
}

func dropped() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dropped_total", Help: "h"}, []string{"level"})
}

// sampled returns a SamplingHandler with the default rates whose first-N
// budget for msg is already spent, so DEBUG records take the drop path.
func sampled(b *testing.B) (*observe.SamplingHandler, *prometheus.CounterVec) {
	d := dropped()
	h, err := observe.NewSamplingHandler(inner(), observe.SamplingConfig{}, d)
	if err != nil {
		b.Fatal(err)
	}
	return h, d
}

func prebuilt(level slog.Level) slog.Record {
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.AddAttrs(slog.String("conversation", "c-42"), slog.Int("tier", 1))
	return r
}

func exhaust(b *testing.B, h slog.Handler, r slog.Record) {
	for range observe.DefaultFirstN + 1 {
		if err := h.Handle(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandle calls Handle directly with a prebuilt DEBUG record.
func BenchmarkHandle(b *testing.B) {
	ctx := context.Background()
	r := prebuilt(slog.LevelDebug)
	b.Run("impl=sampled-drop", func(b *testing.B) {
		h, d := sampled(b)
		exhaust(b, h, r)
		before := count(b, d.WithLabelValues("debug"))
		b.ReportAllocs()
		for b.Loop() {
			_ = h.Handle(ctx, r)
		}
		if got := count(b, d.WithLabelValues("debug")) - before; got != float64(b.N) {
			b.Fatalf("dropped %v records, want %d", got, b.N)
		}
	})
	b.Run("impl=unsampled", func(b *testing.B) {
		h := inner()
		b.ReportAllocs()
		for b.Loop() {
			_ = h.Handle(ctx, r)
		}
	})
}

// BenchmarkLogAttrs logs through slog.Logger.LogAttrs, which adds the
// Logger's own costs (Enabled, time.Now, caller PC, Record construction).
func BenchmarkLogAttrs(b *testing.B) {
	ctx := context.Background()
	logAll := func(b *testing.B, l *slog.Logger, level slog.Level) {
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(ctx, level, msg, slog.String("conversation", "c-42"), slog.Int("tier", 1))
		}
	}
	b.Run("impl=sampled-drop", func(b *testing.B) {
		h, _ := sampled(b)
		exhaust(b, h, prebuilt(slog.LevelDebug))
		logAll(b, slog.New(h), slog.LevelDebug)
	})
	b.Run("impl=sampled-info1pct", func(b *testing.B) {
		// INFO at the default 1%: 99 of 100 records take the drop path.
		h, _ := sampled(b)
		exhaust(b, h, prebuilt(slog.LevelInfo))
		logAll(b, slog.New(h), slog.LevelInfo)
	})
	b.Run("impl=observer-drop", func(b *testing.B) {
		// The full Observer chain: sampler → trace handler → JSON.
		o, err := observe.New(observe.Config{DisableRuntimeCollectors: true, LogHandler: inner()})
		if err != nil {
			b.Fatal(err)
		}
		l := o.Logger()
		for range observe.DefaultFirstN + 1 {
			l.LogAttrs(ctx, slog.LevelDebug, msg)
		}
		logAll(b, l, slog.LevelDebug)
	})
	b.Run("impl=unsampled", func(b *testing.B) {
		logAll(b, slog.New(inner()), slog.LevelDebug)
	})
	b.Run("impl=noop-handler", func(b *testing.B) {
		// slog.Logger's own cost for an enabled record (caller PC,
		// time.Now, Record construction) with a handler that does nothing.
		logAll(b, slog.New(noop{}), slog.LevelDebug)
	})
	b.Run("impl=level-disabled", func(b *testing.B) {
		// Floor: slog's Enabled check rejects the level before a Record exists.
		l := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
		logAll(b, l, slog.LevelDebug)
	})
}

// BenchmarkHandleParallel drops one hot message from all Ps at once.
func BenchmarkHandleParallel(b *testing.B) {
	ctx := context.Background()
	r := prebuilt(slog.LevelDebug)
	b.Run("impl=sampled-drop", func(b *testing.B) {
		h, _ := sampled(b)
		exhaust(b, h, r)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = h.Handle(ctx, r)
			}
		})
	})
	b.Run("impl=unsampled", func(b *testing.B) {
		h := inner()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = h.Handle(ctx, r)
			}
		})
	})
}

func count(b *testing.B, c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		b.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// noop is an enabled handler that does nothing.
type noop struct{}

func (noop) Enabled(context.Context, slog.Level) bool  { return true }
func (noop) Handle(context.Context, slog.Record) error { return nil }
func (n noop) WithAttrs([]slog.Attr) slog.Handler      { return n }
func (n noop) WithGroup(string) slog.Handler           { return n }
