package session

import "fmt"

// State is a conversation's lifecycle state.
type State uint8

// Conversation states. A conversation starts Queued.
const (
	// Queued: waiting for an agent.
	Queued State = iota + 1
	// Offered: offered to an agent who has not accepted yet. During an
	// OfferTransfer the previous assignee keeps it until the offer is
	// accepted.
	Offered
	// Active: an agent holds it and the ball is in the agent's court.
	Active
	// Pending: the agent is waiting on the customer.
	Pending
	// Snoozed: set aside until a time (or a customer reply, or Wake).
	Snoozed
	// Resolved: done, but a customer reply or Reopen brings it back.
	Resolved
	// Closed: final; no event is legal.
	Closed

	numStates = int(Closed) + 1
)

var stateNames = [numStates]string{"", "queued", "offered", "active", "pending", "snoozed", "resolved", "closed"}

// String returns the lower-case state name.
func (s State) String() string {
	if int(s) < numStates && s != 0 {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Event is something that happens to a conversation.
type Event uint8

// Conversation events. The transition table (Transitions) says in which
// states each is legal and where it leads. The words follow the glossary of
// the package documentation, shared with package router: assign gives a
// conversation to an agent at once, offer proposes it and the agent must
// accept, transfer moves an assigned conversation to another agent at once.
//
// Event values are stored (AuditEntry.Event in persisted records), so they
// never change: new events are appended at the end.
const (
	// Offer offers a queued conversation to Change.Agent (or to whoever
	// accepts first when Agent is empty).
	Offer Event = iota + 1
	// Accept: the actor takes the offered conversation and becomes the
	// assignee. When the offer names an agent, only that agent may accept.
	Accept
	// Decline: the offered agent refuses; the miss is recorded and the
	// conversation returns to its assignee (a declined transfer) or the queue.
	Decline
	// Expire: the offer timed out; recorded and handled like Decline.
	Expire
	// CustomerReply: the customer wrote. It starts the next-response clock
	// if it is not running, and wakes snoozed or resolved conversations.
	CustomerReply
	// AgentReply: the agent wrote; it stops the response clock.
	AgentReply
	// WaitOnCustomer: the agent now waits on the customer (→ Pending).
	WaitOnCustomer
	// Snooze sets the conversation aside until Change.Until (zero: until a
	// customer reply or Wake).
	Snooze
	// Wake ends a snooze: back to the assignee, or to the queue.
	Wake
	// OfferTransfer offers a held conversation to Change.Agent (required,
	// and not the assignee: else ErrTransferTarget); the current assignee
	// keeps it until the new agent accepts (→ Offered, then Accept, or
	// Decline/Expire back to the assignee). Until 2026-12 this event was
	// named Transfer; its value is unchanged.
	OfferTransfer
	// Requeue drops the assignee and any offer and puts the conversation
	// back in the queue (for example when its agent went offline).
	Requeue
	// Resolve marks the conversation done.
	Resolve
	// Reopen brings a resolved conversation back to its assignee, or to the queue.
	Reopen
	// Close ends the conversation for good.
	Close
	// Assign gives a queued or offered conversation to Change.Agent
	// (required, else ErrAssignTarget) at once, with no offer to accept:
	// the state machine's side of router.Assigner.Assign and AssignManual.
	// A pending offer is withdrawn.
	Assign
	// Transfer moves a held conversation (Active or Pending) to
	// Change.Agent at once: the agent becomes the assignee and the
	// conversation is Active. Agent is required and must not be the
	// assignee (ErrTransferTarget). It is the state machine's side of
	// router.Assigner.Transfer; OfferTransfer is the variant the new agent
	// must accept.
	Transfer

	numEvents = int(Transfer) + 1
)

var eventNames = [numEvents]string{"", "offer", "accept", "decline", "expire", "customer_reply", "agent_reply",
	"wait_on_customer", "snooze", "wake", "offer_transfer", "requeue", "resolve", "reopen", "close", "assign", "transfer"}

// String returns the lower-case event name.
func (e Event) String() string {
	if int(e) < numEvents && e != 0 {
		return eventNames[e]
	}
	return fmt.Sprintf("event(%d)", uint8(e))
}

// Rule is one row of the transition table: in state From, Event leads to
// To, or to ToIfUnassigned when the conversation has no assignee (when
// ToIfUnassigned is zero, To applies either way).
type Rule struct {
	From           State
	Event          Event
	To             State
	ToIfUnassigned State
}

// transitions is the single declaration of the conversation lifecycle.
// Anything not listed is illegal and returns a *TransitionError.
var transitions = []Rule{
	{Queued, Offer, Offered, 0},
	{Queued, Assign, Active, 0},
	{Queued, CustomerReply, Queued, 0},
	{Queued, Resolve, Resolved, 0},
	{Queued, Close, Closed, 0},

	{Offered, Accept, Active, 0},
	{Offered, Assign, Active, 0},
	{Offered, Decline, Active, Queued},
	{Offered, Expire, Active, Queued},
	{Offered, CustomerReply, Offered, 0},
	{Offered, Requeue, Queued, 0},
	{Offered, Resolve, Resolved, 0},
	{Offered, Close, Closed, 0},

	{Active, CustomerReply, Active, 0},
	{Active, AgentReply, Active, 0},
	{Active, WaitOnCustomer, Pending, 0},
	{Active, Snooze, Snoozed, 0},
	{Active, Transfer, Active, 0},
	{Active, OfferTransfer, Offered, 0},
	{Active, Requeue, Queued, 0},
	{Active, Resolve, Resolved, 0},
	{Active, Close, Closed, 0},

	{Pending, CustomerReply, Active, 0},
	{Pending, AgentReply, Pending, 0},
	{Pending, Snooze, Snoozed, 0},
	{Pending, Transfer, Active, 0},
	{Pending, OfferTransfer, Offered, 0},
	{Pending, Requeue, Queued, 0},
	{Pending, Resolve, Resolved, 0},
	{Pending, Close, Closed, 0},

	{Snoozed, Wake, Active, Queued},
	{Snoozed, CustomerReply, Active, Queued},
	{Snoozed, Requeue, Queued, 0},
	{Snoozed, Resolve, Resolved, 0},
	{Snoozed, Close, Closed, 0},

	{Resolved, Reopen, Active, Queued},
	{Resolved, CustomerReply, Active, Queued},
	{Resolved, Close, Closed, 0},
}

// table is transitions indexed by [from][event].
var table = func() (t [numStates][numEvents]Rule) {
	for _, r := range transitions {
		if t[r.From][r.Event].To != 0 {
			panic("session: duplicate transition " + r.From.String() + " " + r.Event.String())
		}
		t[r.From][r.Event] = r
	}
	return t
}()

// Transitions returns a copy of the transition table, in declaration order.
func Transitions() []Rule { return append([]Rule(nil), transitions...) }

// Next returns the state event ev leads to from state from, given whether the
// conversation has an assignee, and whether the transition is legal.
func Next(from State, ev Event, assigned bool) (State, bool) {
	if from == 0 || int(from) >= numStates || ev == 0 || int(ev) >= numEvents {
		return 0, false
	}
	r := table[from][ev]
	if r.To == 0 {
		return 0, false
	}
	if !assigned && r.ToIfUnassigned != 0 {
		return r.ToIfUnassigned, true
	}
	return r.To, true
}
