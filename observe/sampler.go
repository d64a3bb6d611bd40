package observe

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
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
// defaults: DEBUG 0%, INFO 1%, WARN 20%, ERROR 100%. Rates are rounded to
// the nearest millionth.
//
// Sampling is deterministic, not random: with rate p, exactly ⌊n·p⌋ of the
// first n records of a level that the first-N rule did not already let
// through are passed on (for p = 0.01: the 100th, 200th, … such record).
// Levels are bucketed: below INFO counts as DEBUG, [INFO, WARN) as INFO,
// [WARN, ERROR) as WARN, ERROR and above as ERROR.
type SamplingConfig struct {
	Debug, Info, Warn, Error Rate
	// FirstN records of each message text (per level bucket) pass per second
	// before the rates apply, so a rare line is never lost. 0 means
	// DefaultFirstN; negative disables the rule. Message texts are hashed
	// into 4096 counters per level, so two texts that collide share their
	// budget (as in zap's sampler).
	FirstN int
	// Disabled turns sampling off entirely (every record passes).
	Disabled bool
	// Now is the clock used for the per-second window. When nil the
	// record's own time is used (slog.Logger stamps every record with
	// time.Now), falling back to time.Now for records with a zero time.
	// When set, it is called for every record that reaches the first-N rule.
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

const (
	firstNSlots = 4096 // power of two
	// rateDen is the denominator of the sampling fraction: rates are exact
	// to one millionth, so 1%, 20%, 0.1% … are represented exactly.
	rateDen = 1_000_000
)

// levelState is one level's sampling state, padded to its own cache lines so
// that hot levels do not contend with each other.
type levelState struct {
	seen    atomic.Uint64 // records that reached the rate rule
	num     uint64        // rate numerator over rateDen
	dropped prometheus.Counter
	_       [64 - 8 - 8 - 16]byte
	// slots hold, per message-text hash, the current one-second window
	// (high 32 bits, unix second + 1 so that 0 means empty) and the number of
	// records seen in it (low 32 bits), updated with one atomic word.
	slots [firstNSlots]atomic.Uint64
}

// samplerState is shared by a SamplingHandler and every handler derived from
// it with WithAttrs/WithGroup, so rates hold across derived loggers.
type samplerState struct {
	disabled bool
	firstN   uint64
	seed     maphash.Seed
	now      func() time.Time // nil: use the record's time
	levels   [numLevels]levelState
}

// SamplingHandler is a slog.Handler that samples records by level before
// passing them to the next handler. Dropping a record takes no allocation and
// no lock (a few atomic operations). It is safe for concurrent use.
type SamplingHandler struct {
	next slog.Handler
	st   *samplerState
}

// NewSamplingHandler wraps next. dropped, when non-nil, is a counter vector
// with one label ("level": debug, info, warn, error) that counts dropped
// records. It returns an error wrapping ErrInvalidConfig for a nil next
// handler or a rate outside [0, 1].
func NewSamplingHandler(next slog.Handler, cfg SamplingConfig, dropped *prometheus.CounterVec) (*SamplingHandler, error) {
	if next == nil {
		return nil, fmt.Errorf("%w: nil next handler", ErrInvalidConfig)
	}
	st := &samplerState{disabled: cfg.Disabled, seed: maphash.MakeSeed(), now: cfg.Now}
	switch {
	case cfg.FirstN == 0:
		st.firstN = DefaultFirstN
	case cfg.FirstN > 0:
		st.firstN = uint64(cfg.FirstN)
	}
	rates := [numLevels]Rate{cfg.Debug, cfg.Info, cfg.Warn, cfg.Error}
	defaults := [numLevels]float64{DefaultDebugRate, DefaultInfoRate, DefaultWarnRate, DefaultErrorRate}
	fields := [numLevels]string{"Debug", "Info", "Warn", "Error"}
	for i := range rates {
		p := defaults[i]
		if rates[i] != nil {
			p = *rates[i]
		}
		if !(p >= 0 && p <= 1) { // also rejects NaN
			return nil, fmt.Errorf("%w: Sampling.%s rate %v outside [0,1]", ErrInvalidConfig, fields[i], p)
		}
		st.levels[i].num = uint64(math.Round(p * rateDen))
		if dropped != nil {
			st.levels[i].dropped = dropped.WithLabelValues(levelNames[i])
		}
	}
	return &SamplingHandler{next: next, st: st}, nil
}

// Enabled reports whether the next handler handles level. Sampling happens in
// Handle, because the first-N rule needs the message text.
func (h *SamplingHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle passes r to the next handler if it is sampled in, otherwise counts
// it as dropped and returns nil. The drop path does not allocate.
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
	ls := &st.levels[levelIndex(level)]
	if ls.num >= rateDen {
		return true
	}
	if st.firstN > 0 {
		if st.now != nil {
			t = st.now()
		} else if t.IsZero() {
			t = time.Now()
		}
		if st.firstInWindow(&ls.slots[hashSlot(st.seed, msg)], t.Unix()) {
			return true
		}
	}
	if num := ls.num; num > 0 {
		// Deterministic: record n passes when ⌊n·num/den⌋ increases. That
		// pattern repeats every den records, so n is reduced into [1, den]
		// to keep n·num far from overflow.
		m := (ls.seen.Add(1)-1)%rateDen + 1
		if m*num/rateDen != (m-1)*num/rateDen {
			return true
		}
	}
	if c := ls.dropped; c != nil {
		c.Inc()
	}
	return false
}

// hashSlot maps a message text to its first-N counter.
func hashSlot(seed maphash.Seed, msg string) uint64 {
	return maphash.String(seed, msg) & (firstNSlots - 1)
}

// firstInWindow counts one record in slot for the second sec and reports
// whether it is among the first firstN of that second. A record stamped with
// an older second than the slot's window counts against the current window.
func (st *samplerState) firstInWindow(slot *atomic.Uint64, sec int64) bool {
	win := uint32(sec) + 1 // 0 marks an unused slot
	for {
		v := slot.Load()
		cur := uint32(v >> 32)
		if cur == 0 || int32(win-cur) > 0 {
			if slot.CompareAndSwap(v, uint64(win)<<32|1) {
				return st.firstN >= 1
			}
			continue // another record moved the window; re-read
		}
		if v&math.MaxUint32 >= st.firstN {
			// Budget already spent this second: read-only, so a hot
			// message does not bounce the cache line between cores.
			return false
		}
		return (slot.Add(1) & math.MaxUint32) <= st.firstN
	}
}

// WithAttrs returns a handler with attrs added that shares this handler's
// sampling state (rates, counters and first-N windows).
func (h *SamplingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return &SamplingHandler{next: h.next.WithAttrs(attrs), st: h.st}
}

// WithGroup returns a handler with the group opened that shares this
// handler's sampling state. An empty name returns h.
func (h *SamplingHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return &SamplingHandler{next: h.next.WithGroup(name), st: h.st}
}
