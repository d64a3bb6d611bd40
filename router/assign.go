package router

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

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
	// ErrAssignerClosed is returned by every mutating call after Close.
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

	// OnOfferExpired is called once for every offer that ended without
	// Accept or Decline: timed out, or canceled because its agent went
	// offline or was removed. Its Retry request excludes the agent so the
	// host can offer the conversation to the next one.
	OnOfferExpired func(ExpiredOffer)
	// OnCapacity is called exactly once for every operation that increases
	// an agent's assignable slots (see CapacityEvent), so the host drains its
	// waiting queue at once instead of sweeping periodically.
	OnCapacity func(CapacityEvent)
	// OnAgentOffline is called when an offline agent's conversations are
	// handed back (after OfflineGrace); they are no longer assigned to it,
	// so the host should requeue them. Not called when there are none.
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
	// Conversations are the conversation IDs the agent held, sorted; they
	// are no longer assigned to anyone.
	Conversations []string
	// Since is when the agent went offline.
	Since time.Time
}

// ConversationInfo describes a conversation the Assigner tracks.
type ConversationInfo struct {
	ConversationID string
	AgentID        string
	CustomerID     string
	// OfferID is set while the conversation is offered (not yet accepted).
	OfferID string
}

// AssignerStats is a point-in-time summary.
type AssignerStats struct {
	Agents        int
	ByPresence    [4]int // indexed by Presence
	Conversations int    // active, not counting offers
	PendingOffers int
	CapacityInUse int // active plus offered
}

type assignConv struct {
	agent    *agentState
	offer    *assignOffer // non-nil while only offered
	customer string
}

// assignEvents collects what an operation must report once the lock is released.
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
// conversation is never held twice. Callbacks run after the lock is released,
// on the goroutine whose call caused them (or a timer goroutine for expiries
// and grace periods); they may call the Assigner.
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

	mu       sync.Mutex
	idle     sync.Cond // signalled when inflight drops to 0 after Close
	closed   bool
	inflight int // timer callbacks running
	agents   map[string]*agentState
	convs    map[string]assignConv
	offers   map[string]*assignOffer
	ix       *assignIndex
	seq      uint64 // assignments
	turn     uint64 // automatic picks
	joins    uint64
	offerSeq uint64
	active   int
}

// NewAssigner validates cfg, fills defaults and returns an Assigner, or an
// error wrapping ErrInvalidConfig that names the bad field. It starts no
// goroutine; timers run only while offers or grace periods are pending.
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
	a.idle.L = &a.mu
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

// Close stops every pending offer and grace timer and waits for timer
// callbacks already running. Pending offers stay pending (no callback);
// afterwards every mutating call returns ErrAssignerClosed while Agent,
// Agents, Conversation and Stats keep working. Close must not be called
// from an Assigner callback. It is idempotent.
func (a *Assigner) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
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
	for a.inflight > 0 {
		a.idle.Wait()
	}
	return nil
}

// emit delivers collected events; it must be called without the lock.
func (a *Assigner) emit(ev *assignEvents) {
	if a.onExpired != nil {
		for _, e := range ev.offers {
			a.onExpired(e)
		}
	}
	if a.onOffline != nil {
		for _, e := range ev.offline {
			a.onOffline(e)
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
			a.onCap(ev.capBuf[i])
		}
		for _, e := range ev.capMore {
			a.onCap(e)
		}
	}
}

// timerExit is called by a timer callback after it reported; it had
// incremented inflight under the lock before releasing it.
func (a *Assigner) timerExit() {
	a.mu.Lock()
	a.inflight--
	if a.inflight == 0 {
		a.idle.Broadcast()
	}
	a.mu.Unlock()
}

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
	c := assignConv{agent: g, customer: req.CustomerID}
	if offer {
		g.load.Reserved++
	} else {
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

// AssignManual assigns conversationID to agentID as a supervisor would. The
// conversation may be new, offered (the offer is canceled without callback)
// or assigned (it moves, like Transfer). Without force the agent must not be
// offline and must have a free slot (ErrAgentOffline, ErrAtCapacity); with
// force both checks are skipped and capacity may be exceeded.
func (a *Assigner) AssignManual(conversationID, agentID string, force bool) error {
	var ev assignEvents
	a.mu.Lock()
	err := a.moveLocked(conversationID, agentID, force, assignKindManual, &ev)
	a.mu.Unlock()
	a.emit(&ev)
	return err
}

// Transfer moves an assigned conversation to another agent, releasing a slot
// on the current one (which may produce a CapacityEvent) and taking one on
// the target, which must not be offline and must have a free slot. A
// conversation that is only offered returns ErrNotAssigned. Transferring to
// the current agent is a no-op.
func (a *Assigner) Transfer(conversationID, toAgentID string) error {
	var ev assignEvents
	a.mu.Lock()
	var err error
	if a.closed {
		err = ErrAssignerClosed
	} else if c, ok := a.convs[conversationID]; !ok || c.offer != nil {
		err = fmt.Errorf("%w: %q", ErrNotAssigned, conversationID)
	} else {
		err = a.moveLocked(conversationID, toAgentID, false, assignKindTransfer, &ev)
	}
	a.mu.Unlock()
	a.emit(&ev)
	return err
}

func (a *Assigner) moveLocked(convID, agentID string, force bool, kind assignKind, ev *assignEvents) error {
	if a.closed {
		return ErrAssignerClosed
	}
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
	a.convs[convID] = assignConv{agent: g, customer: c.customer}
	if a.pref != nil && c.customer != "" {
		a.pref.Assigned(c.customer, g.load.ID)
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
// ErrNotAssigned for an unknown conversation. No allocation.
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
		if a.pref != nil && c.customer != "" {
			a.pref.Assigned(c.customer, g.load.ID)
		}
	}
	a.ix.update(g)
	a.m.account(pre, agentSnapOf(g))
	a.gained(g, before, reason, &ev)
	a.mu.Unlock()
	a.emit(&ev)
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
	a.mu.Unlock()
	a.emit(&ev)
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
	a.inflight++
	a.mu.Unlock()
	a.emit(&ev)
	a.timerExit()
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

// detachLocked unassigns every active conversation of g and returns their IDs.
func (a *Assigner) detachLocked(g *agentState) []string {
	convs := make([]string, 0, len(g.convs))
	for c := range g.convs {
		convs = append(convs, c)
		delete(a.convs, c)
	}
	slices.Sort(convs)
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
	a.mu.Unlock()
	a.emit(&ev)
	return nil
}

// RemoveAgent forgets an agent. Its pending offers are canceled
// (OnOfferExpired with OfferAgentRemoved) and the IDs of the conversations it
// held are returned, sorted; they are no longer assigned, so the host should
// requeue them. No OnAgentOffline report is made.
func (a *Assigner) RemoveAgent(agentID string) ([]string, error) {
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
	a.mu.Unlock()
	a.emit(&ev)
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
	inf := ConversationInfo{ConversationID: conversationID, AgentID: c.agent.load.ID, CustomerID: c.customer}
	if c.offer != nil {
		inf.OfferID = c.offer.id
	}
	return inf, true
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
