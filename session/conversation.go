package session

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

var (
	// ErrIllegalTransition matches every *TransitionError with errors.Is.
	ErrIllegalTransition = errors.New("session: illegal transition")
	// ErrConflict is returned when Change.IfVersion does not match the
	// conversation's Version (another writer got there first).
	ErrConflict = errors.New("session: version conflict")
	// ErrNotFound is returned by Transition when the key is not in the store.
	ErrNotFound = errors.New("session: conversation not found")
	// ErrNotOfferee is wrapped in the *TransitionError returned when an agent
	// accepts a conversation offered to another agent.
	ErrNotOfferee = errors.New("session: conversation is offered to another agent")
	// ErrTransferTarget is wrapped in the *TransitionError returned when a
	// Transfer or OfferTransfer names no agent, or the agent that already
	// holds the conversation: a transfer needs another agent. (It was
	// ErrNoAgent, which router uses for "no eligible agent is free".)
	ErrTransferTarget = errors.New("session: transfer needs another agent")
	// ErrAssignTarget is wrapped in the *TransitionError returned when an
	// Assign names no agent.
	ErrAssignTarget = errors.New("session: assign needs an agent")
)

// TransitionError reports an event that is not legal in the conversation's
// current state (Err nil), or a legal one whose precondition failed (Err
// says which). errors.Is(err, ErrIllegalTransition) is true for all of them.
type TransitionError struct {
	From  State
	Event Event
	Err   error
}

// Error names the state and the event.
func (e *TransitionError) Error() string {
	s := "session: illegal transition: " + e.Event.String() + " in state " + e.From.String()
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the failed precondition, if any.
func (e *TransitionError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrIllegalTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrIllegalTransition }

// AuditEntry records one applied transition: who did what, when and why.
type AuditEntry struct {
	At      time.Time
	Actor   string
	Reason  string
	Event   Event
	From    State
	To      State
	Agent   string // the agent offered, assigned or transferred to, or who missed an offer
	Version uint64 // the conversation's Version after this transition
}

// Change is one requested transition with its parameters; Apply is the
// short form for changes that need none.
type Change struct {
	Event  Event
	Actor  string    // who causes it (agent, customer, "router", "system", …)
	Reason string    // why, for the audit trail
	At     time.Time // when; zero means time.Now()
	// Agent is the agent a conversation is offered to (Offer, optional:
	// empty offers it to whoever accepts first; OfferTransfer, required),
	// assigned to (Assign, required) or transferred to (Transfer,
	// required).
	Agent string
	// Until is when a Snooze ends (zero: until a customer reply or Wake).
	Until time.Time
	// IfVersion, when non-zero, makes the change fail with ErrConflict
	// unless the conversation's Version equals it (optimistic concurrency).
	IfVersion uint64
}

// Conversation is a support conversation's lifecycle: its state, who holds
// it, SLA timestamps and an audit trail. Its methods are not safe for
// concurrent use. A Store hands the same *Conversation to every reader, so
// treat one obtained from a Store as an immutable snapshot and change it
// with Transition (which applies the change to a Clone under the store's
// shard lock) — never in place.
type Conversation struct {
	ID      string
	State   State
	Version uint64 // incremented by every applied transition

	Assignee     string    // the agent holding it ("" when queued)
	OfferedTo    string    // the agent it is offered to while Offered ("" = anyone)
	OfferedAt    time.Time // when the current offer was made
	Missed       []string  // agents who declined or let an offer expire since it was last accepted
	SnoozedUntil time.Time // end of the current snooze (zero: none, or until reply)

	// SLA timestamps.
	Created            time.Time
	FirstQueued        time.Time
	QueuedAt           time.Time // the latest time it entered the queue
	FirstAgentResponse time.Time
	// OldestUnansweredCustomerMessage is the first customer message since
	// the last agent reply (zero when nothing awaits a reply): the start of
	// the running next-response clock.
	OldestUnansweredCustomerMessage time.Time
	// LastNextResponseTime is the most recent completed next-response time
	// (customer message to agent reply, first response excluded).
	LastNextResponseTime time.Duration
	Resolved             time.Time // the latest resolution; zero while open
	LastActivity         time.Time

	History []AuditEntry
}

// NewConversation returns a conversation in state Queued created at at
// (zero: time.Now()), with Version 1.
func NewConversation(id string, at time.Time) *Conversation {
	if at.IsZero() {
		at = time.Now()
	}
	return &Conversation{ID: id, State: Queued, Version: 1, Created: at, FirstQueued: at, QueuedAt: at, LastActivity: at}
}

// Clone returns a deep copy that shares no mutable memory with c.
func (c *Conversation) Clone() *Conversation {
	d := *c
	d.Missed = slices.Clone(c.Missed)
	d.History = slices.Clone(c.History)
	return &d
}

// Can reports whether ev is legal in the current state according to the
// transition table (preconditions such as ErrNotOfferee are not checked).
func (c *Conversation) Can(ev Event) bool {
	_, ok := Next(c.State, ev, c.Assignee != "")
	return ok
}

// Apply applies an event that needs no parameters; see ApplyChange.
func (c *Conversation) Apply(ev Event, actor, reason string, at time.Time) error {
	return c.ApplyChange(Change{Event: ev, Actor: actor, Reason: reason, At: at})
}

// ApplyChange applies ch if the transition table allows it in the current
// state and its preconditions hold; it then updates the assignment and SLA
// fields, increments Version and appends an AuditEntry. Otherwise it returns
// a *TransitionError (or ErrConflict for a stale IfVersion) and leaves c
// unchanged.
func (c *Conversation) ApplyChange(ch Change) error {
	if ch.IfVersion != 0 && ch.IfVersion != c.Version {
		return fmt.Errorf("%w: conversation %s is at version %d, not %d", ErrConflict, c.ID, c.Version, ch.IfVersion)
	}
	to, ok := Next(c.State, ch.Event, c.Assignee != "")
	if !ok {
		return &TransitionError{From: c.State, Event: ch.Event}
	}
	switch ch.Event {
	case Accept:
		if c.OfferedTo != "" && ch.Actor != c.OfferedTo {
			return &TransitionError{From: c.State, Event: ch.Event, Err: ErrNotOfferee}
		}
	case Transfer, OfferTransfer:
		if ch.Agent == "" || ch.Agent == c.Assignee {
			return &TransitionError{From: c.State, Event: ch.Event, Err: ErrTransferTarget}
		}
	case Assign:
		if ch.Agent == "" {
			return &TransitionError{From: c.State, Event: ch.Event, Err: ErrAssignTarget}
		}
	}
	at := ch.At
	if at.IsZero() {
		at = time.Now()
	}
	from := c.State
	agent := ""
	switch ch.Event {
	case Offer, OfferTransfer:
		c.OfferedTo, c.OfferedAt = ch.Agent, at
		agent = ch.Agent
	case Accept:
		c.Assignee, c.OfferedTo, c.OfferedAt, c.Missed = ch.Actor, "", time.Time{}, nil
	case Assign, Transfer:
		c.Assignee, c.OfferedTo, c.OfferedAt, c.Missed = ch.Agent, "", time.Time{}, nil
		agent = ch.Agent
	case Decline, Expire:
		missed := c.OfferedTo
		if missed == "" {
			missed = ch.Actor
		}
		if missed != "" && !slices.Contains(c.Missed, missed) {
			c.Missed = append(c.Missed, missed)
		}
		agent = missed
		c.OfferedTo, c.OfferedAt = "", time.Time{}
	case CustomerReply:
		if c.OldestUnansweredCustomerMessage.IsZero() {
			c.OldestUnansweredCustomerMessage = at
		}
	case AgentReply:
		if c.FirstAgentResponse.IsZero() {
			c.FirstAgentResponse = at
		} else if !c.OldestUnansweredCustomerMessage.IsZero() {
			c.LastNextResponseTime = at.Sub(c.OldestUnansweredCustomerMessage)
		}
		c.OldestUnansweredCustomerMessage = time.Time{}
	case Snooze:
		c.SnoozedUntil = ch.Until
	case Requeue:
		c.Assignee, c.OfferedTo, c.OfferedAt = "", "", time.Time{}
	case Resolve:
		c.Resolved = at
		c.OfferedTo, c.OfferedAt = "", time.Time{}
		c.OldestUnansweredCustomerMessage = time.Time{}
	}
	if from == Snoozed && to != Snoozed {
		c.SnoozedUntil = time.Time{}
	}
	if from == Resolved && to != Closed {
		c.Resolved = time.Time{}
	}
	if to == Queued && from != Queued {
		c.QueuedAt = at
	}
	c.State = to
	c.Version++
	c.LastActivity = at
	c.History = append(c.History, AuditEntry{At: at, Actor: ch.Actor, Reason: ch.Reason, Event: ch.Event, From: from, To: to, Agent: agent, Version: c.Version})
	return nil
}

// SnoozeDue reports whether c is snoozed with an end time that has passed at now.
func (c *Conversation) SnoozeDue(now time.Time) bool {
	return c.State == Snoozed && !c.SnoozedUntil.IsZero() && !now.Before(c.SnoozedUntil)
}

// FirstResponseTime is the time from entering the queue for the first time
// to the first agent reply; ok is false until an agent has replied.
func (c *Conversation) FirstResponseTime() (d time.Duration, ok bool) {
	if c.FirstAgentResponse.IsZero() {
		return 0, false
	}
	return c.FirstAgentResponse.Sub(c.FirstQueued), true
}

// NextResponseTime is how long the oldest unanswered customer message has
// waited at now — the running next-response clock to compare with an SLA
// target; ok is false when no customer message awaits a reply. The last
// completed value is in LastNextResponseTime.
func (c *Conversation) NextResponseTime(now time.Time) (d time.Duration, ok bool) {
	if c.OldestUnansweredCustomerMessage.IsZero() {
		return 0, false
	}
	return now.Sub(c.OldestUnansweredCustomerMessage), true
}

// ResolutionTime is the time from creation to the latest resolution; ok is
// false while the conversation is not resolved (a reopen clears it).
func (c *Conversation) ResolutionTime() (d time.Duration, ok bool) {
	if c.Resolved.IsZero() {
		return 0, false
	}
	return c.Resolved.Sub(c.Created), true
}

// Transition applies ch to the conversation stored under key, atomically
// with respect to every other Store operation on that key: the change is
// applied to a Clone inside Store.Update, and the clone replaces the stored
// snapshot only when the change succeeds. Of two goroutines racing to accept
// the same offer exactly one wins; the other gets a *TransitionError (or
// ErrConflict when it passed IfVersion). Transition returns the new
// snapshot, or ErrNotFound when key is absent or expired. A failed change
// still counts as a use of the entry (LRU order, sliding TTL).
func Transition[K comparable](s *Store[K, *Conversation], key K, ch Change) (*Conversation, error) {
	var out *Conversation
	var err error
	s.Update(key, func(old *Conversation, ok bool) (*Conversation, bool) {
		if !ok || old == nil {
			err = ErrNotFound
			return nil, false
		}
		c := old.Clone()
		if err = c.ApplyChange(ch); err != nil {
			return old, true
		}
		out = c
		return c, true
	})
	return out, err
}

// WakeDue applies Wake (actor, reason "snooze ended") to every conversation
// in s whose snooze has ended at now, and returns how many it woke. Each
// wake is conditional on the version Range saw, so a conversation changed
// concurrently (say, woken by a customer reply) is left alone. It walks the
// whole store, so call it from a periodic task sized to the store.
func WakeDue[K comparable](s *Store[K, *Conversation], now time.Time, actor string) int {
	woken := 0
	s.Range(func(k K, c *Conversation) bool {
		if c != nil && c.SnoozeDue(now) {
			if _, err := Transition(s, k, Change{Event: Wake, Actor: actor, Reason: "snooze ended", At: now, IfVersion: c.Version}); err == nil {
				woken++
			}
		}
		return true
	})
	return woken
}
