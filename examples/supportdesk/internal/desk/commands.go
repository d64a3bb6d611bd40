package desk

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/gateway"
)

// Commands from an edge to the partition owner are never fire-and-forget:
// each carries an idempotency key; the owner acknowledges it on the edge's
// node topic after handling it (and only acknowledges again, without
// handling it twice, when the same key comes back); the edge sends it again
// every CommandRetry until acknowledged, and after CommandDeadline answers
// the client "unavailable" (no owner could be reached).

// pendingCmds holds an edge's unacknowledged commands.
type pendingCmds struct {
	mu   sync.Mutex
	seq  uint64
	cmds map[string]*pendingCmd
}

type pendingCmd struct {
	payload     []byte
	first, last time.Time
	conn        uint64 // the client connection waiting for it (0: none)
	env         *protocol.Envelope
}

// key returns cmd's idempotency key: the client's request id when it gave
// one (so a client's own retry is recognised too), else a node-unique one.
func (p *pendingCmds) key(node string, cmd *command) string {
	if cmd.Env != nil && cmd.Env.ID != "" && cmd.Kind == cmdEnv {
		return "u:" + cmd.User + ":" + cmd.Env.Type + ":" + cmd.Env.ID
	}
	p.mu.Lock()
	p.seq++
	n := p.seq
	p.mu.Unlock()
	return "n:" + node + ":" + strconv.FormatUint(n, 36)
}

// toCore sends cmd to the partition owner reliably.
func (e *edge) toCore(cmd *command) error {
	cmd.Node = e.node
	if cmd.Key == "" {
		cmd.Key = e.pending.key(e.node, cmd)
	}
	b, err := encodeCommand(cmd)
	if err != nil {
		return err
	}
	now := time.Now()
	e.pending.mu.Lock()
	e.pending.cmds[cmd.Key] = &pendingCmd{payload: b, first: now, last: now, conn: cmd.Conn, env: cmd.Env}
	e.pending.mu.Unlock()
	if _, err := e.bus.Publish(e.ctx, topicCore, b); err != nil {
		// Kept: retryPending sends it again.
		e.log.Warn("command to the owner not sent; will retry", "key", cmd.Key, "err", err)
	}
	return nil
}

// onAck drops an acknowledged command.
func (e *edge) onAck(p fanout.Publication) {
	cmd, err := decodeCommand(p.Payload)
	if err != nil || cmd.Kind != cmdAck {
		return
	}
	e.pending.mu.Lock()
	delete(e.pending.cmds, cmd.Key)
	e.pending.mu.Unlock()
}

// retryPending resends unacknowledged commands and gives up on those past
// the deadline.
func (e *edge) retryPending(now time.Time) {
	var resend [][]byte
	var expired []*pendingCmd
	e.pending.mu.Lock()
	for k, pc := range e.pending.cmds {
		switch {
		case now.Sub(pc.first) >= e.cfg.CommandDeadline:
			delete(e.pending.cmds, k)
			expired = append(expired, pc)
		case now.Sub(pc.last) >= e.cfg.CommandRetry:
			pc.last = now
			resend = append(resend, pc.payload)
		}
	}
	e.pending.mu.Unlock()
	for _, b := range resend {
		if _, err := e.bus.Publish(e.ctx, topicCore, b); err != nil {
			e.log.Warn("command retry not sent", "err", err)
			break
		}
	}
	for _, pc := range expired {
		if pc.env == nil || pc.conn == 0 {
			continue
		}
		if c, ok := e.gw.Conn(pc.conn); ok {
			send(c, protocol.Error(protocol.ErrCodeUnavailable, protocol.RefOf(pc.env), pc.env.Conv, "no conversation owner answered within %v; retry", e.cfg.CommandDeadline))
		}
	}
}

// resendAll sends every pending command again at once (a new owner).
func (e *edge) resendAll() {
	e.pending.mu.Lock()
	var all [][]byte
	now := time.Now()
	for _, pc := range e.pending.cmds {
		pc.last = now
		all = append(all, pc.payload)
	}
	e.pending.mu.Unlock()
	for _, b := range all {
		if _, err := e.bus.Publish(e.ctx, topicCore, b); err != nil {
			e.log.Warn("command resend failed", "err", err)
			return
		}
	}
}

// onOwner handles a new partition owner: it re-announces every local
// connection (silently: no hello) so the owner knows who is online, and
// resends what was waiting.
func (e *edge) onOwner(p fanout.Publication) {
	cmd, err := decodeCommand(p.Payload)
	if err != nil || cmd.Kind != cmdOwner {
		return
	}
	e.log.Info("new partition owner", "owner", cmd.Node)
	e.reannounce(func(*gateway.Conn) bool { return true }, true)
	e.resendAll()
}

// reannounce sends an open command for every local connection matching
// match; resync opens update the owner without a hello.
func (e *edge) reannounce(match func(*gateway.Conn) bool, resync bool) {
	var conns []*gateway.Conn
	e.gw.Range(func(c *gateway.Conn) bool {
		if match(c) {
			conns = append(conns, c)
		}
		return true
	})
	for _, c := range conns {
		cmd := identityCommand(cmdOpen, c)
		cmd.Resync = resync
		if err := e.toCore(cmd); err != nil {
			e.log.Warn("re-announce connection", "err", err)
		}
	}
}

// onBusDisconnect restores a subscription the bus closed by itself (a Redis
// restart or a lost pub/sub connection that left a gap): the edge
// subscribes again, then makes the affected clients catch up — a user's
// connections get a fresh hello (and pending offers and positions), a
// conversation's local members a sync hint to resume from the transcript.
func (e *edge) onBusDisconnect(sub *fanout.Subscription, reason error) {
	if errors.Is(reason, fanout.ErrShutdown) {
		return
	}
	topic := sub.Topic()
	e.log.Warn("subscription lost; restoring it", "topic", topic, "reason", reason)
	e.restoring.Add(1)
	go func() {
		defer e.restoring.Done()
		e.restore(topic)
	}()
}

// restore resubscribes topic with backoff, until it works or the edge stops.
func (e *edge) restore(topic string) {
	delay := 100 * time.Millisecond
	for {
		select {
		case <-e.stopped:
			return
		default:
		}
		err := e.resubscribe(topic)
		if err == nil {
			return
		}
		e.log.Warn("resubscribe failed; retrying", "topic", topic, "err", err, "in", delay)
		select {
		case <-e.stopped:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

func (e *edge) resubscribe(topic string) error {
	switch {
	case topic == topicCore:
		return nil // the core resubscribes its own topic
	case topic == e.nodeTopic() || topic == topicOwner:
		return e.subscribeControl(topic)
	case topic == topicSup:
		e.mu.Lock()
		defer e.mu.Unlock()
		if len(e.sups) == 0 {
			e.supSub = nil
			return nil
		}
		sub, err := e.bus.Subscribe(e.ctx, topicSup, fanout.SubscribeOptions{Buffer: 1024, Policy: fanout.DropOldest, OnPublication: e.onSupEvent})
		if err != nil {
			return err
		}
		e.supSub = sub
		return nil
	case strings.HasPrefix(topic, "desk.user."):
		uid := strings.TrimPrefix(topic, "desk.user.")
		e.mu.Lock()
		u := e.users[uid]
		if u == nil {
			e.mu.Unlock()
			return nil
		}
		sub, err := e.bus.Subscribe(e.ctx, topic, fanout.SubscribeOptions{Buffer: 1024, Policy: fanout.DropOldest, OnPublication: func(p fanout.Publication) { e.onUserEvent(uid, p.Payload) }})
		if err != nil {
			e.mu.Unlock()
			return err
		}
		u.sub = sub
		e.mu.Unlock()
		// Events may have been lost: the owner sends a fresh hello.
		e.reannounce(func(c *gateway.Conn) bool { return c.Identity().UserID == uid }, false)
		return nil
	case strings.HasPrefix(topic, "desk.conv."), strings.HasPrefix(topic, "desk.eph."):
		cid := strings.TrimPrefix(strings.TrimPrefix(topic, "desk.conv."), "desk.eph.")
		e.mu.Lock()
		ec := e.convs[cid]
		if ec == nil {
			e.mu.Unlock()
			return nil
		}
		var err error
		if strings.HasPrefix(topic, "desk.conv.") {
			var sub *fanout.Subscription
			if sub, err = e.bus.Subscribe(e.ctx, topic, fanout.SubscribeOptions{Buffer: 4096, Policy: fanout.Disconnect, OnPublication: func(p fanout.Publication) { e.onConvMessage(cid, p) }}); err == nil {
				ec.msgSub = sub
			}
		} else {
			var sub *fanout.Subscription
			if sub, err = e.bus.Subscribe(e.ctx, topic, fanout.SubscribeOptions{Buffer: 1024, Policy: fanout.DropOldest, OnPublication: func(p fanout.Publication) { e.onEph(cid, p) }}); err == nil {
				ec.ephSub = sub
			}
		}
		e.mu.Unlock()
		if err != nil {
			return err
		}
		if strings.HasPrefix(topic, "desk.conv.") {
			e.data.syncHint(cid, e.localConns(cid, ""))
		}
		return nil
	}
	return nil
}

func (e *edge) nodeTopic() string { return topicNode(e.node) }

// subscribeControl subscribes the node's ack topic or the owner topic.
func (e *edge) subscribeControl(topic string) error {
	on := e.onAck
	if topic == topicOwner {
		on = e.onOwner
	}
	_, err := e.bus.Subscribe(e.ctx, topic, fanout.SubscribeOptions{Buffer: 1 << 14, Policy: fanout.DropOldest, OnPublication: on})
	return err
}

// start subscribes the edge's control topics.
func (e *edge) start() error {
	if err := e.subscribeControl(e.nodeTopic()); err != nil {
		return err
	}
	return e.subscribeControl(topicOwner)
}
