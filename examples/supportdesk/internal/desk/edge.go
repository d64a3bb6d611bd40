package desk

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/bytedance/sonic"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/gateway"
)

// edge connects one node's WebSocket connections to the bus: it forwards
// client commands to the core, delivers user, supervisor and conversation
// topics to the right local connections, and serves typing and recovery
// itself.
type edge struct {
	// ctx is the server's context: it bounds the bus calls the edge makes
	// for no connection in particular (callbacks, retries, restores).
	ctx     context.Context
	node    string
	bus     *fanout.Bus
	gw      *gateway.Gateway
	data    *dataPlane
	cfg     *Config
	log     *slog.Logger
	pending pendingCmds
	stopped chan struct{}
	// restoring tracks the goroutines restoring lost subscriptions.
	restoring sync.WaitGroup

	mu     sync.Mutex
	expiry map[uint64]*time.Timer // per connection: closes it when its token expires
	users  map[string]*edgeUser
	convs  map[string]*edgeConv
	sups   map[string]struct{}
	supSub *fanout.Subscription
}

type edgeUser struct {
	id, role string
	conns    int
	sub      *fanout.Subscription
	convs    map[string]struct{}
}

type edgeConv struct {
	users          map[string]struct{}
	closed         bool // resolved or closed: no more messages
	msgSub, ephSub *fanout.Subscription

	// Delivery of the message topic (mu, not the edge's lock). Fan-out
	// delivers publications made after Subscribe returned; the node's first
	// member may have been told of the conversation after earlier ones
	// (its first message is published as the core announces it), so a new
	// subscription catches up from the transcript first (catchUp) and holds
	// live publications meanwhile; offsets already sent are skipped.
	mu       sync.Mutex
	catching bool
	held     []fanout.Publication
	last     uint64 // highest transcript offset sent
}

func newEdge(ctx context.Context, node string, bus *fanout.Bus, data *dataPlane, cfg *Config, log *slog.Logger) *edge {
	return &edge{ctx: ctx, node: node, bus: bus, data: data, cfg: cfg, log: log, stopped: make(chan struct{}), pending: pendingCmds{cmds: map[string]*pendingCmd{}}, expiry: map[uint64]*time.Timer{}, users: map[string]*edgeUser{}, convs: map[string]*edgeConv{}, sups: map[string]struct{}{}}
}

// claimsOf returns the verified claims the connection was authenticated
// with (gateway.Identity.Value).
func claimsOf(c *gateway.Conn) auth.Claims {
	cl, _ := c.Identity().Value.(auth.Claims) // always set by Server.authenticate
	return cl
}

func identityCommand(kind string, c *gateway.Conn) *command {
	cl := claimsOf(c)
	return &command{Kind: kind, Conn: c.ID(), User: cl.UserID, Role: cl.Role, Name: cl.Name, Tier: cl.Tier, Skills: cl.Skills, Capacity: cl.Capacity}
}

func (e *edge) reply(c *gateway.Conn, env *protocol.Envelope) { send(c, env) }

// CloseTokenExpired closes a connection whose token expired: get a fresh
// token and reconnect.
const CloseTokenExpired = 4003

// onOpen subscribes the user's topic (once per node) and announces the
// connection to the core, which answers with hello.
func (e *edge) onOpen(c *gateway.Conn) {
	id := c.Identity()
	if exp := claimsOf(c).Expires; exp > 0 {
		t := time.AfterFunc(time.Until(time.Unix(exp, 0)), func() {
			_ = c.Close(CloseTokenExpired, "token expired")
		})
		e.mu.Lock()
		e.expiry[c.ID()] = t
		e.mu.Unlock()
	}
	e.mu.Lock()
	u := e.users[id.UserID]
	if u == nil {
		u = &edgeUser{id: id.UserID, role: string(id.Role), convs: map[string]struct{}{}}
		uid := u.id
		sub, err := e.bus.Subscribe(c.Context(), topicUser(uid), fanout.SubscribeOptions{
			Buffer:        1024,
			Policy:        fanout.DropOldest,
			OnPublication: func(p fanout.Publication) { e.onUserEvent(uid, p.Payload) },
		})
		if err != nil {
			e.mu.Unlock()
			e.log.Error("subscribe user topic", "user", uid, "err", err)
			_ = c.Close(gateway.CloseInternalError, "subscription failed")
			return
		}
		u.sub = sub
		e.users[uid] = u
	}
	u.conns++
	if u.role == auth.RoleSupervisor {
		e.sups[u.id] = struct{}{}
		if e.supSub == nil {
			sub, err := e.bus.Subscribe(c.Context(), topicSup, fanout.SubscribeOptions{Buffer: 1024, Policy: fanout.DropOldest, OnPublication: e.onSupEvent})
			if err == nil {
				e.supSub = sub
			}
		}
	}
	e.mu.Unlock()
	if err := e.toCore(identityCommand(cmdOpen, c)); err != nil {
		e.log.Error("announce connection", "err", err)
		_ = c.Close(gateway.CloseInternalError, "core unavailable")
	}
}

func (e *edge) onClose(c *gateway.Conn) {
	id := c.Identity()
	var subs []*fanout.Subscription
	e.mu.Lock()
	if t := e.expiry[c.ID()]; t != nil {
		t.Stop()
		delete(e.expiry, c.ID())
	}
	if u := e.users[id.UserID]; u != nil {
		u.conns--
		if u.conns <= 0 {
			subs = append(subs, u.sub)
			for cid := range u.convs {
				subs = append(subs, e.leaveConvLocked(cid, u)...)
			}
			delete(e.users, u.id)
			if u.role == auth.RoleSupervisor {
				delete(e.sups, u.id)
				if len(e.sups) == 0 && e.supSub != nil {
					subs = append(subs, e.supSub)
					e.supSub = nil
				}
			}
		}
	}
	e.mu.Unlock()
	for _, s := range subs {
		_ = s.Close()
	}
	if err := e.toCore(identityCommand(cmdClose, c)); err != nil {
		e.log.Warn("announce closed connection", "err", err)
	}
}

// joinConvLocked makes u a local member of conversation cid, subscribing the
// node to its topics when u is its first local member; it then returns the
// new edgeConv, which with hold set keeps live messages until catchUp.
func (e *edge) joinConvLocked(cid string, u *edgeUser, hold bool) (fresh *edgeConv) {
	if _, ok := u.convs[cid]; ok {
		return nil
	}
	ec := e.convs[cid]
	if ec == nil {
		ec = &edgeConv{users: map[string]struct{}{}, catching: hold}
		msg, err := e.bus.Subscribe(e.ctx, topicConv(cid), fanout.SubscribeOptions{Buffer: 4096, Policy: fanout.Disconnect, OnPublication: func(p fanout.Publication) { e.onConvMessage(cid, p) }})
		if err != nil {
			e.log.Error("subscribe conversation", "conv", cid, "err", err)
			return nil
		}
		eph, err := e.bus.Subscribe(e.ctx, topicEph(cid), fanout.SubscribeOptions{Buffer: 1024, Policy: fanout.DropOldest, OnPublication: func(p fanout.Publication) { e.onEph(cid, p) }})
		if err != nil {
			_ = msg.Close()
			e.log.Error("subscribe conversation", "conv", cid, "err", err)
			return nil
		}
		ec.msgSub, ec.ephSub = msg, eph
		e.convs[cid] = ec
		fresh = ec
	}
	ec.users[u.id] = struct{}{}
	u.convs[cid] = struct{}{}
	return fresh
}

// catchUp sends the local members of a freshly subscribed conversation the
// stored messages whose transcript offset is above since (where the core's
// event placed them), then the live ones it held. Beyond one page, or when
// the store fails, members resume from the transcript as for any gap.
func (e *edge) catchUp(cid string, ec *edgeConv, since uint64) {
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.StoreTimeout)
	msgs, err := e.data.repo.Messages(ctx, cid, since, resumePage)
	cancel()
	if err != nil {
		e.log.Warn("catch up conversation", "conv", cid, "err", err)
	}
	ec.mu.Lock()
	defer ec.mu.Unlock()
	for i := range msgs {
		e.sendConvLocked(cid, ec, msgs[i].Offset, protocol.MustEncode(messageEnvelope(&msgs[i])))
	}
	for _, p := range ec.held {
		e.sendConvLocked(cid, ec, transcriptOffset(p.Payload), p.Payload)
	}
	ec.held, ec.catching = nil, false
}

// transcriptOffset reads a published message's transcript offset.
func transcriptOffset(payload []byte) uint64 {
	var m struct {
		Offset uint64 `json:"offset"`
	}
	_ = sonic.ConfigStd.Unmarshal(payload, &m) // 0 (always sent) if undecodable
	return m.Offset
}

// sendConvLocked writes a message to cid's local members unless its
// transcript offset was sent already; ec.mu is held, so messages go out in
// offset order.
func (e *edge) sendConvLocked(cid string, ec *edgeConv, offset uint64, payload []byte) {
	if offset != 0 {
		if offset <= ec.last {
			return
		}
		ec.last = offset
	}
	conns := e.localConns(cid, "")
	if len(conns) == 0 {
		return
	}
	pm, err := gateway.NewPreparedMessage(gateway.TextMessage, payload)
	if err != nil {
		return
	}
	e.gw.Broadcast(pm, conns)
}

// leaveConvLocked removes u from cid and returns the subscriptions to close.
func (e *edge) leaveConvLocked(cid string, u *edgeUser) []*fanout.Subscription {
	delete(u.convs, cid)
	ec := e.convs[cid]
	if ec == nil {
		return nil
	}
	delete(ec.users, u.id)
	if len(ec.users) > 0 {
		return nil
	}
	delete(e.convs, cid)
	return []*fanout.Subscription{ec.msgSub, ec.ephSub}
}

// onUserEvent updates which conversations the user may see on this node, then
// forwards the event to the user's local connections.
func (e *edge) onUserEvent(uid string, payload []byte) {
	// Core events are trusted and may exceed the client frame limits that
	// protocol.Decode enforces (a hello listing many conversations).
	var env protocol.Envelope
	if err := sonic.ConfigStd.Unmarshal(payload, &env); err != nil {
		e.log.Warn("undecodable core event", "user", uid, "err", err)
		return
	}
	if env.Target != 0 && env.Node != e.node {
		return // for a connection on another node
	}
	var closing []*fanout.Subscription
	var fresh *edgeConv
	e.mu.Lock()
	if u := e.users[uid]; u != nil {
		switch env.Type {
		case protocol.TypeHello:
			for _, ci := range env.Convs {
				e.joinConvLocked(ci.Conv, u, false) // the client resumes from the offsets in hello
				if ec := e.convs[ci.Conv]; ec != nil && (ci.State == "resolved" || ci.State == "closed") {
					ec.closed = true
				}
			}
		case protocol.TypeQueued, protocol.TypeAssigned, protocol.TypeWatch:
			fresh = e.joinConvLocked(env.Conv, u, true)
		case protocol.TypeResolved:
			if ec := e.convs[env.Conv]; ec != nil {
				ec.closed = true
			}
		case protocol.TypeUnwatch:
			closing = e.leaveConvLocked(env.Conv, u)
		case protocol.TypeTransferred:
			if env.From == uid {
				closing = e.leaveConvLocked(env.Conv, u)
			}
		}
	}
	e.mu.Unlock()
	for _, s := range closing {
		_ = s.Close()
	}
	if fresh != nil {
		// After the event itself, which tells the member the conversation.
		defer e.catchUp(env.Conv, fresh, env.Offset)
	}
	if env.Target != 0 {
		// For one connection (hello, a reply): strip the routing fields.
		if c, ok := e.gw.Conn(env.Target); ok && c.Identity().UserID == uid {
			env.Target = 0
			if env.Type != protocol.TypeHello {
				env.Node = ""
			}
			send(c, &env)
		}
		return
	}
	e.gw.SendToUser(uid, gateway.TextMessage, payload)
}

func (e *edge) onSupEvent(p fanout.Publication) {
	e.mu.Lock()
	ids := make([]string, 0, len(e.sups))
	for id := range e.sups {
		ids = append(ids, id)
	}
	e.mu.Unlock()
	for _, id := range ids {
		e.gw.SendToUser(id, gateway.TextMessage, p.Payload)
	}
}

// localConns returns the local connections of cid's local members, except
// those of the user skip.
func (e *edge) localConns(cid, skip string) []*gateway.Conn {
	e.mu.Lock()
	ec := e.convs[cid]
	var ids []string
	if ec != nil {
		for id := range ec.users {
			if id != skip {
				ids = append(ids, id)
			}
		}
	}
	e.mu.Unlock()
	var conns []*gateway.Conn
	for _, id := range ids {
		conns = append(conns, e.gw.UserConns(id)...)
	}
	return conns
}

// onConvMessage writes a conversation message (which carries its transcript
// offset) to every local member's connection, framed once.
func (e *edge) onConvMessage(cid string, p fanout.Publication) {
	e.mu.Lock()
	ec := e.convs[cid]
	e.mu.Unlock()
	if ec == nil {
		return
	}
	ec.mu.Lock()
	defer ec.mu.Unlock()
	if ec.catching {
		ec.held = append(ec.held, p)
		return
	}
	e.sendConvLocked(cid, ec, transcriptOffset(p.Payload), p.Payload)
}

// ephFrom is the part of an ephemeral event the edge routes on.
type ephFrom struct {
	Type string `json:"type"`
	From string `json:"from"`
}

// onEph delivers typing (not to its sender) and read events.
func (e *edge) onEph(cid string, p fanout.Publication) {
	var ev ephFrom
	if err := sonic.ConfigStd.Unmarshal(p.Payload, &ev); err != nil {
		return
	}
	skip := ""
	if ev.Type == protocol.TypeTyping {
		skip = ev.From
	}
	conns := e.localConns(cid, skip)
	if len(conns) == 0 {
		return
	}
	pm, err := gateway.NewPreparedMessage(gateway.TextMessage, p.Payload)
	if err != nil {
		return
	}
	e.gw.Broadcast(pm, conns)
}

// membership reports whether uid is a local member of cid (customer,
// assigned agent or watching supervisor) and whether cid is closed.
func (e *edge) membership(uid, cid string) (member, closed bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	u := e.users[uid]
	if u == nil {
		return false, false
	}
	if _, ok := u.convs[cid]; !ok {
		return false, false
	}
	ec := e.convs[cid]
	return true, ec != nil && ec.closed
}

func (e *edge) isMember(uid, cid string) bool {
	m, _ := e.membership(uid, cid)
	return m
}

func (e *edge) onMessage(c *gateway.Conn, typ gateway.MessageType, data []byte) {
	if typ != gateway.TextMessage {
		e.reply(c, protocol.Error(protocol.ErrCodeBadJSON, "", "", "binary frames are not part of the protocol"))
		return
	}
	env, err := protocol.Decode(data)
	if err != nil {
		var de *protocol.DecodeError
		if errors.As(err, &de) && de.Partial {
			e.reply(c, protocol.Error(protocol.ErrCodeBadJSON, protocol.RefOf(&env), env.Conv, "%s", de.Reason))
			return
		}
		e.reply(c, protocol.Error(protocol.ErrCodeBadJSON, "", "", "%s", protocol.PublicReason(err)))
		return
	}
	// One authorization table, shared with the tests: type, role, required
	// fields (internal/protocol/spec.json).
	switch code := protocol.Embedded().Admit(&env, string(c.Identity().Role)); code {
	case "":
	case protocol.ErrCodeUnknownType:
		e.reply(c, protocol.Error(code, protocol.RefOf(&env), env.Conv, "unknown message type %q", env.Type))
		return
	case protocol.ErrCodeForbidden:
		e.reply(c, protocol.Error(code, protocol.RefOf(&env), env.Conv, "a %s may not send %s", c.Identity().Role, env.Type))
		return
	default:
		r := protocol.Embedded().ClientTypes[env.Type]
		e.reply(c, protocol.Error(code, protocol.RefOf(&env), env.Conv, "%s needs %s", env.Type, r.Missing(&env, string(c.Identity().Role))))
		return
	}
	id := c.Identity()
	uid := id.UserID
	from := sender{id: uid, role: string(id.Role), name: claimsOf(c).Name}
	notMember := func() { e.data.notMember(c, &env) }
	switch env.Type {
	case protocol.TypePing:
		e.reply(c, &protocol.Envelope{Type: protocol.TypePong, ID: env.ID})
	case protocol.TypeMessage:
		if env.Text == "" || env.ID == "" {
			e.reply(c, protocol.Error(protocol.ErrCodeBadRequest, protocol.RefOf(&env), env.Conv, "message needs id and text"))
			return
		}
		if env.Conv == "" {
			e.toCoreOrFail(c, &env) // a customer's first message opens the conversation
			return
		}
		member, closed := e.membership(uid, env.Conv)
		switch {
		case !member || from.role == auth.RoleSupervisor:
			notMember()
		case closed:
			e.reply(c, protocol.Error(protocol.ErrCodeNoConversation, protocol.RefOf(&env), env.Conv, "the conversation is finished; send a message without conv to start a new one"))
		default:
			e.data.submit(e.node, c.ID(), from, &env)
		}
	case protocol.TypeRead:
		if !e.isMember(uid, env.Conv) {
			notMember()
			return
		}
		e.data.read(c, from, &env)
	case protocol.TypeHistory:
		if from.role == auth.RoleAgent && !e.isMember(uid, env.Conv) && !e.data.exists(env.Conv) {
			e.reply(c, protocol.Error(protocol.ErrCodeNoConversation, protocol.RefOf(&env), env.Conv, "no such conversation"))
			return
		}
		if !canHistory(from.role, e.isMember(uid, env.Conv)) {
			e.reply(c, protocol.Error(protocol.ErrCodeForbidden, protocol.RefOf(&env), env.Conv, "only the assigned agent or a supervisor may read the customer's history"))
			return
		}
		e.data.history(c, &env)
	case protocol.TypeTyping:
		if !e.isMember(uid, env.Conv) || from.role == auth.RoleSupervisor {
			notMember()
			return
		}
		st := "off"
		if env.State == "on" {
			st = "on"
		}
		ev := &protocol.Envelope{Type: protocol.TypeTyping, Conv: env.Conv, From: uid, Role: string(c.Identity().Role), State: st, TS: time.Now().UnixMilli()}
		if _, err := e.bus.Publish(c.Context(), topicEph(env.Conv), protocol.MustEncode(ev)); err != nil {
			e.log.Warn("publish typing", "conv", env.Conv, "err", err)
		}
	case protocol.TypeResume:
		if !e.isMember(uid, env.Conv) {
			notMember()
			return
		}
		e.data.resume(c, &env)
	default:
		e.toCoreOrFail(c, &env)
	}
}

func (e *edge) toCoreOrFail(c *gateway.Conn, env *protocol.Envelope) {
	cmd := identityCommand(cmdEnv, c)
	cmd.Env = env
	if err := e.toCore(cmd); err != nil {
		e.reply(c, protocol.Error(protocol.ErrCodeUnavailable, protocol.RefOf(env), env.Conv, "the control plane is unreachable; retry"))
	}
}
