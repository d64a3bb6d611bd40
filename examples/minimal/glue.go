package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/gateway"
	"github.com/switchboard-go/switchboard/observe"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/router"
)

// This file is all the glue between Switchboard's packages: the rest of
// the example is its own wire protocol (protocol.go) and process setup
// (main.go). TestGlueUnder100Lines keeps it short.

// app holds the components. A waiting conversation is one queue item
// whose value is the router.Request it needs; while assigned, the router
// keeps that item (Request.Value) so an agent's loss can requeue it in place.
type app struct {
	ctx    context.Context
	g      *gateway.Gateway
	q      *queue.Queue[router.Request]
	a      *router.Assigner
	bus    *fanout.Bus
	log    *slog.Logger
	agents sync.Map // conversation → the assigned agent's *fanout.Subscription
}

// newApp builds the components in the documented order (README "Wiring")
// and registers their readiness with obs.
func newApp(ctx context.Context, obs *observe.Observer, o Options) (*app, error) {
	s := &app{ctx: ctx, log: obs.Logger()}
	qc := queue.WaitingRoom[router.Request]() // P0..P2 with SLA deadlines: escalate, never drop
	qc.Observer, qc.OnPosition = obs, s.positions
	var errs [4]error
	s.q, errs[0] = queue.New(qc)
	s.a, errs[1] = router.NewAssigner(router.AssignerConfig{Observer: obs, OfflineGrace: o.OfflineGrace,
		OnCapacity: func(router.CapacityEvent) { s.match() }, OnAgentOffline: s.requeue})
	s.bus, errs[2] = fanout.New(fanout.Config{Observer: obs})
	s.g, errs[3] = gateway.New(gateway.Config{Addrs: []string{o.Addr}, Observer: obs, Authenticate: auth(o.Token),
		OnOpen: s.open, OnMessage: s.message, OnClose: s.closed})
	if err := errors.Join(errs[:]...); err != nil {
		return nil, err
	}
	for name, c := range map[string]interface{ Ready() error }{"gateway": s.g, "queue": s.q, "assigner": s.a, "bus": s.bus} {
		obs.AddReadyCheck(name, func(context.Context) error { return c.Ready() })
	}
	return s, nil
}

// shutdown stops the components edge first: no new connections or
// messages, then no new assignments, then no more deliveries.
func (s *app) shutdown(ctx context.Context) error {
	return errors.Join(s.g.Shutdown(ctx), s.q.Shutdown(ctx), s.a.Shutdown(ctx), s.bus.Shutdown(ctx))
}

// enqueue puts a customer's conversation in the waiting room; the
// customer's connection receives it until it closes.
func (s *app) enqueue(c *gateway.Conn, conv string, tier int, req router.Request) error {
	sub, err := s.bus.Subscribe(s.ctx, "conv:"+conv, fanout.SubscribeOptions{OnPublication: func(p fanout.Publication) { s.send(c, string(p.Payload)) }})
	if err == nil {
		_, err = c.Bind(sub) // closed with the connection, even if it is closing now
	}
	if err == nil {
		err = s.q.PushClass(conv, tier, req.Class(), req)
	}
	if err == nil {
		s.match()
	}
	return err
}

// match assigns waiting conversations, in the queue's order, to agents
// that can take them, until no more can be placed. A skill set nobody can
// serve now is passed over without blocking the conversations behind it.
func (s *app) match() {
	for {
		var agent string
		it, err := s.q.Match(func(it queue.Item[router.Request]) queue.Verdict {
			req := it.Value
			req.Value = it // handed back by OnAgentOffline
			var aerr error
			if agent, aerr = s.a.Assign(req); aerr != nil {
				return queue.SkipClass
			}
			return queue.Take
		})
		if errors.Is(err, queue.ErrClaimLost) { // the customer left meanwhile
			s.check("release", s.a.Release(it.ID))
			continue
		} else if err != nil {
			return
		}
		sub, err := s.bus.Subscribe(s.ctx, "conv:"+it.ID, fanout.SubscribeOptions{OnPublication: func(p fanout.Publication) { s.g.SendToUser(agent, gateway.TextMessage, p.Payload) }})
		if s.check("subscribe", err) {
			s.agents.Store(it.ID, sub) // every connection of the agent receives it
		}
		s.publish(it.ID, "assigned "+it.ID+" "+agent)
	}
}

// requeue puts an offline agent's conversations back where they were.
func (s *app) requeue(off router.AgentOffline) {
	for _, c := range off.Conversations {
		s.unfollow(c.ConversationID)
		if it, ok := c.Value.(queue.Item[router.Request]); ok && s.q.Requeue(it) == nil {
			s.publish(c.ConversationID, "requeued "+c.ConversationID)
		}
	}
	s.match()
}

// unfollow stops delivering conv to its agent.
func (s *app) unfollow(conv string) {
	if sub, ok := s.agents.LoadAndDelete(conv); ok {
		s.check("unsubscribe", sub.(*fanout.Subscription).Close())
	}
}

// leave ends a customer's conversation, waiting or assigned.
func (s *app) leave(conv string) {
	if !s.q.Cancel(conv) {
		s.publish(conv, "left "+conv)
		s.release(conv)
	}
}

// release ends an assignment; the agent's free slot triggers OnCapacity.
func (s *app) release(conv string) {
	s.unfollow(conv)
	s.check("release", s.a.Release(conv))
}

func (s *app) publish(conv, text string) {
	_, err := s.bus.Publish(s.ctx, "conv:"+conv, []byte(text))
	s.check("publish", err)
}
