package queue

import (
	"context"
	"sync"
	"time"
)

// taskCtx is the context a Pool hands to Run. To keep the hot path free of
// allocations it is recycled by its worker when the task never asked for
// Done(); asking for Done() (directly or by deriving a child context) makes it
// back itself with a real context.WithDeadline, and such a context is
// cancelled and retired when Run returns, never reused.
type taskCtx struct {
	parent   context.Context
	deadline time.Time

	mu     sync.Mutex
	real   context.Context
	cancel context.CancelFunc
	ended  bool
}

func (c *taskCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *taskCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real == nil {
		c.real, c.cancel = context.WithDeadline(c.parent, c.deadline)
		if c.ended {
			c.cancel()
		}
	}
	return c.real.Done()
}

func (c *taskCtx) Err() error {
	c.mu.Lock()
	r, ended := c.real, c.ended
	c.mu.Unlock()
	if r != nil {
		if err := r.Err(); err != nil {
			return err
		}
	}
	if ended {
		return context.Canceled
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

func (c *taskCtx) Value(key any) any { return c.parent.Value(key) }

func (c *taskCtx) String() string { return "queue.taskContext" }

// finish ends the task; it reports whether the context may be reused.
func (c *taskCtx) finish() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.real != nil {
		c.cancel()
		c.ended = true
		return false
	}
	return true
}
