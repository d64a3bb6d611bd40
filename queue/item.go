package queue

import (
	"errors"
	"time"
)

// Errors returned by Queue and Pool.
var (
	// ErrFull is returned by Push when the item's tier is at capacity.
	ErrFull = errors.New("queue: tier full")
	// ErrClosed is returned by Push after Close, and by Pop once the queue is
	// closed and empty.
	ErrClosed = errors.New("queue: closed")
	// ErrDuplicateID is returned when an item with the same non-empty ID is
	// already waiting.
	ErrDuplicateID = errors.New("queue: duplicate id")
	// ErrInvalidTier is returned for a tier index outside 0..len(Tiers)-1.
	ErrInvalidTier = errors.New("queue: invalid tier")
	// ErrInvalidConfig is wrapped by New and NewPool; the message names the
	// offending field.
	ErrInvalidConfig = errors.New("queue: invalid config")
)

// Item is one unit of work (or one waiting conversation) as handed out by
// Pop and TryPop. It is a plain value; copying it is safe.
type Item[T any] struct {
	// ID is the caller's identifier ("" for anonymous items, which cannot be
	// cancelled or located).
	ID string
	// Tier is the item's tier index (0 = most important).
	Tier int
	// Value is the payload given to Push.
	Value T
	// Enqueued is when the item was first pushed (kept across Requeue).
	Enqueued time.Time
	// Deadline is Enqueued + the tier's MaxWait, or the fresh deadline after
	// a retry.
	Deadline time.Time
	// Retried reports that the item's first deadline passed and RetryOnce
	// gave it a second one.
	Retried bool
	// Escalated reports that the item's deadline passed and the tier's
	// Escalate action fired; the consumer should treat it as late (e.g. send
	// a degraded reply).
	Escalated bool

	seq uint64 // enqueue order, kept by Requeue so the item regains its place
}

// Position is where a waiting item stands.
type Position struct {
	// Overall is how many items will be handed out before this one if
	// nothing else arrives, taking the cross-tier quotas into account.
	Overall int
	// InTier is how many items of its own tier are ahead of it.
	InTier int
}

// PositionUpdate reports a changed position to Config.OnPosition.
type PositionUpdate struct {
	ID            string
	Tier          int
	Position      Position
	EstimatedWait time.Duration
}

// Stats are cumulative counters of one tier, for tests and dashboards.
type Stats struct {
	Pushed, Popped, Cancelled   uint64
	Escalated, Retried, Dropped uint64
	Len                         int
}
