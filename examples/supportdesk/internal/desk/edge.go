package desk

import (
	"errors"
	"log/slog"
	"strconv"
	"strings"
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
	node string
	bus  *fanout.Bus
	gw   *gateway.Gateway
	log  *slog.Logger

	mu     sync.Mutex
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
	msgSub, ephSub *fanout.Subscription
}

func newEdge(node string, bus *fanout.Bus, log *slog.Logger) *edge {
	return &edge{node: node, bus: bus, log: log, users: map[string]*edgeUser{}, convs: map[string]*edgeConv{}, sups: map[string]struct{}{}}
}

func identityCommand(kind string, c *gateway.Conn) *command {
	id := c.Identity()
	cmd := &command{Kind: kind, Conn: c.ID(), User: id.UserID, Role: string(id.Role), Name: id.Attrs["name"], Tier: id.Attrs["tier"]}
	if s := id.Attrs["skills"]; s != "" {
		cmd.Skills = strings.Split(s, ",")
	}
	if s := id.Attrs["capacity"]; s != "" {
		cmd.Capacity, _ = strconv.Atoi(s)
	}
	return cmd
}

func (e *edge) toCore(cmd *command) error {
	cmd.Node = e.node
	b, err := encodeCommand(cmd)
	if err != nil {
		return err
	}
	_, err = e.bus.Publish(topicCore, b)
	return err
}

func (e *edge) reply(c *gateway.Conn, env *protocol.Envelope) {
	if env.TS == 0 {
		env.TS = time.Now().UnixMilli()
	}
	_ = c.Send(gateway.TextMessage, protocol.MustEncode(env))
}

// onOpen subscribes the user's topic (once per node) and announces the
// connection to the core, which answers with hello.
func (e *edge) onOpen(c *gateway.Conn) {
	id := c.Identity()
	e.mu.Lock()
	u := e.users[id.UserID]
	if u == nil {
		u = &edgeUser{id: id.UserID, role: string(id.Role), convs: map[string]struct{}{}}
		uid := u.id
		sub, err := e.bus.Subscribe(topicUser(uid), fanout.SubscribeOptions{
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
			sub, err := e.bus.Subscribe(topicSup, fanout.SubscribeOptions{Buffer: 1024, Policy: fanout.DropOldest, OnPublication: e.onSupEvent})
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
	_ = e.toCore(identityCommand(cmdClose, c))
}

// joinConvLocked makes u a local member of conversation cid, subscribing the
// node to its topics when u is its first local member.
func (e *edge) joinConvLocked(cid string, u *edgeUser) {
	if _, ok := u.convs[cid]; ok {
		return
	}
	ec := e.convs[cid]
	if ec == nil {
		ec = &edgeConv{users: map[string]struct{}{}}
		msg, err := e.bus.Subscribe(topicConv(cid), fanout.SubscribeOptions{Buffer: 4096, Policy: fanout.Disconnect, OnPublication: func(p fanout.Publication) { e.onConvMessage(cid, p) }})
		if err != nil {
			e.log.Error("subscribe conversation", "conv", cid, "err", err)
			return
		}
		eph, err := e.bus.Subscribe(topicEph(cid), fanout.SubscribeOptions{Buffer: 1024, Policy: fanout.DropOldest, OnPublication: func(p fanout.Publication) { e.onEph(cid, p) }})
		if err != nil {
			_ = msg.Close()
			e.log.Error("subscribe conversation", "conv", cid, "err", err)
			return
		}
		ec.msgSub, ec.ephSub = msg, eph
		e.convs[cid] = ec
	}
	ec.users[u.id] = struct{}{}
	u.convs[cid] = struct{}{}
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
	var closing []*fanout.Subscription
	e.mu.Lock()
	if u := e.users[uid]; u != nil {
		switch env.Type {
		case protocol.TypeHello:
			for _, ci := range env.Convs {
				e.joinConvLocked(ci.Conv, u)
			}
		case protocol.TypeQueued, protocol.TypeAssigned, protocol.TypeWatch:
			e.joinConvLocked(env.Conv, u)
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

// withOffset appends the publication's offset and epoch to a message
// envelope (a JSON object) so that clients can resume from it.
func withOffset(payload []byte, off uint64, epoch string) []byte {
	if len(payload) < 2 || payload[len(payload)-1] != '}' {
		return payload
	}
	b := make([]byte, 0, len(payload)+48+len(epoch))
	b = append(b, payload[:len(payload)-1]...)
	b = append(b, `,"offset":`...)
	b = strconv.AppendUint(b, off, 10)
	b = append(b, `,"epoch":`...)
	b = strconv.AppendQuote(b, epoch)
	return append(b, '}')
}

// localConns returns the local connections of cid's local members.
func (e *edge) localConns(cid string) []*gateway.Conn {
	e.mu.Lock()
	ec := e.convs[cid]
	var ids []string
	if ec != nil {
		for id := range ec.users {
			ids = append(ids, id)
		}
	}
	e.mu.Unlock()
	var conns []*gateway.Conn
	for _, id := range ids {
		conns = append(conns, e.gw.UserConns(id)...)
	}
	return conns
}

// onConvMessage encodes a conversation message once and writes the same
// frame to every local member's connection.
func (e *edge) onConvMessage(cid string, p fanout.Publication) {
	conns := e.localConns(cid)
	if len(conns) == 0 {
		return
	}
	pm, err := gateway.NewPreparedMessage(gateway.TextMessage, withOffset(p.Payload, p.Offset, p.Epoch))
	if err != nil {
		return
	}
	e.gw.Broadcast(pm, conns)
}

func (e *edge) onEph(cid string, p fanout.Publication) {
	conns := e.localConns(cid)
	if len(conns) == 0 {
		return
	}
	pm, err := gateway.NewPreparedMessage(gateway.TextMessage, p.Payload)
	if err != nil {
		return
	}
	e.gw.Broadcast(pm, conns)
}

func (e *edge) isMember(uid, cid string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	u := e.users[uid]
	if u == nil {
		return false
	}
	_, ok := u.convs[cid]
	return ok
}

// clientTypes are the envelope types a client may send.
var clientTypes = map[string]bool{
	protocol.TypeStart: true, protocol.TypeMessage: true, protocol.TypeTyping: true, protocol.TypeRead: true,
	protocol.TypeResume: true, protocol.TypeCancel: true, protocol.TypeAccept: true, protocol.TypeDecline: true,
	protocol.TypePresence: true, protocol.TypeTransfer: true, protocol.TypeResolve: true, protocol.TypeWatch: true,
	protocol.TypeUnwatch: true, protocol.TypePing: true,
}

func (e *edge) onMessage(c *gateway.Conn, typ gateway.MessageType, data []byte) {
	if typ != gateway.TextMessage {
		e.reply(c, protocol.Error(protocol.ErrCodeBadJSON, "", "", "binary frames are not part of the protocol"))
		return
	}
	env, err := protocol.Decode(data)
	if err != nil {
		e.reply(c, protocol.Error(protocol.ErrCodeBadJSON, "", "", "%v", err))
		return
	}
	if !clientTypes[env.Type] {
		e.reply(c, protocol.Error(protocol.ErrCodeUnknownType, env.Type, env.Conv, "unknown message type %q", env.Type))
		return
	}
	uid := c.Identity().UserID
	switch env.Type {
	case protocol.TypePing:
		e.reply(c, &protocol.Envelope{Type: protocol.TypePong, ID: env.ID})
	case protocol.TypeTyping:
		if !e.isMember(uid, env.Conv) {
			e.reply(c, protocol.Error(protocol.ErrCodeNotParticipant, env.Type, env.Conv, "you are not a participant of this conversation"))
			return
		}
		st := "off"
		if env.State == "on" {
			st = "on"
		}
		ev := &protocol.Envelope{Type: protocol.TypeTyping, Conv: env.Conv, From: uid, Role: string(c.Identity().Role), State: st, TS: time.Now().UnixMilli()}
		_, _ = e.bus.Publish(topicEph(env.Conv), protocol.MustEncode(ev))
	case protocol.TypeResume:
		e.resume(c, uid, &env)
	default:
		cmd := identityCommand(cmdEnv, c)
		cmd.Env = &env
		if err := e.toCore(cmd); err != nil {
			e.reply(c, protocol.Error(protocol.ErrCodeInternal, env.Type, env.Conv, "core unavailable: %v", err))
		}
	}
}

// resume sends the client every message of env.Conv after env.Offset in
// env.Epoch (all history when both are zero), or a reload instruction when
// the history no longer covers them. Live messages may overlap what resume
// sends: clients skip offsets they already have.
func (e *edge) resume(c *gateway.Conn, uid string, env *protocol.Envelope) {
	if !e.isMember(uid, env.Conv) {
		e.reply(c, protocol.Error(protocol.ErrCodeNotParticipant, env.Type, env.Conv, "you are not a participant of this conversation"))
		return
	}
	topic := topicConv(env.Conv)
	epoch := env.Epoch
	if epoch == "" && env.Offset == 0 {
		pos, err := e.bus.Position(topic)
		if err != nil {
			e.reply(c, protocol.Error(protocol.ErrCodeInternal, env.Type, env.Conv, "history unavailable: %v", err))
			return
		}
		epoch = pos.Epoch
	}
	pubs, err := e.bus.Recover(topic, env.Offset, epoch)
	if err != nil {
		var gap *fanout.GapError
		if errors.As(err, &gap) {
			e.reply(c, &protocol.Envelope{Type: protocol.TypeReload, Conv: env.Conv, Offset: gap.Current.Offset, Epoch: gap.Current.Epoch, Message: "history no longer covers your position; reload the conversation"})
			return
		}
		e.reply(c, protocol.Error(protocol.ErrCodeInternal, env.Type, env.Conv, "recovery failed: %v", err))
		return
	}
	for _, p := range pubs {
		if err := c.Send(gateway.TextMessage, withOffset(p.Payload, p.Offset, p.Epoch)); err != nil {
			return
		}
	}
}
