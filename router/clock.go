package router

import "time"

// Clock is the source of time and timers for an Assigner. The default is the
// system clock; tests inject a fake one so offer expiry and offline grace
// periods are deterministic. Implementations must be safe for concurrent use
// and must never run a timer's function while holding a lock that Now or
// AfterFunc take.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed, unless the
	// returned Timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started yet and reports whether
	// it did so.
	Stop() bool
}

// SystemClock is the Clock backed by package time; it is the default.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc wraps time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
