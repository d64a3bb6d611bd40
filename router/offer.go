package router

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Offer is a conversation offered to one agent, holding one of the agent's
// capacity slots until it is accepted, declined, or expires.
type Offer struct {
	// ID identifies the offer for Accept and Decline; unique per Assigner.
	ID             string
	ConversationID string
	AgentID        string
	CustomerID     string
	// Created is when the offer was made; ExpiresAt when it lapses.
	Created   time.Time
	ExpiresAt time.Time
}

// OfferEndReason says why an offer ended without Accept or Decline.
type OfferEndReason uint8

const (
	// OfferTimedOut: the agent did not accept within the offer timeout; the
	// miss is recorded on the agent.
	OfferTimedOut OfferEndReason = iota + 1
	// OfferAgentOffline: the agent went offline while the offer was pending.
	OfferAgentOffline
	// OfferAgentRemoved: the agent was removed while the offer was pending.
	OfferAgentRemoved
)

var offerReasonNames = [...]string{"", "timed_out", "agent_offline", "agent_removed"}

// String returns the reason's name.
func (r OfferEndReason) String() string {
	if r != 0 && int(r) < len(offerReasonNames) {
		return offerReasonNames[r]
	}
	return fmt.Sprintf("offer_end(%d)", uint8(r))
}

// ExpiredOffer reports an offer that ended without Accept or Decline.
type ExpiredOffer struct {
	Offer  Offer
	Reason OfferEndReason
	// Retry is the original request with the offer's agent added to
	// Exclude, ready to pass to Offer again for the next agent.
	Retry Request
}

type assignOffer struct {
	id      string
	pending bool
	agent   *agentState
	req     Request
	kind    assignKind
	created time.Time
	expires time.Time
	timer   *time.Timer
}

func (o *assignOffer) public() Offer {
	return Offer{
		ID: o.id, ConversationID: o.req.ConversationID, AgentID: o.agent.load.ID,
		CustomerID: o.req.CustomerID, Created: o.created, ExpiresAt: o.expires,
	}
}

// retry returns the offer's request excluding its agent.
func (o *assignOffer) retry() Request {
	r := o.req
	r.Exclude = append(slices.Clip(slices.Clone(o.req.Exclude)), o.agent.load.ID)
	return r
}

// Offer picks an agent for req like Assign but only reserves one of its
// slots: the conversation is the agent's once Accept is called with the
// offer's ID. If neither Accept nor Decline comes within the offer timeout,
// the offer expires: the miss is recorded on the agent, the slot is freed
// (a CapacityEvent when that is a gain) and OnOfferExpired receives a Retry
// request excluding the agent. Errors are those of Assign.
func (a *Assigner) Offer(req Request) (Offer, error) {
	var start time.Time
	if a.m != nil {
		start = time.Now()
	}
	a.mu.Lock()
	g, kind, err := a.claim(&req, true)
	if err != nil {
		a.mu.Unlock()
		if a.m != nil {
			a.m.latOffer.Observe(time.Since(start).Seconds())
		}
		return Offer{}, err
	}
	a.offerSeq++
	o := &assignOffer{
		id:      a.prefix + "-" + strconv.FormatUint(a.offerSeq, 10),
		pending: true,
		agent:   g,
		req:     req,
		kind:    kind,
		created: g.load.LastAssigned,
	}
	o.req.Exclude = slices.Clone(req.Exclude)
	o.req.RequiredSkills = slices.Clone(req.RequiredSkills)
	o.req.OptionalSkills = slices.Clone(req.OptionalSkills)
	o.expires = o.created.Add(a.timeout)
	a.offers[o.id] = o
	g.offers = append(g.offers, o)
	c := a.convs[req.ConversationID]
	c.offer, c.req = o, &o.req
	a.convs[req.ConversationID] = c
	o.timer = time.AfterFunc(a.timeout, func() { a.offerFire(o) })
	out := o.public()
	a.mu.Unlock()
	if a.m != nil {
		a.m.offersMade.Inc()
		a.m.latOffer.Observe(time.Since(start).Seconds())
	}
	return out, nil
}

// lookupOffer finds a pending offer or explains why there is none.
func (a *Assigner) lookupOffer(id string) (*assignOffer, error) {
	if a.closed {
		return nil, ErrAssignerClosed
	}
	if o := a.offers[id]; o != nil {
		return o, nil
	}
	if rest, ok := strings.CutPrefix(id, a.prefix+"-"); ok {
		if n, err := strconv.ParseUint(rest, 10, 64); err == nil && n > 0 && n <= a.offerSeq {
			return nil, fmt.Errorf("%w: %s", ErrOfferExpired, id)
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrUnknownOffer, id)
}

// Accept confirms a pending offer: the conversation is assigned to the
// offered agent (its reserved slot becomes an active one) and the agent's
// consecutive-miss count resets. It returns ErrOfferExpired when the offer
// is no longer pending and ErrUnknownOffer for a foreign ID.
func (a *Assigner) Accept(offerID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, err := a.lookupOffer(offerID)
	if err != nil {
		return err
	}
	a.acceptLocked(o, o.kind)
	return nil
}

func (a *Assigner) acceptLocked(o *assignOffer, kind assignKind) {
	g := o.agent
	a.offerEndLocked(o)
	g.load.Active++
	g.load.ConsecutiveMisses = 0
	g.convs[o.req.ConversationID] = struct{}{}
	a.active++
	a.convs[o.req.ConversationID] = assignConv{agent: g, req: &o.req}
	if a.pref != nil && o.req.CustomerID != "" {
		a.pref.Assigned(o.req.CustomerID, g.load.ID)
	}
	a.ix.update(g)
	if a.m != nil {
		a.m.offersAccepted.Inc()
		a.m.assigned[kind].Inc()
	}
}

// Decline ends a pending offer at the agent's request: the slot is freed (a
// CapacityEvent when that is a gain), the decline is counted on the agent,
// and the request to offer the conversation to someone else, with the
// agent excluded, is returned. No OnOfferExpired callback is made.
func (a *Assigner) Decline(offerID string) (Request, error) {
	var ev assignEvents
	a.mu.Lock()
	o, err := a.lookupOffer(offerID)
	if err != nil {
		a.mu.Unlock()
		return Request{}, err
	}
	g := o.agent
	pre, before := agentSnapOf(g), g.assignable()
	a.offerEndLocked(o)
	g.declined++
	a.ix.update(g)
	a.m.account(pre, agentSnapOf(g))
	a.gained(g, before, CapacityOfferEnded, &ev)
	retry := o.retry()
	a.postLocked(&ev)
	a.mu.Unlock()
	if a.m != nil {
		a.m.offersDeclined.Inc()
	}
	return retry, nil
}

// offerEndLocked removes a pending offer and its reservation. The caller
// re-indexes the agent and updates gauges and events.
func (a *Assigner) offerEndLocked(o *assignOffer) {
	o.pending = false
	o.timer.Stop()
	delete(a.offers, o.id)
	delete(a.convs, o.req.ConversationID)
	o.agent.load.Reserved--
	o.agent.removeOffer(o)
}

// cancelOffersLocked ends every pending offer of g and queues their reports.
func (a *Assigner) cancelOffersLocked(g *agentState, reason OfferEndReason, ev *assignEvents) {
	for len(g.offers) > 0 {
		o := g.offers[len(g.offers)-1]
		a.offerEndLocked(o)
		ev.offers = append(ev.offers, ExpiredOffer{Offer: o.public(), Reason: reason, Retry: o.retry()})
		if a.m != nil {
			a.m.offersCanceled.Inc()
		}
	}
}

// offerFire runs on the timer goroutine when an offer's timeout elapses.
func (a *Assigner) offerFire(o *assignOffer) {
	var ev assignEvents
	a.mu.Lock()
	if a.closed || !o.pending {
		a.mu.Unlock()
		return
	}
	g := o.agent
	pre, before := agentSnapOf(g), g.assignable()
	a.offerEndLocked(o)
	g.missedTotal++
	g.load.ConsecutiveMisses++
	if a.awayAfter > 0 && g.load.ConsecutiveMisses >= a.awayAfter && g.presence == Online {
		a.presenceLocked(g, Away, &ev)
	}
	a.ix.update(g)
	a.m.account(pre, agentSnapOf(g))
	ev.offers = append(ev.offers, ExpiredOffer{Offer: o.public(), Reason: OfferTimedOut, Retry: o.retry()})
	a.gained(g, before, CapacityOfferEnded, &ev)
	a.postLocked(&ev)
	a.mu.Unlock()
	if a.m != nil {
		a.m.offersExpired.Inc()
	}
}
