package gateway

import "time"

// Clock is the time source of the sweeper (pings, idle and write timeouts)
// and of the rate limiter. The zero Config uses the real clock; tests pass a
// fake one to avoid sleeping.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTicker returns a ticker firing every d.
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker the gateway uses.
type Ticker interface {
	// C delivers the ticks.
	C() <-chan time.Time
	// Stop releases the ticker.
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }
