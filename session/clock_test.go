package session

import (
	"sync"
	"time"
)

// fakeClock is a manually advanced Clock whose tickers fire only on Tick.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*fakeTicker
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func (c *fakeClock) NewTicker(time.Duration) Ticker {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTicker{ch: make(chan time.Time)}
	c.tickers = append(c.tickers, t)
	return t
}

// Tick delivers one tick to every ticker; it returns once each owner has
// received it (the channels are unbuffered).
func (c *fakeClock) Tick() {
	c.mu.Lock()
	ts := append([]*fakeTicker(nil), c.tickers...)
	now := c.now
	c.mu.Unlock()
	for _, t := range ts {
		t.ch <- now
	}
}

type fakeTicker struct{ ch chan time.Time }

func (t *fakeTicker) C() <-chan time.Time { return t.ch }
func (t *fakeTicker) Stop()               {}
