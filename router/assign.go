package router

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/internal/lifetime"
	"github.com/switchboard-go/switchboard/internal/notify"
	"github.com/switchboard-go/switchboard/observe"
)

// Errors returned by the Assigner. Callers branch on them with errors.Is.
var (
	// ErrNoAgent means no agent is online with free capacity, the required
	// skills and team, and not excluded. It may be wrapped in a *NoAgentError
	// telling when optional skills will be dropped.
	ErrNoAgent = errors.New("router: no eligible agent")
	// ErrAtCapacity means a manual assignment or transfer would exceed the
	// target agent's capacity (use AssignManual with force to override).
	ErrAtCapacity = errors.New("router: agent at capacity")
	// ErrUnknownAgent means no agent has the given ID.
	ErrUnknownAgent = errors.New("router: unknown agent")
	// ErrAgentOffline means a manual assignment or transfer targets an
	// offline agent without force.
	ErrAgentOffline = errors.New("router: agent offline")
	// ErrInvalidAgent means an Agent or capacity value is invalid.
	ErrInvalidAgent = errors.New("router: invalid agent")
	// ErrInvalidRequest means a Request lacks its ConversationID.
	ErrInvalidRequest = errors.New("router: invalid assignment request")
	// ErrAlreadyAssigned means the conversation is already assigned or offered.
	ErrAlreadyAssigned = errors.New("router: conversation already assigned")
	// ErrNotAssigned means the conversation is neither assigned nor offered
	// (Transfer also returns it for a conversation that is only offered).
	ErrNotAssigned = errors.New("router: conversation not assigned")
	// ErrOfferExpired means the offer is no longer pending: it expired, was
	// declined, or was canceled (agent offline or removed, conversation
	// released or assigned manually).
	ErrOfferExpired = errors.New("router: offer no longer pending")
	// ErrUnknownOffer means the offer ID was not issued by this Assigner.
	ErrUnknownOffer = errors.New("router: unknown offer")
	// ErrAssignerClosed is returned by every mutating call once Shutdown or
	// Close has begun, and wrapped by Ready.
	ErrAssignerClosed = errors.New("router: assigner closed")
)

// NoAgentError is returned (wrapping ErrNoAgent) when no agent has the
// request's optional skills yet and those skills will be dropped at RelaxAt:
// the host can retry then, when the pool widens.
type NoAgentError struct {
	RelaxAt time.Time
}

// Error says that no agent has the optional skills yet and when they are
// dropped.
func (e *NoAgentError) Error() string {
	return "router: no eligible agent with the optional skills; they are dropped at " + e.RelaxAt.Format(time.RFC3339Nano)
}

// Unwrap returns ErrNoAgent.
func (e *NoAgentError) Unwrap() error { return ErrNoAgent }

// Defaults for AssignerConfig.
const (
	DefaultOfferTimeout      = 30 * time.Second
	DefaultOptionalSkillWait = 60 * time.Second
	DefaultMaxSkillViews     = 1024
)

// AssignerConfig configures an Assigner. The zero value is usable.
type AssignerConfig struct {
	// Strategy picks among eligible agents. Default LeastLoaded().
	Strategy Strategy
	// OfferTimeout is how long an offer waits for Accept before it expires.
	// Default 30 s; negative is invalid.
	OfferTimeout time.Duration
	// OptionalSkillWait is how long after Request.WaitingSince a request's
	// optional skills stay mandatory; after it they only rank agents that
	// have them first, and the pool widens to every agent with the required
	// skills. Default 60 s; negative keeps optional skills mandatory forever.
	// Request.RelaxAfter overrides it per request.
	OptionalSkillWait time.Duration
	// OfflineGrace delays the OnAgentOffline report after an agent goes
	// offline; coming back within it cancels the report and the agent keeps
	// its conversations. Default 0: report at once. Negative is invalid.
	OfflineGrace time.Duration
	// AwayAfterMisses moves an online agent to Away after this many
	// consecutive expired offers. Default 0: never. Negative is invalid.
	AwayAfterMisses int
	// MaxSkillViews bounds the number of indexed (skill set, team)
	// combinations; the least recently requested is dropped beyond it and
	// rebuilt on its next use. Default 1024; negative is invalid.
	MaxSkillViews int
	// Observer receives metrics; nil disables them at no cost.
	Observer *observe.Observer

	// The callbacks below run on the Assigner's callback goroutine, one at
	// a time, in the order of the changes that caused them; never inside an
	// Assigner method called by the host (see Assigner).

	// OnOfferExpired is called once for every offer that ended without
	// Accept or Decline: timed out, or canceled because its agent went
	// offline or was removed. Its Retry request excludes the agent so the
	// host can offer the conversation to the next one; it carries the
	// original request's Value.
	OnOfferExpired func(ExpiredOffer)
	// OnCapacity is called exactly once for every operation that increases
	// an agent's assignable slots (see CapacityEvent), so the host drains its
	// waiting queue at once instead of sweeping periodically.
	OnCapacity func(CapacityEvent)
	// OnAgentOffline is called when an offline agent's conversations are
	// handed back (after OfflineGrace), each with its request and Value;
	// they are no longer assigned to it, so the host should requeue them.
	// Not called when there are none.
	OnAgentOffline func(AgentOffline)
}

// Request asks for an agent for one conversation.
type Request struct {
	// ConversationID identifies the conversation; required.
	ConversationID string
	// CustomerID lets Sticky send a returning customer to their last agent.
	CustomerID string
	// RequiredSkills must all be among the agent's skills.
	RequiredSkills []string
	// OptionalSkills are required until the optional-skill wait has passed
	// since WaitingSince; after that they only rank agents that have them first.
	OptionalSkills []string
	// Team, if set, restricts the pool to members of that team.
	Team string
	// Exclude lists agents that must not get the conversation (for example
	// those who missed or declined an offer for it).
	Exclude []string
	// WaitingSince is when the conversation started waiting; zero means now.
	WaitingSince time.Time
	// RelaxAfter overrides AssignerConfig.OptionalSkillWait for this request
	// when non-zero; negative keeps optional skills mandatory.
	RelaxAfter time.Duration
	// Value is the host's own data for the conversation, opaque to the
	// Assigner: typically the queue.Item the conversation was matched from,
	// so that it can be put back in the queue at its place. It is kept with
	// the conversation while it is offered or assigned and handed back in
	// ConversationInfo (Conversation, AgentOffline, RemoveAgent),
	// ExpiredOffer.Retry and Decline's request. Storing a non-pointer value
	// in an interface allocates; the Assigner adds no allocation of its own.
	Value any
}

// Class returns the canonical key of the agents the request can go to
// before optional skills and exclusions are considered: its required
// skills, sorted, deduplicated and without empty strings, joined by ",",
// followed by "@" and the team when Team is set ("billing,french@emea").
// Requests with the same Class are eligible for the same agents, so a host
// can use it as the queue.Item class of the waiting conversation: when
// CanServe(Request{RequiredSkills: …, Team: …}) is false for one of them it
// is false for all. Class allocates the string.
func (r Request) Class() string {
	var buf [16]string
	skills := assignCanon(buf[:0], r.RequiredSkills, nil)
	n := len(r.Team)
	for i, s := range skills {
		n += len(s)
		if i > 0 {
			n++
		}
	}
	var b strings.Builder
	b.Grow(n + 1)
	for i, s := range skills {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s)
	}
	if r.Team != "" {
		b.WriteByte('@')
		b.WriteString(r.Team)
	}
	return b.String()
}

// CapacityReason says why an agent gained assignable capacity.
type CapacityReason uint8

const (
	// CapacityOnline: the agent was added online or came online.
	CapacityOnline CapacityReason = iota + 1
	// CapacityReleased: a conversation was released or transferred away.
	CapacityReleased
	// CapacityRaised: the agent's capacity was raised.
	CapacityRaised
	// CapacityOfferEnded: an offer to the agent expired or was declined or canceled.
	CapacityOfferEnded
	// CapacitySkillsChanged: an available agent gained skills or teams, so
	// waiting conversations it could not take before may now go to it.
	CapacitySkillsChanged
)

var assignReasonNames = [...]string{"", "online", "released", "raised", "offer_ended", "skills_changed"}

// String returns the reason's name.
func (r CapacityReason) String() string {
	if int(r) < len(assignReasonNames) && r != 0 {
		return assignReasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// CapacityEvent reports that an agent can take more conversations now.
// An agent's assignable slots are 0 unless it is Online, unlimited when its
// capacity is 0, and capacity − active − offered otherwise; one event is
// delivered per operation that increases them (and per skill or team gain of
// an agent with free slots). Releasing a conversation of an agent with
// unlimited capacity is no gain and produces no event.
type CapacityEvent struct {
	AgentID string
	// Free is the number of conversations the agent can take now, or -1
	// when its capacity is unlimited.
	Free   int
	Reason CapacityReason
}

// AgentOffline hands back the conversations of an agent that went offline.
type AgentOffline struct {
	AgentID string
	// Conversations are the conversations the agent held, sorted by ID,
	// each with what the host needs to requeue it (its original Request,
	// WaitingSince and Value). They are no longer assigned to anyone.
	Conversations []ConversationInfo
	// Since is when the agent went offline.
	Since time.Time
}

// ConversationInfo describes a conversation the Assigner tracks, or one it
// hands back (AgentOffline, RemoveAgent), with everything needed to route it
// again: a host that passed its queue.Item as Request.Value requeues the
// conversation at its place with q.Requeue(info.Value.(queue.Item[T])).
type ConversationInfo struct {
	ConversationID string
	// AgentID is the agent that holds it, or held it when handed back.
	AgentID    string
	CustomerID string
	// OfferID is set while the conversation is offered (not yet accepted).
	OfferID string
	// WaitingSince is when the conversation started waiting: the request's
	// WaitingSince, or the time of its first assignment or offer when that
	// was zero.
	WaitingSince time.Time
	// Value is Request.Value as given by the host.
	Value any
	// Request is the request the conversation was assigned or offered with
	// (WaitingSince filled in). A conversation first seen by AssignManual
	// has the request given there.
	Request Request
}

// AssignerStats is a point-in-time summary.
type AssignerStats struct {
	Agents        int
	ByPresence    [4]int // indexed by Presence
	Conversations int    // active, not counting offers
	PendingOffers int
	CapacityInUse int // active plus offered
}

// assignConv is the Assigner's record of one conversation. It is kept
// small (the request behind a pointer) so that the map stores it inline and
// an assignment does not allocate.
type assignConv struct {
	agent  *agentState
	offer  *assignOffer // non-nil while only offered
	req    *Request     // as assigned or offered, WaitingSince filled in
	pooled bool         // req comes from Assigner.reqFree
}

func (c *assignConv) info() ConversationInfo {
	inf := ConversationInfo{
		ConversationID: c.req.ConversationID, AgentID: c.agent.load.ID, CustomerID: c.req.CustomerID,
		WaitingSince: c.req.WaitingSince, Value: c.req.Value, Request: *c.req,
	}
	if c.offer != nil {
		inf.OfferID = c.offer.id
	}
	return inf
}

// assignNote is one callback to deliver: exactly one of its fields is set.
type assignNote struct {
	capacity CapacityEvent
	expired  *ExpiredOffer
	offline  *AgentOffline
}

// assignEvents collects what an operation must report; postLocked queues
// it for the delivery goroutine before the lock is released.
type assignEvents struct {
	capBuf  [2]CapacityEvent
	capN    int
	capMore []CapacityEvent
	offers  []ExpiredOffer
	offline []AgentOffline
}

func (ev *assignEvents) capacity(e CapacityEvent) {
	if ev.capN < len(ev.capBuf) {
		ev.capBuf[ev.capN] = e
		ev.capN++
		return
	}
	ev.capMore = append(ev.capMore, e)
}

// Assigner routes conversations to agents: it tracks agents (presence,
// capacity, skills, teams) and the conversations they hold, picks agents by
// a Strategy from an index of eligible agents, claims capacity atomically,
// runs offers with timeouts, and reports capacity gains and offline agents'
// conversations to the host. All methods are safe for concurrent use; one
// mutex serialises state changes, so capacity can never be exceeded and a
// conversation is never held twice.
//
// Callbacks (OnCapacity, OnOfferExpired, OnAgentOffline) run on a goroutine
// the Assigner owns, one at a time, in the order of the state changes that
// caused them: never on the goroutine of a caller that is inside an
// Assigner method and never under the Assigner's lock, so a host may hold
// its own lock around any call and take it again in a callback, and a
// callback may call the Assigner. The goroutine runs only while callbacks
// are pending. Shutdown and Close wait for it.
type Assigner struct {
	strat     Strategy
	pref      Preferrer
	m         *assignMetrics
	timeout   time.Duration
	relaxWait time.Duration
	grace     time.Duration
	awayAfter int
	onExpired func(ExpiredOffer)
	onCap     func(CapacityEvent)
	onOffline func(AgentOffline)
	prefix    string // offer ID prefix, unique per Assigner

	notes *notify.Notifier[assignNote]

	mu       sync.Mutex
	closed   bool // Shutdown or Close began: no more state changes
	agents   map[string]*agentState
	convs    map[string]assignConv
	offers   map[string]*assignOffer
	ix       *assignIndex
	seq      uint64 // assignments
	turn     uint64 // automatic picks
	joins    uint64
	offerSeq uint64
	active   int
	reqFree  []*Request // recycled requests of released assignments
}

// assignedLocked returns the record of a conversation assigned to g with
// request r, whose Request comes from the free list (no allocation once
// warm).
func (a *Assigner) assignedLocked(g *agentState, r *Request) assignConv {
	var p *Request
	if n := len(a.reqFree); n > 0 {
		p = a.reqFree[n-1]
		a.reqFree = a.reqFree[:n-1]
	} else {
		p = new(Request)
	}
	*p = *r
	return assignConv{agent: g, req: p, pooled: true}
}

// forgetLocked recycles the request of a conversation record that was
// removed from a.convs.
func (a *Assigner) forgetLocked(c *assignConv) {
	if c.pooled {
		*c.req = Request{}
		a.reqFree = append(a.reqFree, c.req)
		c.req, c.pooled = nil, false
	}
}

// NewAssigner validates cfg, fills defaults and returns an Assigner, or an
// error wrapping ErrInvalidConfig that names the bad field. It starts no
// goroutine: timers run only while offers or grace periods are pending, and
// the callback goroutine only while callbacks are pending.
func NewAssigner(cfg AssignerConfig) (*Assigner, error) {
	switch {
	case cfg.OfferTimeout < 0:
		return nil, fmt.Errorf("%w: OfferTimeout %v is negative", ErrInvalidConfig, cfg.OfferTimeout)
	case cfg.OfflineGrace < 0:
		return nil, fmt.Errorf("%w: OfflineGrace %v is negative", ErrInvalidConfig, cfg.OfflineGrace)
	case cfg.AwayAfterMisses < 0:
		return nil, fmt.Errorf("%w: AwayAfterMisses %d is negative", ErrInvalidConfig, cfg.AwayAfterMisses)
	case cfg.MaxSkillViews < 0:
		return nil, fmt.Errorf("%w: MaxSkillViews %d is negative", ErrInvalidConfig, cfg.MaxSkillViews)
	}
	a := &Assigner{
		strat:     cfg.Strategy,
		timeout:   cfg.OfferTimeout,
		relaxWait: cfg.OptionalSkillWait,
		grace:     cfg.OfflineGrace,
		awayAfter: cfg.AwayAfterMisses,
		onExpired: cfg.OnOfferExpired,
		onCap:     cfg.OnCapacity,
		onOffline: cfg.OnAgentOffline,
		prefix:    fmt.Sprintf("%08x", rand.Uint32()),
		agents:    map[string]*agentState{},
		convs:     map[string]assignConv{},
		offers:    map[string]*assignOffer{},
	}
	a.notes = notify.New(a.deliver)
	if a.strat == nil {
		a.strat = LeastLoaded()
	}
	if a.timeout == 0 {
		a.timeout = DefaultOfferTimeout
	}
	if a.relaxWait == 0 {
		a.relaxWait = DefaultOptionalSkillWait
	}
	maxViews := cfg.MaxSkillViews
	if maxViews == 0 {
		maxViews = DefaultMaxSkillViews
	}
	autoLabel := a.strat.Name()
	if p, ok := a.strat.(Preferrer); ok {
		a.pref = p
		if f, ok := p.(interface{ fallbackName() string }); ok {
			autoLabel = f.fallbackName()
		}
	}
	a.ix = newAssignIndex(a.strat, maxViews)
	a.m = newAssignMetrics(cfg.Observer, autoLabel, a.strat.Name())
	return a, nil
}

// Shutdown stops the Assigner gracefully: from its start every mutating
// call returns ErrAssignerClosed and Ready reports it; pending offer and
// grace timers are stopped (pending offers stay pending, without callback).
// It then waits until the callbacks already queued — for state changes made
// before Shutdown, such as an OnAgentOffline handing back conversations to
// requeue — have been delivered, or until ctx is done: then the callbacks
// not yet started are dropped and it returns ctx.Err() once the one running
// (if any) has returned. When Shutdown returns, no goroutine of the
// Assigner runs and no callback fires again. Agent, Agents, Conversation
// and Stats keep answering from the final state.
//
// Shutdown is idempotent: a later call waits in the same way. It must not
// be called from an Assigner callback, nor while holding a lock that a
// callback takes (it waits for the callback).
func (a *Assigner) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		for _, o := range a.offers {
			o.timer.Stop()
		}
		for _, g := range a.agents {
			if g.graceTimer != nil {
				g.graceTimer.Stop()
				g.graceTimer = nil
			}
		}
	}
	a.mu.Unlock()
	return a.notes.Stop(ctx)
}

// Close is Shutdown without the grace: it stops the Assigner at once,
// dropping the callbacks not yet delivered, and returns when the callback
// running (if any) has returned. It is idempotent and returns nil.
func (a *Assigner) Close() error {
	ctx := lifetime.Canceled() // Close is Shutdown with a context already done
	_ = a.Shutdown(ctx)        // only reports that callbacks were dropped, as Close documents
	return nil
}

// Ready returns nil while the Assigner accepts work, and an error wrapping
// ErrAssignerClosed once Shutdown or Close has begun.
func (a *Assigner) Ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return fmt.Errorf("%w: shut down", ErrAssignerClosed)
	}
	return nil
}

// postLocked queues the events an operation collected for the callback
// goroutine. It is called with a.mu held, so that callbacks are delivered
// in the order of the state changes.
func (a *Assigner) postLocked(ev *assignEvents) {
	if a.onExpired != nil {
		for i := range ev.offers {
			a.notes.Post(assignNote{expired: &ev.offers[i]})
		}
	}
	if a.onOffline != nil {
		for i := range ev.offline {
			a.notes.Post(assignNote{offline: &ev.offline[i]})
		}
	}
	if ev.capN == 0 {
		return
	}
	if a.m != nil {
		a.m.capEvents.Add(float64(ev.capN + len(ev.capMore)))
	}
	if a.onCap != nil {
		for i := range ev.capN {
			a.notes.Post(assignNote{capacity: ev.capBuf[i]})
		}
		for _, e := range ev.capMore {
			a.notes.Post(assignNote{capacity: e})
		}
	}
}

// deliver runs one callback on the notifier's goroutine.
func (a *Assigner) deliver(n assignNote) {
	switch {
	case n.expired != nil:
		a.onExpired(*n.expired)
	case n.offline != nil:
		a.onOffline(*n.offline)
	default:
		a.onCap(n.capacity)
	}
}

// flush waits until every callback queued so far has been delivered.
func (a *Assigner) flush() { a.notes.Flush() }

// gained records a capacity event if g's assignable slots grew past before.
func (a *Assigner) gained(g *agentState, before int, reason CapacityReason, ev *assignEvents) {
	if g.assignable() > before {
		ev.capacity(CapacityEvent{AgentID: g.load.ID, Free: g.free(), Reason: reason})
	}
}

// assignCanon appends the non-empty strings of a and b to dst, sorted and
// deduplicated. With a stack-backed dst it does not allocate for small sets.
func assignCanon(dst, a, b []string) []string {
	for _, s := range a {
		if s != "" {
			dst = append(dst, s)
		}
	}
	for _, s := range b {
		if s != "" {
			dst = append(dst, s)
		}
	}
	for i := 1; i < len(dst); i++ { // insertion sort: sets are small
		for j := i; j > 0 && dst[j] < dst[j-1]; j-- {
			dst[j], dst[j-1] = dst[j-1], dst[j]
		}
	}
	return slices.Compact(dst)
}

// pick chooses an agent for req under the lock. It returns the agent and
// whether it was the strategy's preferred agent; on failure relaxAt is set
// when optional skills are still mandatory and will be dropped later.
func (a *Assigner) pick(req *Request, now time.Time) (g *agentState, preferred bool, relaxAt time.Time) {
	var rbuf [16]string
	required := assignCanon(rbuf[:0], req.RequiredSkills, nil)
	relaxed := true
	if len(req.OptionalSkills) > 0 {
		wait := req.RelaxAfter
		if wait == 0 {
			wait = a.relaxWait
		}
		if wait < 0 {
			relaxed = false
		} else {
			since := req.WaitingSince
			if since.IsZero() {
				since = now
			}
			relaxAt = since.Add(wait)
			relaxed = !now.Before(relaxAt)
		}
	}
	if a.pref != nil {
		if id := a.pref.PreferredAgent(*req); id != "" {
			if p := a.agents[id]; p != nil && p.available() && p.inTeam(req.Team) &&
				p.hasAll(required) && !slices.Contains(req.Exclude, id) {
				return p, true, time.Time{}
			}
		}
	}
	if len(req.OptionalSkills) > 0 {
		var sbuf [16]string
		strict := assignCanon(sbuf[:0], req.RequiredSkills, req.OptionalSkills)
		if len(strict) > len(required) {
			if g = a.ix.best(a.ix.view(strict, req.Team, a.agents), req.Exclude); g != nil {
				return g, false, time.Time{}
			}
			if !relaxed {
				return nil, false, relaxAt
			}
		}
	}
	return a.ix.best(a.ix.view(required, req.Team, a.agents), req.Exclude), false, time.Time{}
}

// claim picks an agent for req and takes one slot on it (Active, or Reserved
// for an offer). Called with the lock held.
func (a *Assigner) claim(req *Request, offer bool) (*agentState, assignKind, error) {
	if a.closed {
		return nil, 0, ErrAssignerClosed
	}
	if req.ConversationID == "" {
		return nil, 0, ErrInvalidRequest
	}
	if c, ok := a.convs[req.ConversationID]; ok {
		return nil, 0, fmt.Errorf("%w: %q is held by %q", ErrAlreadyAssigned, req.ConversationID, c.agent.load.ID)
	}
	now := time.Now()
	g, preferred, relaxAt := a.pick(req, now)
	if g == nil {
		if a.m != nil {
			a.m.noAgent.Inc()
		}
		if !relaxAt.IsZero() {
			return nil, 0, &NoAgentError{RelaxAt: relaxAt}
		}
		return nil, 0, ErrNoAgent
	}
	kind := assignKindAuto
	if preferred {
		kind = assignKindPreferred
	} else {
		a.turn++
		g.load.TurnSeq = a.turn
	}
	a.seq++
	g.load.AssignSeq = a.seq
	g.load.LastAssigned = now
	if req.WaitingSince.IsZero() {
		req.WaitingSince = now
	}
	c := assignConv{agent: g} // Offer points req at the offer's copy
	if offer {
		g.load.Reserved++
	} else {
		c = a.assignedLocked(g, req)
		g.load.Active++
		g.convs[req.ConversationID] = struct{}{}
		a.active++
		if a.pref != nil && req.CustomerID != "" {
			a.pref.Assigned(req.CustomerID, g.load.ID)
		}
	}
	a.convs[req.ConversationID] = c
	a.ix.update(g)
	if a.m != nil {
		a.m.capUsed.Inc()
		if !offer {
			a.m.assigned[kind].Inc()
		}
	}
	return g, kind, nil
}

// Assign picks an agent for req by the strategy and assigns the conversation
// to it at once, taking one of its capacity slots. It returns ErrNoAgent
// (possibly as a *NoAgentError) when no agent is eligible, and
// ErrAlreadyAssigned when the conversation is assigned or offered already.
// It never blocks beyond the Assigner's lock, costs O(log n) in the number
// of agents and does not allocate in the steady state.
func (a *Assigner) Assign(req Request) (agentID string, err error) {
	var start time.Time
	if a.m != nil {
		start = time.Now()
	}
	a.mu.Lock()
	g, _, err := a.claim(&req, false)
	if err == nil {
		agentID = g.load.ID
	}
	a.mu.Unlock()
	if a.m != nil {
		a.m.latAssign.Observe(time.Since(start).Seconds())
	}
	return agentID, err
}

// CanServe reports whether Assign(req) would find an agent now — one online,
// with a free slot, the required skills (and the optional ones while they
// are still mandatory), the team if asked, and not excluded — without
// claiming anything and without checking ConversationID. Between CanServe
// and a later Assign or Offer another caller may take the slot: only Assign
// and Offer claim atomically. It costs about as much as an Assign without
// the claim (an index lookup, O(1) without exclusions), does not allocate
// once the request's (skill set, team) has been seen, and does not count in
// assign_no_agent_total.
//
// With only RequiredSkills and Team set it answers for a whole class of
// waiting conversations (see Request.Class): false means no conversation of
// that class can be assigned now, whatever its exclusions, so a host
// matching a queue can skip the class (queue.SkipClass).
func (a *Assigner) CanServe(req Request) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	g, _, _ := a.pick(&req, time.Now())
	return g != nil
}

// AssignManual assigns the conversation req.ConversationID to agentID at
// once, as a supervisor would, bypassing the strategy and the skill and
// team checks. The conversation may be new (req is recorded as Assign
// records it, Value included), offered (the offer is canceled without
// callback, or accepted when agentID is the offered agent) or assigned (it
// moves, like Transfer); for a conversation already held only
// req.ConversationID is used and the recorded request and Value are kept.
// Without force the agent must not be offline and must have a free slot
// (ErrAgentOffline, ErrAtCapacity); with force both checks are skipped and
// capacity may be exceeded.
func (a *Assigner) AssignManual(req Request, agentID string, force bool) error {
	var ev assignEvents
	a.mu.Lock()
	err := a.moveLocked(&req, agentID, force, assignKindManual, &ev)
	a.postLocked(&ev)
	a.mu.Unlock()
	return err
}

// Transfer moves an assigned conversation to another agent at once (no
// offer: see the glossary in the package documentation), releasing a slot
// on the current one (which may produce a CapacityEvent) and taking one on
// the target, which must not be offline and must have a free slot. The
// conversation keeps its request and Value. A conversation that is only
// offered returns ErrNotAssigned. Transferring to the current agent is a
// no-op.
func (a *Assigner) Transfer(conversationID, toAgentID string) error {
	var ev assignEvents
	a.mu.Lock()
	var err error
	if a.closed {
		err = ErrAssignerClosed
	} else if c, ok := a.convs[conversationID]; !ok || c.offer != nil {
		err = fmt.Errorf("%w: %q", ErrNotAssigned, conversationID)
	} else {
		err = a.moveLocked(&Request{ConversationID: conversationID}, toAgentID, false, assignKindTransfer, &ev)
	}
	a.postLocked(&ev)
	a.mu.Unlock()
	return err
}

func (a *Assigner) moveLocked(req *Request, agentID string, force bool, kind assignKind, ev *assignEvents) error {
	if a.closed {
		return ErrAssignerClosed
	}
	convID := req.ConversationID
	if convID == "" {
		return ErrInvalidRequest
	}
	g := a.agents[agentID]
	if g == nil {
		return fmt.Errorf("%w: %q", ErrUnknownAgent, agentID)
	}
	c, exists := a.convs[convID]
	if exists && c.agent == g {
		if c.offer == nil {
			return nil
		}
		// Assigning an offered conversation to the offered agent accepts it.
		a.acceptLocked(c.offer, kind)
		return nil
	}
	if !force {
		if g.presence == Offline {
			return fmt.Errorf("%w: %q", ErrAgentOffline, agentID)
		}
		if g.load.Capacity > 0 && g.load.Active+g.load.Reserved >= g.load.Capacity {
			return fmt.Errorf("%w: %q holds %d of %d", ErrAtCapacity, agentID, g.load.Active+g.load.Reserved, g.load.Capacity)
		}
	}
	if exists {
		*req = *c.req
		from := c.agent
		pre, before := agentSnapOf(from), from.assignable()
		reason := CapacityReleased
		if c.offer != nil {
			reason = CapacityOfferEnded
			a.offerEndLocked(c.offer)
			if a.m != nil {
				a.m.offersCanceled.Inc()
			}
		} else {
			from.load.Active--
			delete(from.convs, convID)
			a.active--
			delete(a.convs, convID)
			a.forgetLocked(&c)
		}
		a.ix.update(from)
		a.m.account(pre, agentSnapOf(from))
		a.gained(from, before, reason, ev)
	}
	pre := agentSnapOf(g)
	now := time.Now()
	a.seq++
	g.load.AssignSeq = a.seq
	g.load.LastAssigned = now
	g.load.Active++
	g.convs[convID] = struct{}{}
	a.active++
	if req.WaitingSince.IsZero() {
		req.WaitingSince = now
	}
	a.convs[convID] = a.assignedLocked(g, req)
	if a.pref != nil && req.CustomerID != "" {
		a.pref.Assigned(req.CustomerID, g.load.ID)
	}
	a.ix.update(g)
	if a.m != nil {
		a.m.account(pre, agentSnapOf(g))
		a.m.assigned[kind].Inc()
	}
	return nil
}

// Release ends the conversation's assignment (closed, resolved or handed
// back): the agent's slot is freed, which produces a CapacityEvent when the
// agent is online with finite capacity. Releasing an offered conversation
// cancels the offer without an OnOfferExpired callback. It returns
// ErrNotAssigned for an unknown conversation. It does not allocate, except
// that queueing a callback while the callback goroutine is idle starts it.
func (a *Assigner) Release(conversationID string) error {
	var ev assignEvents
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return ErrAssignerClosed
	}
	c, ok := a.convs[conversationID]
	if !ok {
		a.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrNotAssigned, conversationID)
	}
	g := c.agent
	pre, before := agentSnapOf(g), g.assignable()
	reason := CapacityReleased
	if c.offer != nil {
		a.offerEndLocked(c.offer)
		reason = CapacityOfferEnded
		if a.m != nil {
			a.m.offersCanceled.Inc()
		}
	} else {
		g.load.Active--
		delete(g.convs, conversationID)
		delete(a.convs, conversationID)
		a.active--
		if a.pref != nil && c.req.CustomerID != "" {
			a.pref.Assigned(c.req.CustomerID, g.load.ID)
		}
		a.forgetLocked(&c)
	}
	a.ix.update(g)
	a.m.account(pre, agentSnapOf(g))
	a.gained(g, before, reason, &ev)
	a.postLocked(&ev)
	a.mu.Unlock()
	return nil
}

// UpsertAgent adds an agent or replaces its presence, capacity, skills and
// teams, keeping its conversations and history. It may produce one
// CapacityEvent (added online, came online, capacity raised, skills gained)
// and, when the agent goes offline, OnOfferExpired for its pending offers
// and an OnAgentOffline report (after the grace period).
func (a *Assigner) UpsertAgent(ag Agent) error {
	if err := agentValidate(ag); err != nil {
		return err
	}
	var ev assignEvents
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return ErrAssignerClosed
	}
	g := a.agents[ag.ID]
	if g == nil {
		a.joins++
		g = &agentState{
			load:     AgentLoad{ID: ag.ID, Capacity: ag.Capacity, JoinSeq: a.joins, TurnSeq: a.turn},
			presence: ag.Presence,
			skills:   agentNormalize(ag.Skills),
			teams:    agentNormalize(ag.Teams),
			convs:    map[string]struct{}{},
		}
		if g.presence == Offline {
			g.offlineSince = time.Now()
		}
		a.agents[ag.ID] = g
		a.ix.addAgent(g)
		a.m.account(agentSnap{}, agentSnapOf(g))
		a.gained(g, 0, CapacityOnline, &ev)
	} else {
		a.changeLocked(g, &ag, &ev)
	}
	a.postLocked(&ev)
	a.mu.Unlock()
	return nil
}

// changeLocked applies the non-nil parts of ag to g: presence, capacity,
// skills and teams. ag.ID is ignored.
func (a *Assigner) changeLocked(g *agentState, ag *Agent, ev *assignEvents) {
	pre, before := agentSnapOf(g), g.assignable()
	wasOnline := g.presence == Online
	oldCap := g.load.Capacity
	skills, teams := g.skills, g.teams
	if !slices.Equal(ag.Skills, g.skills) {
		skills = agentNormalize(ag.Skills)
	}
	if !slices.Equal(ag.Teams, g.teams) {
		teams = agentNormalize(ag.Teams)
	}
	gainedSkills := assignHasNew(g.skills, skills) || assignHasNew(g.teams, teams)
	if !slices.Equal(skills, g.skills) || !slices.Equal(teams, g.teams) {
		g.skills, g.teams = skills, teams
		a.ix.relink(g)
	}
	g.load.Capacity = ag.Capacity
	a.presenceLocked(g, ag.Presence, ev)
	a.ix.update(g)
	a.m.account(pre, agentSnapOf(g))
	a.changedEvent(g, before, wasOnline, oldCap, gainedSkills, ev)
}

// changedEvent emits at most one CapacityEvent for an agent update.
func (a *Assigner) changedEvent(g *agentState, before int, wasOnline bool, oldCap int, gainedSkills bool, ev *assignEvents) {
	after := g.assignable()
	switch {
	case after > before && !wasOnline:
		a.gained(g, before, CapacityOnline, ev)
	case after > before && oldCap != g.load.Capacity:
		a.gained(g, before, CapacityRaised, ev)
	case after > before:
		a.gained(g, before, CapacityReleased, ev)
	case gainedSkills && after > 0:
		ev.capacity(CapacityEvent{AgentID: g.load.ID, Free: g.free(), Reason: CapacitySkillsChanged})
	}
}

func assignHasNew(old, updated []string) bool {
	for _, s := range updated {
		if _, ok := slices.BinarySearch(old, s); !ok {
			return true
		}
	}
	return false
}

// presenceLocked moves g to presence p, handling offline transitions. The
// caller updates the index, gauges and capacity events.
func (a *Assigner) presenceLocked(g *agentState, p Presence, ev *assignEvents) {
	old := g.presence
	if old == p {
		return
	}
	g.presence = p
	if old == Offline {
		g.offlineSince = time.Time{}
		g.graceEpoch++
		if g.graceTimer != nil {
			g.graceTimer.Stop()
			g.graceTimer = nil
		}
		return
	}
	if p != Offline {
		return
	}
	g.offlineSince = time.Now()
	a.cancelOffersLocked(g, OfferAgentOffline, ev)
	if len(g.convs) == 0 {
		return
	}
	if a.grace <= 0 {
		a.offlineReportLocked(g, ev)
		return
	}
	g.graceEpoch++
	epoch := g.graceEpoch
	g.graceTimer = time.AfterFunc(a.grace, func() { a.graceFire(g, epoch) })
}

func (a *Assigner) graceFire(g *agentState, epoch uint64) {
	var ev assignEvents
	a.mu.Lock()
	if a.closed || a.agents[g.load.ID] != g || g.presence != Offline || g.graceEpoch != epoch {
		a.mu.Unlock()
		return
	}
	g.graceTimer = nil
	pre := agentSnapOf(g)
	a.offlineReportLocked(g, &ev)
	a.m.account(pre, agentSnapOf(g))
	a.postLocked(&ev)
	a.mu.Unlock()
}

// offlineReportLocked detaches g's conversations and queues their report.
func (a *Assigner) offlineReportLocked(g *agentState, ev *assignEvents) {
	if len(g.convs) == 0 {
		return
	}
	convs := a.detachLocked(g)
	if a.m != nil {
		a.m.requeued.Add(float64(len(convs)))
	}
	ev.offline = append(ev.offline, AgentOffline{AgentID: g.load.ID, Conversations: convs, Since: g.offlineSince})
}

// detachLocked unassigns every active conversation of g and returns them,
// sorted by ID.
func (a *Assigner) detachLocked(g *agentState) []ConversationInfo {
	convs := make([]ConversationInfo, 0, len(g.convs))
	for id := range g.convs {
		c := a.convs[id]
		convs = append(convs, c.info())
		delete(a.convs, id)
		a.forgetLocked(&c)
	}
	slices.SortFunc(convs, func(x, y ConversationInfo) int { return strings.Compare(x.ConversationID, y.ConversationID) })
	clear(g.convs)
	a.active -= g.load.Active
	g.load.Active = 0
	a.ix.update(g)
	return convs
}

// SetPresence changes an agent's presence. Coming online may produce a
// CapacityEvent; going offline cancels the agent's pending offers
// (OnOfferExpired) and hands back its conversations through OnAgentOffline,
// at once or after OfflineGrace (coming back within the grace period keeps them).
func (a *Assigner) SetPresence(agentID string, p Presence) error {
	if !p.Valid() {
		return fmt.Errorf("%w: %q: invalid Presence %d", ErrInvalidAgent, agentID, p)
	}
	return a.update(agentID, func(ag *Agent) { ag.Presence = p })
}

// SetCapacity changes an agent's capacity (0 = unlimited). Lowering it below
// the current load keeps the conversations; the agent just gets nothing new
// until it is under the limit. Raising it may produce a CapacityEvent.
func (a *Assigner) SetCapacity(agentID string, capacity int) error {
	if capacity < 0 {
		return fmt.Errorf("%w: %q: negative Capacity %d", ErrInvalidAgent, agentID, capacity)
	}
	return a.update(agentID, func(ag *Agent) { ag.Capacity = capacity })
}

// SetSkills replaces an agent's skills. Gaining a skill while the agent has
// free slots produces a CapacityEvent (CapacitySkillsChanged).
func (a *Assigner) SetSkills(agentID string, skills []string) error {
	return a.update(agentID, func(ag *Agent) { ag.Skills = skills })
}

// SetTeams replaces an agent's teams, like SetSkills.
func (a *Assigner) SetTeams(agentID string, teams []string) error {
	return a.update(agentID, func(ag *Agent) { ag.Teams = teams })
}

func (a *Assigner) update(agentID string, change func(*Agent)) error {
	var ev assignEvents
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return ErrAssignerClosed
	}
	g := a.agents[agentID]
	if g == nil {
		a.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownAgent, agentID)
	}
	ag := Agent{ID: agentID, Presence: g.presence, Capacity: g.load.Capacity, Skills: g.skills, Teams: g.teams}
	change(&ag)
	a.changeLocked(g, &ag, &ev)
	a.postLocked(&ev)
	a.mu.Unlock()
	return nil
}

// RemoveAgent forgets an agent. Its pending offers are canceled
// (OnOfferExpired with OfferAgentRemoved) and the conversations it held are
// returned, sorted by ID, each with its request and Value as in
// AgentOffline; they are no longer assigned, so the host should requeue
// them. No OnAgentOffline report is made.
func (a *Assigner) RemoveAgent(agentID string) ([]ConversationInfo, error) {
	var ev assignEvents
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, ErrAssignerClosed
	}
	g := a.agents[agentID]
	if g == nil {
		a.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrUnknownAgent, agentID)
	}
	pre := agentSnapOf(g)
	a.cancelOffersLocked(g, OfferAgentRemoved, &ev)
	convs := a.detachLocked(g)
	if g.graceTimer != nil {
		g.graceTimer.Stop()
		g.graceTimer = nil
	}
	g.graceEpoch++
	a.ix.removeAgent(g)
	delete(a.agents, agentID)
	a.m.account(pre, agentSnap{})
	a.postLocked(&ev)
	a.mu.Unlock()
	return convs, nil
}

// Agent returns a snapshot of the agent, or false if unknown.
func (a *Assigner) Agent(agentID string) (AgentInfo, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.agents[agentID]
	if g == nil {
		return AgentInfo{}, false
	}
	return g.info(), true
}

// Agents returns snapshots of every agent, sorted by ID.
func (a *Assigner) Agents() []AgentInfo {
	a.mu.Lock()
	out := make([]AgentInfo, 0, len(a.agents))
	for _, g := range a.agents {
		out = append(out, g.info())
	}
	a.mu.Unlock()
	slices.SortFunc(out, func(x, y AgentInfo) int {
		switch {
		case x.ID < y.ID:
			return -1
		case x.ID > y.ID:
			return 1
		}
		return 0
	})
	return out
}

// Conversation reports who holds (or is offered) a conversation.
func (a *Assigner) Conversation(conversationID string) (ConversationInfo, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.convs[conversationID]
	if !ok {
		return ConversationInfo{}, false
	}
	return c.info(), true
}

// Stats returns a summary of the Assigner's state.
func (a *Assigner) Stats() AssignerStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := AssignerStats{Agents: len(a.agents), Conversations: a.active, PendingOffers: len(a.offers)}
	for _, g := range a.agents {
		s.ByPresence[g.presence]++
		s.CapacityInUse += g.load.Active + g.load.Reserved
	}
	return s
}
