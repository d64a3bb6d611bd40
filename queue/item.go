package queue

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by Queue and Pool.
var (
	// ErrFull is returned by Push when the item's tier is at capacity.
	ErrFull = errors.New("queue: tier full")
	// ErrClosed is returned by Push, PushWait and Requeue after Shutdown or
	// Close, by Pop once the queue is closed and empty, and wrapped by the
	// Ready methods of a queue or pool that was shut down.
	ErrClosed = errors.New("queue: closed")
	// ErrDuplicateID is returned when an item with the same non-empty ID is
	// already waiting.
	ErrDuplicateID = errors.New("queue: duplicate id")
	// ErrInvalidTier is returned for a tier index outside 0..len(Tiers)-1.
	ErrInvalidTier = errors.New("queue: invalid tier")
	// ErrNotStarted is returned by Pool.Ready before Pool.Start.
	ErrNotStarted = errors.New("queue: pool not started")
	// ErrInvalidConfig is wrapped by New and NewPool; the message names the
	// offending field.
	ErrInvalidConfig = errors.New("queue: invalid config")
	// ErrNoMatch is returned by Match when no candidate was taken: the
	// claim callback passed over every waiting item, or returned Stop.
	ErrNoMatch = errors.New("queue: no match")
	// ErrClaimLost is returned by Match, together with the item, when the
	// claim callback returned Take but the item had left the queue while the
	// callback ran (Cancel, a Drop deadline action, or a concurrent Pop). The
	// item was not handed out; the host must undo the claim it made (for
	// example release the agent slot it reserved).
	ErrClaimLost = errors.New("queue: item left the queue during its claim")
)

// Item is one unit of work (or one waiting conversation) as handed out by
// Pop, TryPop and Match, and as reported to the deadline callbacks. It is a
// plain value; copying it is safe.
type Item[T any] struct {
	// ID is the caller's identifier ("" for anonymous items, which cannot be
	// cancelled or located).
	ID string
	// Tier is the item's tier index (0 = most important).
	Tier int
	// Class is the item's matching class, set by PushClass (or Requeue): an
	// opaque key for what the item needs from whoever takes it, typically
	// the canonical (sorted, deduplicated) set of required skills. Items of
	// one class are interchangeable for Match: if nobody can take one of
	// them, nobody can take the others. "" is the class of items pushed
	// with Push.
	Class string
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

// Verdict is a Match claim callback's answer about one candidate item.
type Verdict uint8

const (
	// Skip passes over this item only (for example: the only agents with
	// its skills are excluded for this conversation); Match goes on with the
	// next item of the same class. It is the zero value.
	Skip Verdict = iota
	// SkipClass passes over this item and every other item of its class, in
	// every tier, for the rest of this Match call: nobody can take the class
	// now (for example router.ErrNoAgent for a request without exclusions).
	SkipClass
	// Take means the callback claimed what the item needs (for example an
	// agent's capacity slot): Match removes the item from the queue and
	// returns it.
	Take
	// Stop ends the walk at once without taking anything (for example no
	// agent has any free capacity, or the host's store is down).
	Stop
)

// String returns "skip", "skip_class", "take" or "stop".
func (v Verdict) String() string {
	switch v {
	case Skip:
		return "skip"
	case SkipClass:
		return "skip_class"
	case Take:
		return "take"
	case Stop:
		return "stop"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
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
	// ID and Tier identify the waiting item.
	ID   string
	Tier int
	// Position and EstimatedWait are as Queue.Position and
	// Queue.EstimatedWait would report them now.
	Position      Position
	EstimatedWait time.Duration
}

// Stats are cumulative counters of one tier, for tests and dashboards.
// Every item that entered the tier (Pushed + Requeued) has left it (Popped +
// Abandoned) or is still waiting (Len).
type Stats struct {
	// Pushed counts Push, PushClass and PushWait successes; Requeued counts
	// Requeue successes.
	Pushed, Requeued uint64
	// Popped counts items handed out by Pop, TryPop, Match or a Pool.
	Popped uint64
	// Cancelled counts items removed by Cancel.
	Cancelled uint64
	// Escalated, Retried and Dropped count deadline actions.
	Escalated, Retried, Dropped uint64
	// Abandoned counts items that left the queue without being handed out:
	// removed by Cancel, dropped by their deadline action (Drop, or the
	// second expiry of RetryOnce), or returned as abandoned by
	// Pool.Shutdown. Abandoned − Cancelled − Dropped is what Pool.Shutdown
	// gave up on.
	Abandoned uint64
	// Len is the number of items waiting now.
	Len int
}
