package observe

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Default sampling rates, per level.
const (
	DefaultDebugRate = 0.0
	DefaultInfoRate  = 0.01
	DefaultWarnRate  = 0.20
	DefaultErrorRate = 1.0
	// DefaultFirstN records of each distinct message text pass every second
	// regardless of the level's rate.
	DefaultFirstN = 10
)

// Rate is a sampling probability in [0, 1]. It is a pointer field in
// SamplingConfig so that 0 ("drop all") differs from unset ("default").
type Rate = *float64

// R returns a Rate for use in SamplingConfig, e.g. Info: observe.R(0.05).
func R(p float64) Rate { return &p }

// SamplingConfig sets the sampling of a SamplingHandler. Nil rates take the
// defaults: DEBUG 0%, INFO 1%, WARN 20%, ERROR 100%. Sampling is
// deterministic: with rate p, exactly ⌊n·p⌋ of the first n records of a level
// that are not let through by the first-N rule pass.
type SamplingConfig struct {
	Debug, Info, Warn, Error Rate
	// FirstN records of each message text (per level bucket) pass per second
	// before the rates apply, so a rare line is never lost. 0 means
	// DefaultFirstN; negative disables the rule.
	FirstN int
	// Disabled turns sampling off entirely (every record passes).
	Disabled bool
	// Now is the clock used for the per-second window; default time.Now.
	Now func() time.Time
}

const (
	lvlDebug = iota
	lvlInfo
	lvlWarn
	lvlError
	numLevels
)

var levelNames = [numLevels]string{"debug", "info", "warn", "error"}

func levelIndex(l slog.Level) int {
	switch {
	case l < slog.LevelInfo:
		return lvlDebug
	case l < slog.LevelWarn:
		return lvlInfo
	case l < slog.LevelError:
		return lvlWarn
	default:
		return lvlError
	}
}

const firstNSlots = 4096 // power of two

type firstSlot struct {
	window atomic.Int64 // unix second of the current window
	count  atomic.Int64
}

// samplerState is shared by a SamplingHandler and every handler derived from
// it with WithAttrs/WithGroup, so rates hold across derived loggers.
type samplerState struct {
	disabled bool
	firstN   int64
	// rate as a fraction num/den with den = 1<<20, so the check is integer only.
	num     [numLevels]uint64
	seen    [numLevels]atomic.Uint64
	dropped [numLevels]prometheus.Counter
	seed    maphash.Seed
	now     func() time.Time
	slots   [numLevels][firstNSlots]firstSlot
}

const rateDen = 1 << 20

// SamplingHandler is a slog.Handler that samples records by level before
// passing them to the next handler. Dropping a record takes no allocation and
// no lock. It is safe for concurrent use.
type SamplingHandler struct {
	next slog.Handler
	st   *samplerState
}

// NewSamplingHandler wraps next. dropped, when non-nil, is a counter vector
// with one label ("level") that counts dropped records.
func NewSamplingHandler(next slog.Handler, cfg SamplingConfig, dropped *prometheus.CounterVec) (*SamplingHandler, error) {
	if next == nil {
		return nil, fmt.Errorf("%w: nil next handler", ErrInvalidConfig)
	}
	st := &samplerState{disabled: cfg.Disabled, seed: maphash.MakeSeed(), now: cfg.Now}
	if st.now == nil {
		st.now = time.Now
	}
	switch {
	case cfg.FirstN == 0:
		st.firstN = DefaultFirstN
	case cfg.FirstN > 0:
		st.firstN = int64(cfg.FirstN)
	}
	rates := [numLevels]Rate{cfg.Debug, cfg.Info, cfg.Warn, cfg.Error}
	defaults := [numLevels]float64{DefaultDebugRate, DefaultInfoRate, DefaultWarnRate, DefaultErrorRate}
	for i := range rates {
		p := defaults[i]
		if rates[i] != nil {
			p = *rates[i]
		}
		if p < 0 || p > 1 || p != p {
			return nil, fmt.Errorf("%w: Sampling.%s rate %v outside [0,1]", ErrInvalidConfig, levelNames[i], p)
		}
		st.num[i] = uint64(p * rateDen)
		if dropped != nil {
			st.dropped[i] = dropped.WithLabelValues(levelNames[i])
		}
	}
	return &SamplingHandler{next: next, st: st}, nil
}

// Enabled reports whether the next handler handles level.
func (h *SamplingHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes r to the next handler if it is sampled in, otherwise counts
// it as dropped and returns nil.
func (h *SamplingHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.st.keep(r.Level, r.Message, r.Time) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (st *samplerState) keep(level slog.Level, msg string, t time.Time) bool {
	if st.disabled {
		return true
	}
	li := levelIndex(level)
	if st.firstN > 0 {
		if t.IsZero() {
			t = st.now()
		}
		sec := t.Unix()
		slot := &st.slots[li][maphash.String(st.seed, msg)&(firstNSlots-1)]
		w := slot.window.Load()
		if w != sec && slot.window.CompareAndSwap(w, sec) {
			slot.count.Store(0)
		}
		if slot.count.Add(1) <= st.firstN {
			return true
		}
	}
	num := st.num[li]
	if num >= rateDen {
		return true
	}
	if num > 0 {
		// Deterministic: record n passes when ⌊n·p⌋ increases.
		n := st.seen[li].Add(1)
		if (n*num)/rateDen != ((n-1)*num)/rateDen {
			return true
		}
	}
	if c := st.dropped[li]; c != nil {
		c.Inc()
	}
	return false
}

// WithAttrs returns a handler with attrs added that shares this handler's
// sampling state.
func (h *SamplingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &SamplingHandler{next: h.next.WithAttrs(attrs), st: h.st}
}

// WithGroup returns a handler with the group opened that shares this
// handler's sampling state.
func (h *SamplingHandler) WithGroup(name string) slog.Handler {
	return &SamplingHandler{next: h.next.WithGroup(name), st: h.st}
}
