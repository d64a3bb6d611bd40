// Package lifetime provides the context a long-lived component hands to the
// work its own goroutines do, where no caller's context exists: a sweep, a
// re-synchronisation after a reconnect, a health check. It has no deadline
// and no values, and it is done when the component stops.
//
// fanout and fanout/redisbroker use it instead of deriving such contexts from
// context.Background, so every context in those packages is either a
// caller's or a component's lifetime, never one detached by accident.
package lifetime

import (
	"context"
	"sync"
	"time"
)

// Context is a context.Context that is done once Stop is called, with
// Err() == context.Canceled. The zero value is not usable; call New.
//
// Contexts derived from it (context.WithTimeout, WithCancel) are cancelled
// by Stop without a goroutine per derived context: Context implements the
// AfterFunc method the context package looks for.
type Context struct {
	done chan struct{}

	mu      sync.Mutex
	stopped bool
	next    uint64
	funcs   map[uint64]func()
}

// New returns a running Context.
func New() *Context { return &Context{done: make(chan struct{})} }

var canceled = func() *Context {
	c := New()
	c.Stop()
	return c
}()

// Canceled returns a context that is already done (Err: context.Canceled),
// for the immediate path of a component's Close, which is its Shutdown with
// no time to wait.
func Canceled() context.Context { return canceled }

// Stop makes the context done and cancels every context derived from it.
// It is idempotent and safe for concurrent use.
func (c *Context) Stop() {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return
	}
	c.stopped = true
	close(c.done)
	fs := c.funcs
	c.funcs = nil
	c.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// AfterFunc registers f to run once the context is stopped (at once if it
// is) and returns a function that unregisters it, reporting whether it did
// so before f ran. The context package calls it for derived contexts; f
// runs on the goroutine calling Stop (on a goroutine of its own when the
// context is already stopped) and must be short and non-blocking.
func (c *Context) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.stopped {
		// Stopped meanwhile: the caller may hold a lock f takes (the
		// context package does), so f must not run on this goroutine.
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	if c.funcs == nil {
		c.funcs = map[uint64]func(){}
	}
	id := c.next
	c.next++
	c.funcs[id] = f
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if _, ok := c.funcs[id]; !ok {
			return false
		}
		delete(c.funcs, id)
		return true
	}
}

// Deadline reports that the context has no deadline.
func (*Context) Deadline() (time.Time, bool) { return time.Time{}, false }

// Done is closed by Stop.
func (c *Context) Done() <-chan struct{} { return c.done }

// Err returns context.Canceled once stopped, else nil.
func (c *Context) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// Value returns nil: a lifetime carries no values.
func (*Context) Value(any) any { return nil }

// String names the context in debug output.
func (*Context) String() string { return "lifetime.Context" }
