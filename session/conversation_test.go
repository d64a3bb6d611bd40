package session

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2025, 3, 4, 9, 0, 0, 0, time.UTC)

var allStates = []State{Queued, Offered, Active, Pending, Snoozed, Resolved, Closed}
var allEvents = []Event{Offer, Accept, Decline, Expire, CustomerReply, AgentReply, WaitOnCustomer,
	Snooze, Wake, OfferTransfer, Requeue, Resolve, Reopen, Close, Assign, Transfer}

// legal is the expected lifecycle written out independently of the table in
// transitions.go: for each state and event, the target when the conversation
// has an assignee and when it has none.
type targets struct{ assigned, unassigned State }

var legal = map[State]map[Event]targets{
	Queued: {
		Offer: {Offered, Offered}, Assign: {Active, Active}, CustomerReply: {Queued, Queued},
		Resolve: {Resolved, Resolved}, Close: {Closed, Closed},
	},
	Offered: {
		Accept: {Active, Active}, Assign: {Active, Active}, Decline: {Active, Queued}, Expire: {Active, Queued},
		CustomerReply: {Offered, Offered}, Requeue: {Queued, Queued},
		Resolve: {Resolved, Resolved}, Close: {Closed, Closed},
	},
	Active: {
		CustomerReply: {Active, Active}, AgentReply: {Active, Active}, WaitOnCustomer: {Pending, Pending},
		Snooze: {Snoozed, Snoozed}, Transfer: {Active, Active}, OfferTransfer: {Offered, Offered}, Requeue: {Queued, Queued},
		Resolve: {Resolved, Resolved}, Close: {Closed, Closed},
	},
	Pending: {
		CustomerReply: {Active, Active}, AgentReply: {Pending, Pending}, Snooze: {Snoozed, Snoozed},
		Transfer: {Active, Active}, OfferTransfer: {Offered, Offered}, Requeue: {Queued, Queued},
		Resolve: {Resolved, Resolved}, Close: {Closed, Closed},
	},
	Snoozed: {
		Wake: {Active, Queued}, CustomerReply: {Active, Queued}, Requeue: {Queued, Queued},
		Resolve: {Resolved, Resolved}, Close: {Closed, Closed},
	},
	Resolved: {
		Reopen: {Active, Queued}, CustomerReply: {Active, Queued}, Close: {Closed, Closed},
	},
	Closed: {},
}

// inState builds a conversation in state s, with or without an assignee.
func inState(s State, assigned bool) *Conversation {
	c := NewConversation("c1", t0)
	c.State = s
	if assigned {
		c.Assignee = "alice"
	}
	return c
}

func TestEveryTransition(t *testing.T) {
	for _, from := range allStates {
		for _, ev := range allEvents {
			for _, assigned := range []bool{true, false} {
				name := fmt.Sprintf("%s/%s/assigned=%v", from, ev, assigned)
				t.Run(name, func(t *testing.T) {
					c := inState(from, assigned)
					before := c.Clone()
					want, ok := legal[from][ev]
					err := c.ApplyChange(Change{Event: ev, Actor: "bob", Reason: "test", At: t0.Add(time.Minute), Agent: "carol"})
					if !ok {
						var te *TransitionError
						require.ErrorAs(t, err, &te)
						assert.Equal(t, from, te.From)
						assert.Equal(t, ev, te.Event)
						assert.ErrorIs(t, err, ErrIllegalTransition)
						assert.Contains(t, err.Error(), from.String())
						assert.Contains(t, err.Error(), ev.String())
						assert.Equal(t, before, c, "an illegal event changes nothing")
						assert.False(t, before.Can(ev))
						return
					}
					require.NoError(t, err)
					wantTo := want.unassigned
					if assigned || ev == Accept || ev == Assign || ev == Transfer {
						wantTo = want.assigned
					}
					assert.Equal(t, wantTo, c.State)
					assert.Equal(t, before.Version+1, c.Version)
					require.Len(t, c.History, 1)
					assert.Equal(t, AuditEntry{At: t0.Add(time.Minute), Actor: "bob", Reason: "test", Event: ev,
						From: from, To: wantTo, Agent: c.History[0].Agent, Version: c.Version}, c.History[0])
				})
			}
		}
	}
	// The declared table has exactly the expected rows.
	n := 0
	for _, evs := range legal {
		n += len(evs)
	}
	assert.Len(t, Transitions(), n)
}

func TestNextRejectsUnknown(t *testing.T) {
	_, ok := Next(0, Offer, false)
	assert.False(t, ok)
	_, ok = Next(Queued, Event(200), false)
	assert.False(t, ok)
	assert.Equal(t, "state(99)", State(99).String())
	assert.Equal(t, "event(99)", Event(99).String())
}

func TestOfferAcceptDecline(t *testing.T) {
	c := NewConversation("c1", t0)
	require.NoError(t, c.ApplyChange(Change{Event: Offer, Actor: "router", Agent: "alice", At: t0.Add(time.Second)}))
	assert.Equal(t, "alice", c.OfferedTo)
	assert.Equal(t, t0.Add(time.Second), c.OfferedAt)

	// Only the offered agent may accept.
	err := c.Apply(Accept, "bob", "", t0.Add(2*time.Second))
	var te *TransitionError
	require.ErrorAs(t, err, &te)
	assert.ErrorIs(t, err, ErrNotOfferee)
	assert.Equal(t, Offered, c.State)

	// Expiry puts it back in the queue and records the miss.
	require.NoError(t, c.Apply(Expire, "router", "no answer in 30s", t0.Add(31*time.Second)))
	assert.Equal(t, Queued, c.State)
	assert.Equal(t, []string{"alice"}, c.Missed)
	assert.Equal(t, t0.Add(31*time.Second), c.QueuedAt)
	assert.Equal(t, t0, c.FirstQueued)

	require.NoError(t, c.ApplyChange(Change{Event: Offer, Actor: "router", Agent: "bob", At: t0.Add(32 * time.Second)}))
	require.NoError(t, c.Apply(Decline, "bob", "busy", t0.Add(33*time.Second)))
	assert.Equal(t, []string{"alice", "bob"}, c.Missed)

	require.NoError(t, c.ApplyChange(Change{Event: Offer, Actor: "router", Agent: "carol", At: t0.Add(34 * time.Second)}))
	require.NoError(t, c.Apply(Accept, "carol", "", t0.Add(35*time.Second)))
	assert.Equal(t, Active, c.State)
	assert.Equal(t, "carol", c.Assignee)
	assert.Empty(t, c.OfferedTo)
	assert.Empty(t, c.Missed)
	assert.Equal(t, uint64(7), c.Version)
	assert.Len(t, c.History, 6)
}

func TestOfferTransferKeepsHistoryAndAssignee(t *testing.T) {
	c := NewConversation("c1", t0)
	require.NoError(t, c.ApplyChange(Change{Event: Offer, Agent: "alice", Actor: "router"}))
	require.NoError(t, c.Apply(Accept, "alice", "", time.Time{}))

	err := c.ApplyChange(Change{Event: OfferTransfer, Actor: "alice"})
	require.ErrorIs(t, err, ErrTransferTarget)
	err = c.ApplyChange(Change{Event: OfferTransfer, Actor: "alice", Agent: "alice"})
	require.ErrorIs(t, err, ErrTransferTarget)

	require.NoError(t, c.ApplyChange(Change{Event: OfferTransfer, Actor: "alice", Agent: "bob", Reason: "billing question"}))
	assert.Equal(t, Offered, c.State)
	assert.Equal(t, "alice", c.Assignee, "alice keeps it until bob accepts")
	assert.Equal(t, "bob", c.OfferedTo)

	require.NoError(t, c.Apply(Decline, "bob", "not my area", time.Time{}))
	assert.Equal(t, Active, c.State, "a declined transfer returns to the assignee")
	assert.Equal(t, "alice", c.Assignee)

	require.NoError(t, c.ApplyChange(Change{Event: OfferTransfer, Actor: "alice", Agent: "carol"}))
	require.NoError(t, c.Apply(Accept, "carol", "", time.Time{}))
	assert.Equal(t, "carol", c.Assignee)
	events := make([]Event, len(c.History))
	for i, h := range c.History {
		events[i] = h.Event
	}
	assert.Equal(t, []Event{Offer, Accept, OfferTransfer, Decline, OfferTransfer, Accept}, events)
	assert.Equal(t, "carol", c.History[4].Agent)
	assert.Equal(t, "billing question", c.History[2].Reason)
}

// TestAssignAndTransferAreImmediate: Assign gives a queued or offered
// conversation to an agent with no offer to accept; Transfer moves a held
// one to another agent at once.
func TestAssignAndTransferAreImmediate(t *testing.T) {
	c := NewConversation("c1", t0)
	err := c.ApplyChange(Change{Event: Assign, Actor: "router"})
	require.ErrorIs(t, err, ErrAssignTarget)
	var te *TransitionError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, Assign, te.Event)

	require.NoError(t, c.ApplyChange(Change{Event: Assign, Actor: "router", Agent: "alice", At: t0.Add(time.Second)}))
	assert.Equal(t, Active, c.State)
	assert.Equal(t, "alice", c.Assignee)
	assert.Equal(t, "alice", c.History[0].Agent)

	for _, bad := range []string{"", "alice"} {
		err = c.ApplyChange(Change{Event: Transfer, Actor: "alice", Agent: bad})
		require.ErrorIs(t, err, ErrTransferTarget, "transfer to %q", bad)
	}
	require.NoError(t, c.Apply(WaitOnCustomer, "alice", "", time.Time{}))
	require.NoError(t, c.ApplyChange(Change{Event: Transfer, Actor: "sup", Agent: "bob", Reason: "escalation"}))
	assert.Equal(t, Active, c.State, "a pending conversation transferred is the new agent's to act on")
	assert.Equal(t, "bob", c.Assignee)
	assert.Empty(t, c.OfferedTo)

	// Assign withdraws a pending offer and clears the misses.
	d := NewConversation("c2", t0)
	require.NoError(t, d.ApplyChange(Change{Event: Offer, Actor: "router", Agent: "alice"}))
	require.NoError(t, d.Apply(Expire, "router", "", time.Time{}))
	require.NoError(t, d.ApplyChange(Change{Event: Offer, Actor: "router", Agent: "bob"}))
	require.NoError(t, d.ApplyChange(Change{Event: Assign, Actor: "supervisor", Agent: "carol"}))
	assert.Equal(t, Active, d.State)
	assert.Equal(t, "carol", d.Assignee)
	assert.Empty(t, d.OfferedTo)
	assert.True(t, d.OfferedAt.IsZero())
	assert.Empty(t, d.Missed)

	// Event values are persisted: the old Transfer keeps its number.
	assert.Equal(t, Event(10), OfferTransfer)
	assert.Equal(t, "offer_transfer", OfferTransfer.String())
	assert.Equal(t, "assign", Assign.String())
	assert.Equal(t, "transfer", Transfer.String())
}

func TestSnoozeAndWake(t *testing.T) {
	c := inState(Active, true)
	until := t0.Add(time.Hour)
	require.NoError(t, c.ApplyChange(Change{Event: Snooze, Actor: "alice", Until: until, At: t0}))
	assert.False(t, c.SnoozeDue(t0.Add(59*time.Minute)))
	assert.True(t, c.SnoozeDue(until))
	require.NoError(t, c.Apply(Wake, "system", "snooze over", until))
	assert.Equal(t, Active, c.State)
	assert.True(t, c.SnoozedUntil.IsZero())
	assert.False(t, c.SnoozeDue(until))

	// Requeued while snoozed (agent left): a customer reply wakes it into the queue.
	require.NoError(t, c.ApplyChange(Change{Event: Snooze, Actor: "alice", Until: until}))
	require.NoError(t, c.Apply(Requeue, "system", "agent offline", t0.Add(2*time.Hour)))
	assert.Empty(t, c.Assignee)
	assert.Equal(t, Queued, c.State)
}

func TestSLATimings(t *testing.T) {
	c := NewConversation("c1", t0)
	_, ok := c.FirstResponseTime()
	assert.False(t, ok)
	_, ok = c.ResolutionTime()
	assert.False(t, ok)

	at := func(d time.Duration) time.Time { return t0.Add(d) }
	require.NoError(t, c.Apply(CustomerReply, "customer", "", at(0)))
	require.NoError(t, c.Apply(CustomerReply, "customer", "", at(10*time.Second)))
	d, ok := c.NextResponseTime(at(30 * time.Second))
	require.True(t, ok)
	assert.Equal(t, 30*time.Second, d, "measured from the oldest unanswered message")

	require.NoError(t, c.ApplyChange(Change{Event: Offer, Agent: "alice", At: at(40 * time.Second)}))
	require.NoError(t, c.Apply(Accept, "alice", "", at(45*time.Second)))
	require.NoError(t, c.Apply(AgentReply, "alice", "", at(90*time.Second)))
	frt, ok := c.FirstResponseTime()
	require.True(t, ok)
	assert.Equal(t, 90*time.Second, frt)
	_, ok = c.NextResponseTime(at(100 * time.Second))
	assert.False(t, ok, "nothing awaits a reply")
	assert.Zero(t, c.LastNextResponseTime, "the first response is not a next response")

	require.NoError(t, c.Apply(CustomerReply, "customer", "", at(2*time.Minute)))
	require.NoError(t, c.Apply(CustomerReply, "customer", "", at(3*time.Minute)))
	require.NoError(t, c.Apply(AgentReply, "alice", "", at(5*time.Minute)))
	assert.Equal(t, 3*time.Minute, c.LastNextResponseTime)
	frt2, _ := c.FirstResponseTime()
	assert.Equal(t, frt, frt2, "first response is fixed")

	require.NoError(t, c.Apply(Resolve, "alice", "answered", at(10*time.Minute)))
	rt, ok := c.ResolutionTime()
	require.True(t, ok)
	assert.Equal(t, 10*time.Minute, rt)

	require.NoError(t, c.Apply(CustomerReply, "customer", "one more thing", at(20*time.Minute)))
	assert.Equal(t, Active, c.State)
	_, ok = c.ResolutionTime()
	assert.False(t, ok, "reopened")
	require.NoError(t, c.Apply(AgentReply, "alice", "", at(21*time.Minute)))
	require.NoError(t, c.Apply(Resolve, "alice", "", at(25*time.Minute)))
	require.NoError(t, c.Apply(Close, "system", "auto-close", at(30*time.Minute)))
	rt, _ = c.ResolutionTime()
	assert.Equal(t, 25*time.Minute, rt)
	assert.Equal(t, at(30*time.Minute), c.LastActivity)
}

func TestIfVersion(t *testing.T) {
	c := NewConversation("c1", t0)
	err := c.ApplyChange(Change{Event: Offer, IfVersion: 7})
	require.ErrorIs(t, err, ErrConflict)
	assert.Equal(t, Queued, c.State)
	require.NoError(t, c.ApplyChange(Change{Event: Offer, IfVersion: 1}))
	assert.Equal(t, uint64(2), c.Version)
}

func TestCloneIsIndependent(t *testing.T) {
	c := NewConversation("c1", t0)
	require.NoError(t, c.ApplyChange(Change{Event: Offer, Agent: "alice"}))
	require.NoError(t, c.Apply(Decline, "alice", "", t0))
	d := c.Clone()
	require.Equal(t, c, d)
	require.NoError(t, d.ApplyChange(Change{Event: Offer, Agent: "bob"}))
	require.NoError(t, d.Apply(Decline, "bob", "", t0))
	d.History[0].Actor = "mallory"
	assert.Equal(t, []string{"alice"}, c.Missed)
	assert.Len(t, c.History, 2)
	assert.Empty(t, c.History[0].Actor)
}

func TestTransitionNotFound(t *testing.T) {
	s := newStore(t, Config[string, *Conversation]{JanitorInterval: -1})
	_, err := Transition(s, "nope", Change{Event: Offer})
	require.ErrorIs(t, err, ErrNotFound)
	assert.Zero(t, s.Len())
}

func TestTransitionFailureKeepsSnapshot(t *testing.T) {
	s := newStore(t, Config[string, *Conversation]{JanitorInterval: -1})
	orig := NewConversation("c1", t0)
	s.Set("c1", orig)
	_, err := Transition(s, "c1", Change{Event: Accept, Actor: "alice"})
	require.ErrorIs(t, err, ErrIllegalTransition)
	got, _ := s.Get("c1")
	assert.Same(t, orig, got)

	next, err := Transition(s, "c1", Change{Event: Offer, Actor: "router"})
	require.NoError(t, err)
	got, _ = s.Get("c1")
	assert.Same(t, next, got)
	assert.Equal(t, Queued, orig.State, "the old snapshot is never mutated")
	assert.Equal(t, Offered, got.State)
}

// TestRaceToAccept: two agents accept the same offered conversation at the
// same moment, many times over; exactly one wins every time and the loser
// gets the typed error. Run with -race.
func TestRaceToAccept(t *testing.T) {
	for _, withVersion := range []bool{false, true} {
		t.Run(fmt.Sprintf("ifVersion=%v", withVersion), func(t *testing.T) {
			s := newStore(t, Config[string, *Conversation]{Shards: 4, JanitorInterval: -1})
			for round := range 200 {
				id := fmt.Sprintf("conv-%d", round)
				s.Set(id, NewConversation(id, t0))
				offered, err := Transition(s, id, Change{Event: Offer, Actor: "router"}) // to whoever accepts first
				require.NoError(t, err)

				start := make(chan struct{})
				errs := make([]error, 2)
				var wg sync.WaitGroup
				for i, agent := range []string{"alice", "bob"} {
					wg.Go(func() {
						<-start
						ch := Change{Event: Accept, Actor: agent, Reason: "clicked accept"}
						if withVersion {
							ch.IfVersion = offered.Version
						}
						_, errs[i] = Transition(s, id, ch)
					})
				}
				close(start)
				wg.Wait()

				winners := 0
				for _, err := range errs {
					if err == nil {
						winners++
						continue
					}
					var te *TransitionError
					switch {
					case errors.As(err, &te):
						assert.Equal(t, Active, te.From)
						assert.Equal(t, Accept, te.Event)
					default:
						assert.ErrorIs(t, err, ErrConflict)
					}
				}
				require.Equal(t, 1, winners, "round %d: %v", round, errs)
				c, _ := s.Get(id)
				assert.Equal(t, Active, c.State)
				assert.Contains(t, []string{"alice", "bob"}, c.Assignee)
				assert.Equal(t, offered.Version+1, c.Version)
				assert.Len(t, c.History, 2)
			}
		})
	}
}

func TestWakeDue(t *testing.T) {
	s := newStore(t, Config[string, *Conversation]{JanitorInterval: -1})
	for i, until := range []time.Duration{time.Minute, time.Hour, 0} {
		c := inState(Active, i != 1)
		c.ID = fmt.Sprint(i)
		require.NoError(t, c.ApplyChange(Change{Event: Snooze, Actor: "alice", At: t0, Until: t0.Add(until)}))
		if until == 0 {
			c.SnoozedUntil = time.Time{} // until the customer replies
		}
		s.Set(c.ID, c)
	}
	s.Set("active", inState(Active, true))
	assert.Equal(t, 0, WakeDue(s, t0.Add(30*time.Second), "system"))
	assert.Equal(t, 1, WakeDue(s, t0.Add(time.Minute), "system"))
	c, _ := s.Get("0")
	assert.Equal(t, Active, c.State)
	assert.Equal(t, "snooze ended", c.History[len(c.History)-1].Reason)
	assert.Equal(t, 1, WakeDue(s, t0.Add(2*time.Hour), "system"))
	c, _ = s.Get("1")
	assert.Equal(t, Queued, c.State, "no assignee: back to the queue")
	c, _ = s.Get("2")
	assert.Equal(t, Snoozed, c.State, "snoozed until a reply")
}
