package router

import (
	"sort"
	"sync"
	"time"
)

// assignFakeClock is a manual Clock: time moves only through Advance, which
// runs due timer functions synchronously, in deadline order, on the caller's
// goroutine and without holding the clock's lock.
type assignFakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*assignFakeTimer
}

type assignFakeTimer struct {
	c    *assignFakeClock
	when time.Time
	f    func()
	done bool
}

func newAssignFakeClock() *assignFakeClock {
	return &assignFakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *assignFakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *assignFakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &assignFakeTimer{c: c, when: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *assignFakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	return true
}

// Pending counts timers neither fired nor stopped.
func (c *assignFakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.done {
			n++
		}
	}
	return n
}

// Advance moves the clock forward by d, firing every timer due by then.
func (c *assignFakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		sort.SliceStable(c.timers, func(i, j int) bool { return c.timers[i].when.Before(c.timers[j].when) })
		var next *assignFakeTimer
		live := c.timers[:0]
		for _, t := range c.timers {
			if !t.done {
				live = append(live, t)
			}
		}
		c.timers = live
		if len(live) > 0 && !live[0].when.After(end) {
			next = live[0]
			next.done = true
			if next.when.After(c.now) {
				c.now = next.when
			}
		} else {
			c.now = end
		}
		c.mu.Unlock()
		if next == nil {
			return
		}
		next.f()
	}
}
