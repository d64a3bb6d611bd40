package queue

import "time"

// Clock is the source of time for a Queue. Tests use a fake clock so that
// deadlines and the position debounce are deterministic; the default is the
// system clock.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// AfterFunc calls f in its own goroutine once d has elapsed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the handle returned by Clock.AfterFunc. *time.Timer implements it.
type Timer interface {
	// Stop prevents the timer from firing; it reports whether it was active.
	Stop() bool
	// Reset re-arms the timer to fire after d; it reports whether it was active.
	Reset(d time.Duration) bool
}

type systemClock struct{}

func (systemClock) Now() time.Time                            { return time.Now() }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// nanoClock returns Unix nanoseconds from c. For the system clock it reads
// only the monotonic clock (one vDSO read instead of two, and immune to wall
// clock steps), anchored to the wall time at construction.
func nanoClock(c Clock) func() int64 {
	if _, ok := c.(systemClock); ok {
		base := time.Now()
		baseNs := base.UnixNano()
		return func() int64 { return baseNs + int64(time.Since(base)) }
	}
	return func() int64 { return c.Now().UnixNano() }
}
