package desk

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/gateway"
	"github.com/switchboard-go/switchboard/observe"
	"github.com/switchboard-go/switchboard/session"
)

// dataPlane stores and fans out chat messages and read markers, serves
// resume and history from the transcript, and never goes through the core:
// the edge that holds the sender's connection authorizes the request, then
// the data plane writes it to the repository and publishes it.
//
// Messages of one conversation go through one lane, in order: append
// (durable; concurrent appends of all lanes share group commits), ack to
// the sender, publish to the conversation's topic. Lanes of different
// conversations run in parallel, so one busy conversation delays no other.
type dataPlane struct {
	node    string
	repo    session.Repository
	bus     *fanout.Bus
	gw      *gateway.Gateway
	log     *slog.Logger
	cfg     *Config
	ctx     context.Context
	cancel  context.CancelFunc
	limiter *senderLimiter
	report  func(*command) error // to the partition owner (edge.toCore)

	mu     sync.Mutex
	lanes  map[string]*lane
	closed bool
	wg     sync.WaitGroup
}

type sender struct{ id, role, name string }

type pendingMsg struct {
	from  sender
	env   protocol.Envelope
	reply func(*protocol.Envelope)
}

type lane struct{ q []pendingMsg }

// maxLane bounds the messages waiting in one conversation's lane.
const maxLane = 1024

func newDataPlane(parent context.Context, node string, repo session.Repository, bus *fanout.Bus, cfg *Config, log *slog.Logger) *dataPlane {
	ctx, cancel := context.WithCancel(parent)
	return &dataPlane{
		node: node, repo: repo, bus: bus, cfg: cfg, log: log, ctx: ctx, cancel: cancel,
		lanes:   map[string]*lane{},
		limiter: newSenderLimiter(cfg.MessageRate, cfg.MessageBurst),
	}
}

// close stops intake, waits for the lanes to finish what they hold (their
// appends are bounded by StoreTimeout) and returns.
func (d *dataPlane) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.wg.Wait()
	d.cancel()
}

// replyTo answers on one connection: directly when it is local, through the
// user's topic (targeted at that connection) otherwise.
func (d *dataPlane) replyTo(node string, conn uint64, user string) func(*protocol.Envelope) {
	if node == d.node {
		return func(e *protocol.Envelope) {
			if c, ok := d.gw.Conn(conn); ok {
				send(c, e)
			}
		}
	}
	return func(e *protocol.Envelope) {
		e.Target, e.Node = conn, node
		if _, err := d.bus.Publish(d.ctx, topicUser(user), protocol.MustEncode(e)); err != nil {
			d.log.Warn("reply to remote connection", "user", user, "err", err)
		}
	}
}

func send(c *gateway.Conn, e *protocol.Envelope) {
	if e.TS == 0 {
		e.TS = time.Now().UnixMilli()
	}
	_ = c.Send(gateway.TextMessage, protocol.MustEncode(e))
}

// submit queues an authorized message for storage in its conversation's lane.
func (d *dataPlane) submit(node string, conn uint64, from sender, e *protocol.Envelope) {
	reply := d.replyTo(node, conn, from.id)
	if !d.limiter.allow(from.id, e.Conv, time.Now()) {
		reply(protocol.Error(protocol.ErrCodeRateLimited, protocol.RefOf(e), e.Conv, "more than %g messages/s in this conversation; slow down and retry with the same id", d.cfg.MessageRate))
		return
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		reply(protocol.Error(protocol.ErrCodeUnavailable, protocol.RefOf(e), e.Conv, "the node is shutting down; retry on another node"))
		return
	}
	l := d.lanes[e.Conv]
	start := l == nil
	if start {
		l = &lane{}
		d.lanes[e.Conv] = l
	}
	if len(l.q) >= maxLane {
		d.mu.Unlock()
		reply(protocol.Error(protocol.ErrCodeRateLimited, protocol.RefOf(e), e.Conv, "too many messages waiting in this conversation; retry with the same id"))
		return
	}
	l.q = append(l.q, pendingMsg{from: from, env: *e, reply: reply})
	if start {
		d.wg.Add(1)
	}
	d.mu.Unlock()
	if start {
		go d.runLane(e.Conv, l)
	}
}

func (d *dataPlane) runLane(conv string, l *lane) {
	defer d.wg.Done()
	for {
		d.mu.Lock()
		if len(l.q) == 0 {
			delete(d.lanes, conv)
			d.mu.Unlock()
			return
		}
		p := l.q[0]
		l.q[0] = pendingMsg{}
		l.q = l.q[1:]
		d.mu.Unlock()
		d.store(p)
	}
}

// exists reports whether conv has a record (errors count as existing).
func (d *dataPlane) exists(conv string) bool {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.StoreTimeout)
	defer cancel()
	_, err := d.repo.Get(ctx, conv)
	return !errors.Is(err, session.ErrRecordNotFound)
}

// notMember answers a request for a conversation the sender is not in:
// no_conversation when it does not exist, not_participant otherwise.
func (d *dataPlane) notMember(c *gateway.Conn, e *protocol.Envelope) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.StoreTimeout)
	defer cancel()
	if e.Conv == "" {
		send(c, protocol.Error(protocol.ErrCodeBadRequest, protocol.RefOf(e), "", "%s needs conv", e.Type))
		return
	}
	if _, err := d.repo.Get(ctx, e.Conv); errors.Is(err, session.ErrRecordNotFound) {
		send(c, protocol.Error(protocol.ErrCodeNoConversation, protocol.RefOf(e), e.Conv, "no such conversation"))
		return
	}
	send(c, protocol.Error(protocol.ErrCodeNotParticipant, protocol.RefOf(e), e.Conv, "you are not a participant of this conversation"))
}

// storeErrorCode maps a repository error to the protocol's code.
func storeErrorCode(err error) string {
	if errors.Is(err, session.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, session.ErrRepositoryClosed) {
		return protocol.ErrCodeUnavailable
	}
	return protocol.ErrCodeInternal
}

// store appends one message, acknowledges it once durable, then publishes it.
func (d *dataPlane) store(p pendingMsg) {
	e := &p.env
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.StoreTimeout)
	res, err := d.repo.Append(ctx, session.Message{
		Conversation: e.Conv, Sender: p.from.id, SenderName: p.from.name, SenderRole: p.from.role,
		ClientID: e.ID, Body: e.Text, Traceparent: e.Traceparent, Tracestate: e.Tracestate,
	})
	cancel()
	if err != nil {
		d.log.Warn("message not stored", "conv", e.Conv, "from", p.from.id, "err", err)
		p.reply(protocol.Error(storeErrorCode(err), protocol.RefOf(e), e.Conv, "message not stored; retry with the same id"))
		return
	}
	m := res.Message
	tctx := observe.Extract(d.ctx, observe.MapCarrier{"traceparent": e.Traceparent, "tracestate": e.Tracestate})
	d.log.DebugContext(tctx, "message stored", "conv", e.Conv, "from", p.from.id, "offset", m.Offset, "duplicate", res.Duplicate)
	// The ack first: it is the promise that the message is stored; the
	// message itself follows on the conversation's topic.
	p.reply(&protocol.Envelope{Type: protocol.TypeAck, Conv: e.Conv, ID: e.ID, Offset: m.Offset, Epoch: transcriptEpoch, TS: m.At.UnixMilli()})
	if res.Duplicate {
		return
	}
	if _, err := d.bus.Publish(d.ctx, topicConv(e.Conv), protocol.MustEncode(messageEnvelope(&m))); err != nil {
		// Stored and acknowledged: readers get it with resume.
		d.log.Warn("publish message", "conv", e.Conv, "err", err)
	}
	cmd := &command{Kind: cmdStored, Key: "s:" + e.Conv + ":" + strconv.FormatUint(m.Offset, 10), User: p.from.id, Role: p.from.role, Env: &protocol.Envelope{Type: protocol.TypeMessage, Conv: e.Conv, Offset: m.Offset, TS: m.At.UnixMilli()}}
	if err := d.report(cmd); err != nil {
		d.log.Warn("report stored message to the owner", "conv", e.Conv, "err", err)
	}
}

func messageEnvelope(m *session.Message) *protocol.Envelope {
	return &protocol.Envelope{
		Type: protocol.TypeMessage, Conv: m.Conversation, ID: m.ClientID, From: m.Sender, Name: m.SenderName, Role: m.SenderRole,
		Text: m.Body, TS: m.At.UnixMilli(), Offset: m.Offset, Epoch: transcriptEpoch, Traceparent: m.Traceparent, Tracestate: m.Tracestate,
	}
}

// read moves the reader's durable read marker and tells the conversation.
// A read that does not move the marker is not answered.
func (d *dataPlane) read(c *gateway.Conn, from sender, e *protocol.Envelope) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.StoreTimeout)
	defer cancel()
	last, err := d.repo.LastOffset(ctx, e.Conv)
	if err != nil {
		send(c, protocol.Error(storeErrorCode(err), protocol.RefOf(e), e.Conv, "read marker not stored; retry"))
		return
	}
	if e.Offset > last {
		send(c, protocol.Error(protocol.ErrCodeBadRequest, protocol.RefOf(e), e.Conv, "read offset %d is beyond the last message %d", e.Offset, last))
		return
	}
	moved, err := d.repo.SetRead(ctx, e.Conv, from.id, e.Offset)
	if err != nil {
		send(c, protocol.Error(storeErrorCode(err), protocol.RefOf(e), e.Conv, "read marker not stored; retry"))
		return
	}
	if !moved {
		return
	}
	ev := &protocol.Envelope{Type: protocol.TypeRead, Conv: e.Conv, From: from.id, Role: from.role, Offset: e.Offset, TS: time.Now().UnixMilli()}
	if _, err := d.bus.Publish(ctx, topicEph(e.Conv), protocol.MustEncode(ev)); err != nil {
		d.log.Warn("publish read", "err", err)
	}
}

// resumePage is how many messages resume reads from the store at a time.
const resumePage = 500

// resume sends every stored message of e.Conv after e.Offset, then a
// resumed marker. A different epoch means the client's copy is from another
// numbering: it gets reload.
func (d *dataPlane) resume(c *gateway.Conn, e *protocol.Envelope) {
	if e.Epoch != "" && e.Epoch != transcriptEpoch {
		send(c, &protocol.Envelope{Type: protocol.TypeReload, Conv: e.Conv, Epoch: transcriptEpoch, Message: "your copy is from another epoch; drop it and resume from the start"})
		return
	}
	after := e.Offset
	for {
		ctx, cancel := context.WithTimeout(d.ctx, d.cfg.StoreTimeout)
		msgs, err := d.repo.Messages(ctx, e.Conv, after, resumePage)
		cancel()
		if err != nil {
			send(c, protocol.Error(storeErrorCode(err), protocol.RefOf(e), e.Conv, "history unavailable; retry"))
			return
		}
		for i := range msgs {
			if err := c.Send(gateway.TextMessage, protocol.MustEncode(messageEnvelope(&msgs[i]))); err != nil {
				return
			}
			after = msgs[i].Offset
		}
		if len(msgs) < resumePage {
			break
		}
	}
	send(c, &protocol.Envelope{Type: protocol.TypeResumed, Conv: e.Conv, Offset: after, Epoch: transcriptEpoch})
}

// historyConvs and historyMessages bound a history answer.
const (
	historyConvs    = 10
	historyMessages = 200
)

// history answers an agent (assigned to e.Conv) or a supervisor with the
// customer's earlier conversations and the end of their transcripts.
func (d *dataPlane) history(c *gateway.Conn, e *protocol.Envelope) {
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.StoreTimeout)
	defer cancel()
	rec, err := d.repo.Get(ctx, e.Conv)
	if errors.Is(err, session.ErrRecordNotFound) {
		send(c, protocol.Error(protocol.ErrCodeNoConversation, protocol.RefOf(e), e.Conv, "no such conversation"))
		return
	}
	if err != nil {
		send(c, protocol.Error(storeErrorCode(err), protocol.RefOf(e), e.Conv, "history unavailable; retry"))
		return
	}
	recs, err := d.repo.CustomerConversations(ctx, rec.Customer, 4*historyConvs)
	if err != nil {
		send(c, protocol.Error(storeErrorCode(err), protocol.RefOf(e), e.Conv, "history unavailable; retry"))
		return
	}
	out := &protocol.Envelope{Type: protocol.TypeHistory, Conv: e.Conv, Customer: rec.Customer, Name: rec.CustomerName}
	for _, r := range recs {
		if r.ID == e.Conv || len(out.Convs) == historyConvs || !r.Conversation.Created.Before(rec.Conversation.Created) {
			continue // only conversations opened before the requested one
		}
		last, err := d.repo.LastOffset(ctx, r.ID)
		if err != nil {
			send(c, protocol.Error(storeErrorCode(err), protocol.RefOf(e), e.Conv, "history unavailable; retry"))
			return
		}
		after := uint64(0)
		if last > historyMessages {
			after = last - historyMessages
		}
		msgs, err := d.repo.Messages(ctx, r.ID, after, historyMessages)
		if err != nil {
			send(c, protocol.Error(storeErrorCode(err), protocol.RefOf(e), e.Conv, "history unavailable; retry"))
			return
		}
		out.Convs = append(out.Convs, protocol.ConvInfo{Conv: r.ID, State: stateName(r.Conversation.State), Customer: r.Customer, Name: r.CustomerName, Agent: r.Conversation.Assignee, Tier: tierNames[r.Tier], Offset: last, Epoch: transcriptEpoch, Created: r.Conversation.Created.UnixMilli()})
		for i := range msgs {
			out.Items = append(out.Items, *messageEnvelope(&msgs[i]))
		}
	}
	send(c, out)
}

// syncHint tells local members of conv that they may have missed messages
// (their subscription was restored): a sync with the transcript's last
// offset, so clients behind it resume.
func (d *dataPlane) syncHint(conv string, conns []*gateway.Conn) {
	if len(conns) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(d.ctx, d.cfg.StoreTimeout)
	last, err := d.repo.LastOffset(ctx, conv)
	cancel()
	if err != nil {
		d.log.Warn("sync hint", "conv", conv, "err", err)
		return
	}
	pm, err := gateway.NewPreparedMessage(gateway.TextMessage, protocol.MustEncode(&protocol.Envelope{Type: protocol.TypeSync, Conv: conv, Offset: last, Epoch: transcriptEpoch, TS: time.Now().UnixMilli()}))
	if err != nil {
		return
	}
	d.gw.Broadcast(pm, conns)
}

// canHistory: supervisors, and the agent a conversation is assigned to.
func canHistory(role string, member bool) bool {
	return role == auth.RoleSupervisor || (role == auth.RoleAgent && member)
}

// senderLimiter is a token bucket per (sender, conversation): the per-sender
// message rate of PROTOCOL.md. Idle buckets are dropped.
type senderLimiter struct {
	rate, burst float64
	mu          sync.Mutex
	buckets     map[[2]string]*bucket
	swept       time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newSenderLimiter(rate float64, burst int) *senderLimiter {
	return &senderLimiter{rate: rate, burst: float64(burst), buckets: map[[2]string]*bucket{}}
}

func (l *senderLimiter) allow(user, conv string, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > 10*time.Second {
		for k, b := range l.buckets {
			if now.Sub(b.last) > time.Minute {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	k := [2]string{user, conv}
	b := l.buckets[k]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[k] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
