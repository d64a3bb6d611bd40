package fanout

import "time"

// Clock is the source of time for publication timestamps, history and
// presence expiry. Tests pass a fake clock; nil means the system clock.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTicker returns a ticker firing every d.
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker the bus uses.
type Ticker interface {
	// C delivers ticks.
	C() <-chan time.Time
	// Stop releases the ticker.
	Stop()
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
func (systemClock) NewTicker(d time.Duration) Ticker {
	return sysTicker{time.NewTicker(d)}
}

type sysTicker struct{ t *time.Ticker }

func (t sysTicker) C() <-chan time.Time { return t.t.C }
func (t sysTicker) Stop()               { t.t.Stop() }
