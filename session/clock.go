package session

import "time"

// Clock is the source of time for a Store: expiry is computed from Now and the
// janitor runs on a Ticker from NewTicker. Tests pass a fake clock so that TTL
// behaviour is deterministic without sleeping. Implementations must be safe
// for concurrent use.
type Clock interface {
	// Now returns the current time. Store only uses differences between
	// readings, so a monotonic reading (as time.Now gives) is preferred.
	Now() time.Time
	// NewTicker returns a ticker firing every d.
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker a Store needs.
type Ticker interface {
	// C returns the channel the ticks are delivered on.
	C() <-chan time.Time
	// Stop turns the ticker off; no more ticks are delivered after it returns.
	Stop()
}

// SystemClock is the Clock backed by the time package. It is the default.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTicker wraps time.NewTicker.
func (SystemClock) NewTicker(d time.Duration) Ticker { return systemTicker{time.NewTicker(d)} }

type systemTicker struct{ t *time.Ticker }

func (t systemTicker) C() <-chan time.Time { return t.t.C }
func (t systemTicker) Stop()               { t.t.Stop() }
