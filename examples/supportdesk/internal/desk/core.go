package desk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/observe"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/router"
	"github.com/switchboard-go/switchboard/session"
)

// maxClientIDs is how many client message IDs a conversation remembers for
// de-duplication of retried sends.
const maxClientIDs = 4096

// core owns the conversations, the waiting queue, the assigner and the SLA
// timers. All of its state is touched only by its run goroutine; component
// callbacks post closures into its mailbox.
type core struct {
	cfg   *Config
	bus   *fanout.Bus
	log   *slog.Logger
	store *session.Store[string, *session.Conversation]
	q     *queue.Queue[string]
	asg   *router.Assigner
	box   *mailbox
	sub   *fanout.Subscription

	convs map[string]*conv
	users map[string]*user

	needDrain bool
	metrics   *coreMetrics

	stop chan struct{}
	done chan struct{}
}

type user struct {
	id, role, name, tier string
	skills               []string
	capacity             int
	conns                map[connKey]struct{}
	convs                map[string]struct{}
}

type connKey struct {
	node string
	conn uint64
}

type conv struct {
	id       string
	customer string
	custName string
	tier     int
	entry    string
	skills   []string

	agent    string
	offer    router.Offer
	offered  bool
	missed   []string
	item     queue.Item[string]
	hasItem  bool // item holds the popped queue item (for Requeue)
	queued   bool // waiting in the queue now
	watchers map[string]struct{}

	cids     map[string]uint64
	cidOrder []string
	read     map[string]uint64
	offset   uint64
	epoch    string

	assignedAt time.Time
	frt, nrt   *slaTimer
	forget     *time.Timer // set once the conversation is finished
}

type coreMetrics struct {
	conversations *prometheus.CounterVec
	slaWarnings   *prometheus.CounterVec
	slaBreaches   *prometheus.CounterVec
	queueTimeouts *prometheus.CounterVec
}

func newCore(cfg *Config, bus *fanout.Bus) (*core, error) {
	c := &core{
		cfg:   cfg,
		bus:   bus,
		log:   cfg.Observer.Logger().With("component", "desk-core"),
		box:   newMailbox(),
		convs: map[string]*conv{},
		users: map[string]*user{},
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if o := cfg.Observer; o != nil {
		c.metrics = &coreMetrics{
			conversations: o.Counter("desk", "conversations_total", "Conversations opened, by tier.", "tier"),
			slaWarnings:   o.Counter("sla", "warnings_total", "SLA about-to-breach warnings, by tier and kind.", "tier", "kind"),
			slaBreaches:   o.Counter("sla", "breaches_total", "SLA breaches, by tier and kind (first_response, next_response).", "tier", "kind"),
			queueTimeouts: o.Counter("desk", "queue_timeouts_total", "Conversations whose waiting-room deadline passed, by tier and action.", "tier", "action"),
		}
	}
	var err error
	c.store, err = session.New(session.Config[string, *session.Conversation]{
		Name:     "conversations",
		Capacity: 1 << 20,
		Observer: cfg.Observer,
	})
	if err != nil {
		return nil, err
	}
	tiers := make([]queue.TierConfig, 3)
	actions := [3]queue.Action{queue.Escalate, queue.RetryOnce, queue.Drop}
	quotas := [3]int{100, 10, 1}
	for i := range tiers {
		tiers[i] = queue.TierConfig{Name: tierNames[i], MaxWait: cfg.Tiers[i].MaxWait, Capacity: 100_000, Quota: quotas[i], OnDeadline: actions[i]}
	}
	c.q, err = queue.New[string](queue.Config{
		Name:             "waiting_room",
		Tiers:            tiers,
		EagerDeadlines:   true,
		PositionDebounce: cfg.PositionDebounce,
		OnPosition:       func(u []queue.PositionUpdate) { c.box.post(func() { c.onPositions(u) }) },
		OnEscalate:       func(it queue.Item[any]) { c.box.post(func() { c.onQueueDeadline(it, "escalate") }) },
		OnDrop:           func(it queue.Item[any]) { c.box.post(func() { c.onQueueDeadline(it, "drop") }) },
		Observer:         cfg.Observer,
	})
	if err != nil {
		c.store.Close()
		return nil, err
	}
	c.asg, err = router.NewAssigner(router.AssignerConfig{
		Strategy:       router.Sticky(router.StickyConfig{Fallback: router.LeastLoaded()}),
		OfferTimeout:   cfg.OfferTimeout,
		OfflineGrace:   cfg.AgentGrace,
		Observer:       cfg.Observer,
		OnOfferExpired: func(e router.ExpiredOffer) { c.box.post(func() { c.onOfferExpired(e) }) },
		OnCapacity:     func(router.CapacityEvent) { c.box.post(func() { c.needDrain = true }) },
		OnAgentOffline: func(e router.AgentOffline) { c.box.post(func() { c.onAgentOffline(e) }) },
	})
	if err != nil {
		c.q.Close()
		c.store.Close()
		return nil, err
	}
	c.sub, err = bus.Subscribe(topicCore, fanout.SubscribeOptions{
		Buffer: 1 << 16,
		Policy: fanout.DropNewest,
		OnPublication: func(p fanout.Publication) {
			cmd, err := decodeCommand(p.Payload)
			if err != nil {
				c.log.Warn("undecodable command", "err", err)
				return
			}
			c.box.post(func() { c.handle(cmd) })
		},
	})
	if err != nil {
		c.asg.Close()
		c.q.Close()
		c.store.Close()
		return nil, err
	}
	go c.run()
	return c, nil
}

func (c *core) run() {
	defer close(c.done)
	stats := time.NewTicker(c.cfg.StatsInterval)
	defer stats.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.box.signal:
			for {
				items := c.box.take()
				if len(items) == 0 {
					break
				}
				for _, f := range items {
					f()
				}
			}
			if c.needDrain {
				c.needDrain = false
				c.drain()
			}
		case <-stats.C:
			c.sendStats()
		}
	}
}

// close stops the core and its components.
func (c *core) close() {
	_ = c.sub.Close()
	close(c.stop)
	<-c.done
	for _, cv := range c.convs {
		cv.frt.stop()
		cv.nrt.stop()
		if cv.forget != nil {
			cv.forget.Stop()
		}
	}
	_ = c.asg.Close()
	_ = c.q.Close()
	_ = c.store.Close()
}

// --- output helpers ---

func (c *core) toUser(id string, e *protocol.Envelope) {
	if e.TS == 0 {
		e.TS = time.Now().UnixMilli()
	}
	if _, err := c.bus.Publish(topicUser(id), protocol.MustEncode(e)); err != nil {
		c.log.Warn("publish to user failed", "user", id, "err", err)
	}
}

func (c *core) toSupervisors(e *protocol.Envelope) {
	if e.TS == 0 {
		e.TS = time.Now().UnixMilli()
	}
	if _, err := c.bus.Publish(topicSup, protocol.MustEncode(e)); err != nil {
		c.log.Warn("publish to supervisors failed", "err", err)
	}
}

func (c *core) fail(cmd *command, code, conv, format string, args ...any) {
	ref := ""
	if cmd.Env != nil {
		ref = cmd.Env.Type
		if cmd.Env.ID != "" {
			ref += ":" + cmd.Env.ID
		}
	}
	c.toUser(cmd.User, protocol.Error(code, ref, conv, format, args...))
}

// participants returns everyone who receives a conversation's events.
func (c *core) participants(cv *conv) []string {
	ids := []string{cv.customer}
	if cv.agent != "" {
		ids = append(ids, cv.agent)
	}
	for w := range cv.watchers {
		ids = append(ids, w)
	}
	return ids
}

func (c *core) info(cv *conv) protocol.ConvInfo {
	st := "queued"
	if s, ok := c.store.Get(cv.id); ok {
		st = stateName(s.State)
	}
	return protocol.ConvInfo{Conv: cv.id, State: st, Customer: cv.customer, Name: cv.custName, Agent: cv.agent, Tier: tierNames[cv.tier], Offset: cv.offset, Epoch: cv.epoch}
}

func snapState(c *session.Conversation) session.State {
	if c == nil {
		return session.Closed
	}
	return c.State
}

func stateName(s session.State) string {
	switch s {
	case session.Queued:
		return "queued"
	case session.Offered:
		return "offered"
	case session.Active:
		return "active"
	case session.Pending:
		return "pending"
	case session.Snoozed:
		return "snoozed"
	case session.Resolved:
		return "resolved"
	default:
		return "closed"
	}
}

// --- commands ---

func (c *core) handle(cmd command) {
	switch cmd.Kind {
	case cmdOpen:
		c.onOpen(&cmd)
	case cmdClose:
		c.onClose(&cmd)
	case cmdEnv:
		if cmd.Env == nil {
			return
		}
		c.onEnvelope(&cmd)
	}
}

func (c *core) userFor(cmd *command) *user {
	u := c.users[cmd.User]
	if u == nil {
		u = &user{id: cmd.User, conns: map[connKey]struct{}{}, convs: map[string]struct{}{}}
		c.users[cmd.User] = u
	}
	u.role, u.name, u.tier, u.skills = cmd.Role, cmd.Name, cmd.Tier, cmd.Skills
	u.capacity = cmd.Capacity
	return u
}

func (c *core) onOpen(cmd *command) {
	u := c.userFor(cmd)
	u.conns[connKey{cmd.Node, cmd.Conn}] = struct{}{}
	if u.role == auth.RoleAgent {
		capacity := u.capacity
		if capacity == 0 {
			capacity = c.cfg.AgentCapacity
		}
		if info, ok := c.asg.Agent(u.id); ok {
			if info.Presence == router.Offline {
				_ = c.asg.SetPresence(u.id, router.Online)
			}
		} else if err := c.asg.UpsertAgent(router.Agent{ID: u.id, Presence: router.Online, Capacity: capacity, Skills: u.skills}); err != nil {
			c.log.Warn("agent rejected", "agent", u.id, "err", err)
		}
		c.q.SetWorkers(c.onlineAgents())
	}
	hello := &protocol.Envelope{Type: protocol.TypeHello, From: u.id, Role: u.role, Name: u.name, Tier: u.tier, Node: cmd.Node}
	ids := make([]string, 0, len(u.convs))
	for id := range u.convs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if cv := c.convs[id]; cv != nil {
			inf := c.info(cv)
			inf.Read = cv.read[u.id]
			hello.Convs = append(hello.Convs, inf)
		}
	}
	if u.role == auth.RoleAgent {
		if info, ok := c.asg.Agent(u.id); ok {
			hello.State = info.Presence.String()
		}
	}
	c.toUser(u.id, hello)
	// Re-send pending offers to an agent who reconnected.
	for _, cv := range c.convs {
		if cv.offered && cv.offer.AgentID == u.id {
			c.sendOffer(cv)
		}
		if cv.queued && cv.customer == u.id {
			c.sendPosition(cv)
		}
	}
	if u.role == auth.RoleSupervisor {
		c.sendStats()
	}
}

func (c *core) onClose(cmd *command) {
	u := c.users[cmd.User]
	if u == nil {
		return
	}
	delete(u.conns, connKey{cmd.Node, cmd.Conn})
	if len(u.conns) > 0 {
		return
	}
	c.dropIdleUser(u)
	if u.role == auth.RoleAgent {
		// Offline now: no new offers. The assigner's OfflineGrace keeps the
		// agent's conversations until the grace period ends.
		_ = c.asg.SetPresence(u.id, router.Offline)
		c.q.SetWorkers(c.onlineAgents())
	}
}

func (c *core) onlineAgents() int {
	return c.asg.Stats().ByPresence[router.Online]
}

func (c *core) onEnvelope(cmd *command) {
	e := cmd.Env
	u := c.users[cmd.User]
	if u == nil {
		u = c.userFor(cmd)
	}
	switch e.Type {
	case protocol.TypeStart:
		c.onStart(cmd, u)
	case protocol.TypeMessage:
		c.onMessage(cmd, u)
	case protocol.TypeRead:
		c.onRead(cmd, u)
	case protocol.TypeCancel:
		c.onCancel(cmd, u)
	case protocol.TypeAccept:
		c.onAccept(cmd, u)
	case protocol.TypeDecline:
		c.onDecline(cmd, u)
	case protocol.TypePresence:
		c.onPresence(cmd, u)
	case protocol.TypeTransfer:
		c.onTransfer(cmd, u)
	case protocol.TypeResolve:
		c.onResolve(cmd, u)
	case protocol.TypeWatch, protocol.TypeUnwatch:
		c.onWatch(cmd, u)
	default:
		c.fail(cmd, protocol.ErrCodeUnknownType, e.Conv, "unknown message type %q", e.Type)
	}
}

func newConvID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "c" + hex.EncodeToString(b[:])
}

// openConv returns the customer's open conversation, creating and queueing
// one when there is none.
func (c *core) openConv(cmd *command, u *user, entry string) (*conv, bool) {
	for id := range u.convs {
		if cv := c.convs[id]; cv != nil && cv.customer == u.id {
			if s, ok := c.store.Get(id); ok && s.State != session.Resolved && s.State != session.Closed {
				return cv, true
			}
		}
	}
	now := time.Now()
	cv := &conv{
		id: newConvID(), customer: u.id, custName: u.name, tier: tierIndex(u.tier), entry: entry,
		watchers: map[string]struct{}{}, cids: map[string]uint64{}, read: map[string]uint64{},
	}
	if entry != "" {
		cv.skills = []string{entry}
	}
	if err := c.q.Push(cv.id, cv.tier, cv.id); err != nil {
		code := protocol.ErrCodeInternal
		if errors.Is(err, queue.ErrFull) {
			code = protocol.ErrCodeQueueFull
		}
		c.fail(cmd, code, "", "cannot queue the conversation: %v", err)
		return nil, false
	}
	cv.queued = true
	c.store.Set(cv.id, session.NewConversation(cv.id, now))
	c.convs[cv.id] = cv
	u.convs[cv.id] = struct{}{}
	if pos, err := c.bus.Position(topicConv(cv.id)); err == nil {
		cv.epoch = pos.Epoch
	}
	if err := c.bus.SetTopicOptions(topicConv(cv.id), c.cfg.History); err != nil {
		c.log.Warn("history options", "err", err)
	}
	if m := c.metrics; m != nil {
		m.conversations.WithLabelValues(tierNames[cv.tier]).Inc()
	}
	cv.frt = c.startSLA(cv, "first_response", c.cfg.Tiers[cv.tier].FirstResponse)
	c.log.Info("conversation queued", "conv", cv.id, "customer", u.id, "tier", tierNames[cv.tier])
	q := &protocol.Envelope{Type: protocol.TypeQueued, Conv: cv.id, Tier: tierNames[cv.tier], Entry: entry, Epoch: cv.epoch}
	c.fillPosition(cv, q)
	c.toUser(u.id, q)
	c.needDrain = true
	return cv, true
}

func (c *core) onStart(cmd *command, u *user) {
	if u.role != auth.RoleCustomer {
		c.fail(cmd, protocol.ErrCodeForbidden, "", "only customers start conversations")
		return
	}
	c.openConv(cmd, u, cmd.Env.Entry)
}

// member reports whether u may write to or read cv.
func (c *core) member(cv *conv, u *user) bool {
	if cv.customer == u.id || cv.agent == u.id {
		return true
	}
	_, w := cv.watchers[u.id]
	return w
}

func (c *core) onMessage(cmd *command, u *user) {
	e := cmd.Env
	if e.Text == "" {
		c.fail(cmd, protocol.ErrCodeBadRequest, e.Conv, "message needs text")
		return
	}
	if e.ID == "" {
		c.fail(cmd, protocol.ErrCodeBadRequest, e.Conv, "message needs a client id")
		return
	}
	var cv *conv
	if e.Conv == "" {
		if u.role != auth.RoleCustomer {
			c.fail(cmd, protocol.ErrCodeBadRequest, "", "message needs a conversation")
			return
		}
		var ok bool
		if cv, ok = c.openConv(cmd, u, e.Entry); !ok {
			return
		}
	} else {
		cv = c.convs[e.Conv]
		if cv == nil {
			c.fail(cmd, protocol.ErrCodeNoConversation, e.Conv, "no such conversation")
			return
		}
		if !c.member(cv, u) || (u.role == auth.RoleSupervisor && cv.agent != u.id) {
			c.fail(cmd, protocol.ErrCodeNotParticipant, e.Conv, "you are not a participant of this conversation")
			return
		}
	}
	// A retried send with a known client ID is acknowledged again, not re-published.
	if off, dup := cv.cids[e.ID]; dup {
		c.toUser(u.id, &protocol.Envelope{Type: protocol.TypeAck, Conv: cv.id, ID: e.ID, Offset: off, Epoch: cv.epoch})
		return
	}
	snap, ok := c.store.Get(cv.id)
	if !ok || snap.State == session.Closed || snap.State == session.Resolved {
		c.fail(cmd, protocol.ErrCodeNoConversation, cv.id, "conversation is %s; send a message without conv to start a new one", stateName(snapState(snap)))
		return
	}
	now := time.Now()
	msg := &protocol.Envelope{Type: protocol.TypeMessage, Conv: cv.id, ID: e.ID, From: u.id, Name: u.name, Role: u.role, Text: e.Text, TS: now.UnixMilli(), Traceparent: e.Traceparent, Tracestate: e.Tracestate}
	pub, err := c.bus.Publish(topicConv(cv.id), protocol.MustEncode(msg))
	if err != nil {
		c.fail(cmd, protocol.ErrCodeInternal, cv.id, "message not stored: %v", err)
		return
	}
	cv.offset, cv.epoch = pub.Offset, pub.Epoch
	cv.cids[e.ID] = pub.Offset
	cv.cidOrder = append(cv.cidOrder, e.ID)
	if len(cv.cidOrder) > maxClientIDs {
		delete(cv.cids, cv.cidOrder[0])
		cv.cidOrder = cv.cidOrder[1:]
	}
	if cv.read[u.id] < pub.Offset {
		cv.read[u.id] = pub.Offset
	}
	c.toUser(u.id, &protocol.Envelope{Type: protocol.TypeAck, Conv: cv.id, ID: e.ID, Offset: pub.Offset, Epoch: pub.Epoch})

	ctx := observe.Extract(context.Background(), observe.MapCarrier{"traceparent": e.Traceparent, "tracestate": e.Tracestate})
	c.log.DebugContext(ctx, "message", "conv", cv.id, "from", u.id, "offset", pub.Offset)

	switch {
	case u.id == cv.customer:
		if snap.State != session.Queued && snap.State != session.Offered {
			_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.CustomerReply, Actor: u.id, At: now})
			if cv.nrt == nil && cv.agent != "" && cv.frt == nil {
				cv.nrt = c.startSLA(cv, "next_response", c.cfg.Tiers[cv.tier].NextResponse)
			}
		} else if snap.OldestUnansweredCustomerMessage.IsZero() {
			_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.CustomerReply, Actor: u.id, At: now})
		}
	case u.id == cv.agent:
		if _, err := session.Transition(c.store, cv.id, session.Change{Event: session.AgentReply, Actor: u.id, At: now}); err != nil {
			c.log.Debug("agent reply transition", "err", err)
		}
		cv.frt.stop()
		cv.frt = nil
		cv.nrt.stop()
		cv.nrt = nil
	}
}

func (c *core) onRead(cmd *command, u *user) {
	e := cmd.Env
	cv := c.convs[e.Conv]
	if cv == nil || !c.member(cv, u) {
		c.fail(cmd, protocol.ErrCodeNotParticipant, e.Conv, "you are not a participant of this conversation")
		return
	}
	if e.Offset <= cv.read[u.id] {
		return
	}
	if e.Offset > cv.offset {
		c.fail(cmd, protocol.ErrCodeBadRequest, e.Conv, "read offset %d is beyond the last message %d", e.Offset, cv.offset)
		return
	}
	cv.read[u.id] = e.Offset
	ev := &protocol.Envelope{Type: protocol.TypeRead, Conv: cv.id, From: u.id, Role: u.role, Offset: e.Offset, TS: time.Now().UnixMilli()}
	if _, err := c.bus.Publish(topicEph(cv.id), protocol.MustEncode(ev)); err != nil {
		c.log.Warn("publish read", "err", err)
	}
}

func (c *core) convFor(cmd *command, u *user) *conv {
	cv := c.convs[cmd.Env.Conv]
	if cv == nil {
		c.fail(cmd, protocol.ErrCodeNoConversation, cmd.Env.Conv, "no such conversation")
		return nil
	}
	if !c.member(cv, u) && u.role != auth.RoleSupervisor {
		c.fail(cmd, protocol.ErrCodeNotParticipant, cv.id, "you are not a participant of this conversation")
		return nil
	}
	return cv
}

func (c *core) onCancel(cmd *command, u *user) {
	cv := c.convFor(cmd, u)
	if cv == nil {
		return
	}
	if cv.customer != u.id {
		c.fail(cmd, protocol.ErrCodeForbidden, cv.id, "only the customer can leave the queue")
		return
	}
	snap, _ := c.store.Get(cv.id)
	if snap == nil || (snap.State != session.Queued && snap.State != session.Offered) {
		c.fail(cmd, protocol.ErrCodeConflict, cv.id, "conversation is not waiting")
		return
	}
	c.finish(cv, u.id, "customer left the queue", session.Close)
}

// finish resolves (ev == session.Resolve) or closes a conversation and
// releases everything it holds.
func (c *core) finish(cv *conv, actor, reason string, ev session.Event) {
	if cv.queued {
		c.q.Cancel(cv.id)
		cv.queued = false
	}
	if cv.offered || cv.agent != "" {
		_ = c.asg.Release(cv.id)
	}
	if cv.offered {
		c.toUser(cv.offer.AgentID, &protocol.Envelope{Type: protocol.TypeOfferExpired, Conv: cv.id, Offer: cv.offer.ID, Message: reason})
		cv.offered = false
	}
	if !cv.assignedAt.IsZero() {
		c.q.RecordService(time.Since(cv.assignedAt))
	}
	cv.frt.stop()
	cv.nrt.stop()
	cv.frt, cv.nrt = nil, nil
	st := "resolved"
	if _, err := session.Transition(c.store, cv.id, session.Change{Event: ev, Actor: actor, Reason: reason}); err != nil {
		if ev == session.Resolve {
			// Not resolvable from here (e.g. still queued): close it.
			_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.Close, Actor: actor, Reason: reason})
			st = "closed"
		}
	}
	if ev == session.Close {
		st = "closed"
	}
	out := &protocol.Envelope{Type: protocol.TypeResolved, Conv: cv.id, From: actor, State: st, Message: reason, Offset: cv.offset, Epoch: cv.epoch}
	for _, id := range c.participants(cv) {
		c.toUser(id, out)
	}
	c.needDrain = true
	if cv.forget == nil {
		cv.forget = time.AfterFunc(c.cfg.Retention, func() { c.box.post(func() { c.forgetConv(cv) }) })
	}
}

// forgetConv drops a finished conversation from memory after the retention
// period, unless it was reopened in the meantime.
func (c *core) forgetConv(cv *conv) {
	if snap, ok := c.store.Get(cv.id); ok && snap.State != session.Resolved && snap.State != session.Closed {
		cv.forget = nil
		return
	}
	delete(c.convs, cv.id)
	c.store.Delete(cv.id)
	for _, id := range c.participants(cv) {
		if u := c.users[id]; u != nil {
			delete(u.convs, cv.id)
			c.dropIdleUser(u)
		}
	}
}

// dropIdleUser forgets a customer or supervisor with no connection and no
// conversation (agents stay known to the assigner).
func (c *core) dropIdleUser(u *user) {
	if u.role != auth.RoleAgent && len(u.conns) == 0 && len(u.convs) == 0 {
		delete(c.users, u.id)
	}
}

func (c *core) onResolve(cmd *command, u *user) {
	cv := c.convFor(cmd, u)
	if cv == nil {
		return
	}
	snap, _ := c.store.Get(cv.id)
	if snap == nil || snap.State == session.Resolved || snap.State == session.Closed {
		c.fail(cmd, protocol.ErrCodeConflict, cv.id, "conversation is already resolved")
		return
	}
	c.finish(cv, u.id, "resolved by "+u.role, session.Resolve)
}

func (c *core) onAccept(cmd *command, u *user) {
	e := cmd.Env
	cv := c.convs[e.Conv]
	if u.role != auth.RoleAgent {
		c.fail(cmd, protocol.ErrCodeForbidden, e.Conv, "only agents accept offers")
		return
	}
	if cv == nil || !cv.offered || cv.offer.AgentID != u.id || (e.Offer != "" && e.Offer != cv.offer.ID) {
		c.fail(cmd, protocol.ErrCodeOfferGone, e.Conv, "this offer is no longer pending")
		return
	}
	if err := c.asg.Accept(cv.offer.ID); err != nil {
		c.fail(cmd, protocol.ErrCodeOfferGone, e.Conv, "offer not accepted: %v", err)
		return
	}
	if _, err := session.Transition(c.store, cv.id, session.Change{Event: session.Accept, Actor: u.id, Agent: u.id}); err != nil {
		c.log.Warn("accept transition", "conv", cv.id, "err", err)
	}
	prev := cv.agent
	cv.offered = false
	cv.agent = u.id
	cv.missed = nil
	cv.assignedAt = time.Now()
	u.convs[cv.id] = struct{}{}
	if prev != "" && prev != u.id {
		if pu := c.users[prev]; pu != nil {
			delete(pu.convs, cv.id)
		}
		c.toUser(prev, &protocol.Envelope{Type: protocol.TypeTransferred, Conv: cv.id, To: u.id, Agent: u.id})
	}
	out := &protocol.Envelope{Type: protocol.TypeAssigned, Conv: cv.id, Agent: u.id, Name: u.name, Customer: cv.customer, Tier: tierNames[cv.tier], Offset: cv.offset, Epoch: cv.epoch}
	for _, id := range c.participants(cv) {
		c.toUser(id, out)
	}
	c.log.Info("conversation assigned", "conv", cv.id, "agent", u.id)
}

func (c *core) onDecline(cmd *command, u *user) {
	e := cmd.Env
	cv := c.convs[e.Conv]
	if cv == nil || !cv.offered || cv.offer.AgentID != u.id {
		c.fail(cmd, protocol.ErrCodeOfferGone, e.Conv, "this offer is no longer pending")
		return
	}
	retry, err := c.asg.Decline(cv.offer.ID)
	if err != nil {
		c.fail(cmd, protocol.ErrCodeOfferGone, e.Conv, "offer not declined: %v", err)
		return
	}
	_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.Decline, Actor: u.id})
	cv.offered = false
	cv.missed = retry.Exclude
	c.reoffer(cv, retry)
}

func (c *core) onPresence(cmd *command, u *user) {
	if u.role != auth.RoleAgent {
		c.fail(cmd, protocol.ErrCodeForbidden, "", "only agents set presence")
		return
	}
	var p router.Presence
	switch cmd.Env.State {
	case "online":
		p = router.Online
	case "busy":
		p = router.Busy
	case "away":
		p = router.Away
	default:
		c.fail(cmd, protocol.ErrCodeBadRequest, "", "presence must be online, busy or away")
		return
	}
	if err := c.asg.SetPresence(u.id, p); err != nil {
		c.fail(cmd, protocol.ErrCodeBadRequest, "", "presence: %v", err)
		return
	}
	c.q.SetWorkers(c.onlineAgents())
	c.toUser(u.id, &protocol.Envelope{Type: protocol.TypePresence, From: u.id, State: p.String()})
}

func (c *core) onTransfer(cmd *command, u *user) {
	e := cmd.Env
	cv := c.convFor(cmd, u)
	if cv == nil {
		return
	}
	if u.role != auth.RoleSupervisor && cv.agent != u.id {
		c.fail(cmd, protocol.ErrCodeForbidden, cv.id, "only the assigned agent or a supervisor can transfer")
		return
	}
	if cv.agent == "" {
		c.fail(cmd, protocol.ErrCodeConflict, cv.id, "conversation is not assigned")
		return
	}
	from := cv.agent
	if e.To == "" {
		// Back to the queue, at the front of its tier.
		_ = c.asg.Release(cv.id)
		_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.Requeue, Actor: u.id, Reason: "transferred to queue"})
		if pu := c.users[from]; pu != nil {
			delete(pu.convs, cv.id)
		}
		cv.agent = ""
		// Whoever sent it back is not offered it again (sticky routing
		// would otherwise prefer them).
		cv.missed = append(cv.missed, from)
		c.requeue(cv)
		out := &protocol.Envelope{Type: protocol.TypeTransferred, Conv: cv.id, From: from, State: "queued"}
		c.toUser(from, out)
		c.toUser(cv.customer, out)
		for w := range cv.watchers {
			c.toUser(w, out)
		}
		return
	}
	if e.To == from {
		c.fail(cmd, protocol.ErrCodeBadRequest, cv.id, "conversation is already with %s", e.To)
		return
	}
	if err := c.asg.Transfer(cv.id, e.To); err != nil {
		code := protocol.ErrCodeBadRequest
		if errors.Is(err, router.ErrAtCapacity) || errors.Is(err, router.ErrAgentOffline) {
			code = protocol.ErrCodeNoAgent
		}
		c.fail(cmd, code, cv.id, "transfer failed: %v", err)
		return
	}
	_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.Transfer, Actor: u.id, Agent: e.To, Reason: "transfer"})
	_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.Accept, Actor: e.To, Agent: e.To})
	if pu := c.users[from]; pu != nil {
		delete(pu.convs, cv.id)
	}
	cv.agent = e.To
	cv.assignedAt = time.Now()
	to := c.users[e.To]
	name := e.To
	if to != nil {
		to.convs[cv.id] = struct{}{}
		name = to.name
	}
	c.toUser(from, &protocol.Envelope{Type: protocol.TypeTransferred, Conv: cv.id, From: from, To: e.To})
	out := &protocol.Envelope{Type: protocol.TypeAssigned, Conv: cv.id, Agent: e.To, Name: name, Customer: cv.customer, Tier: tierNames[cv.tier], Offset: cv.offset, Epoch: cv.epoch, Message: "transferred from " + from}
	for _, id := range c.participants(cv) {
		c.toUser(id, out)
	}
}

func (c *core) onWatch(cmd *command, u *user) {
	if u.role != auth.RoleSupervisor {
		c.fail(cmd, protocol.ErrCodeForbidden, cmd.Env.Conv, "only supervisors watch conversations")
		return
	}
	cv := c.convs[cmd.Env.Conv]
	if cv == nil {
		c.fail(cmd, protocol.ErrCodeNoConversation, cmd.Env.Conv, "no such conversation")
		return
	}
	if cmd.Env.Type == protocol.TypeUnwatch {
		delete(cv.watchers, u.id)
		delete(u.convs, cv.id)
		c.toUser(u.id, &protocol.Envelope{Type: protocol.TypeUnwatch, Conv: cv.id})
		return
	}
	cv.watchers[u.id] = struct{}{}
	u.convs[cv.id] = struct{}{}
	inf := c.info(cv)
	c.toUser(u.id, &protocol.Envelope{Type: protocol.TypeWatch, Conv: cv.id, State: inf.State, Agent: cv.agent, Customer: cv.customer, Tier: inf.Tier, Offset: cv.offset, Epoch: cv.epoch})
}

// --- queue and assignment ---

func (c *core) requeue(cv *conv) {
	if cv.hasItem {
		if err := c.q.Requeue(cv.item); err == nil {
			cv.hasItem = false
			cv.queued = true
			c.needDrain = true
			c.sendPosition(cv)
			return
		}
	}
	if err := c.q.Push(cv.id, cv.tier, cv.id); err != nil {
		c.log.Error("requeue failed", "conv", cv.id, "err", err)
		return
	}
	cv.queued = true
	c.needDrain = true
	c.sendPosition(cv)
}

// drain hands waiting conversations to agents with free capacity, in queue
// order, until no agent can take any of them.
func (c *core) drain() {
	var back []queue.Item[string]
	n := c.q.Len()
	for i := 0; i < n; i++ {
		it, ok := c.q.TryPop()
		if !ok {
			break
		}
		cv := c.convs[it.Value]
		if cv == nil || !cv.queued {
			continue
		}
		cv.queued = false
		cv.item, cv.hasItem = it, true
		offer, err := c.asg.Offer(router.Request{ConversationID: cv.id, CustomerID: cv.customer, RequiredSkills: cv.skills, Exclude: cv.missed, WaitingSince: it.Enqueued})
		if err != nil {
			back = append(back, it)
			cv.queued = true
			if errors.Is(err, router.ErrNoAgent) && len(cv.skills) == 0 && len(cv.missed) == 0 {
				break // nobody can take anything now
			}
			continue
		}
		c.offered(cv, offer)
	}
	for _, it := range back {
		if err := c.q.Requeue(it); err != nil {
			c.log.Error("requeue failed", "conv", it.Value, "err", err)
		}
	}
}

func (c *core) offered(cv *conv, offer router.Offer) {
	cv.offer, cv.offered = offer, true
	if _, err := session.Transition(c.store, cv.id, session.Change{Event: session.Offer, Actor: "router", Agent: offer.AgentID}); err != nil {
		c.log.Warn("offer transition", "conv", cv.id, "err", err)
	}
	c.sendOffer(cv)
	// The customer is next: an agent is looking at the conversation.
	c.toUser(cv.customer, &protocol.Envelope{Type: protocol.TypePosition, Conv: cv.id, Tier: tierNames[cv.tier], State: "offered"})
}

func (c *core) sendOffer(cv *conv) {
	c.toUser(cv.offer.AgentID, &protocol.Envelope{
		Type: protocol.TypeOffer, Conv: cv.id, Offer: cv.offer.ID, Customer: cv.customer, Name: cv.custName,
		Tier: tierNames[cv.tier], Entry: cv.entry, Expires: cv.offer.ExpiresAt.UnixMilli(),
	})
}

func (c *core) reoffer(cv *conv, retry router.Request) {
	offer, err := c.asg.Offer(retry)
	if err != nil {
		c.requeue(cv)
		return
	}
	c.offered(cv, offer)
}

func (c *core) onOfferExpired(e router.ExpiredOffer) {
	cv := c.convs[e.Offer.ConversationID]
	if cv == nil || !cv.offered || cv.offer.ID != e.Offer.ID {
		return
	}
	cv.offered = false
	cv.missed = e.Retry.Exclude
	_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.Expire, Actor: "router", Reason: e.Reason.String()})
	c.toUser(e.Offer.AgentID, &protocol.Envelope{Type: protocol.TypeOfferExpired, Conv: cv.id, Offer: e.Offer.ID, Message: e.Reason.String()})
	c.log.Info("offer missed", "conv", cv.id, "agent", e.Offer.AgentID, "reason", e.Reason.String())
	c.reoffer(cv, e.Retry)
}

func (c *core) onAgentOffline(e router.AgentOffline) {
	for _, id := range e.Conversations {
		cv := c.convs[id]
		if cv == nil || cv.agent != e.AgentID {
			continue
		}
		_, _ = session.Transition(c.store, cv.id, session.Change{Event: session.Requeue, Actor: "system", Reason: "agent offline"})
		if u := c.users[e.AgentID]; u != nil {
			delete(u.convs, cv.id)
		}
		cv.agent = ""
		c.requeue(cv)
		out := &protocol.Envelope{Type: protocol.TypeTransferred, Conv: cv.id, From: e.AgentID, State: "queued", Message: "agent disconnected"}
		c.toUser(cv.customer, out)
		for w := range cv.watchers {
			c.toUser(w, out)
		}
		c.log.Info("conversation requeued", "conv", cv.id, "agent", e.AgentID)
	}
}

func (c *core) onQueueDeadline(it queue.Item[any], action string) {
	id, _ := it.Value.(string)
	cv := c.convs[id]
	if cv == nil {
		return
	}
	if m := c.metrics; m != nil {
		m.queueTimeouts.WithLabelValues(tierNames[cv.tier], action).Inc()
	}
	c.toSupervisors(&protocol.Envelope{Type: protocol.TypeSLA, Conv: cv.id, Tier: tierNames[cv.tier], Kind: "queue_wait", State: action, Customer: cv.customer, Name: cv.custName})
	if action == "drop" {
		cv.queued = false
		c.finish(cv, "system", "no agent became available in time", session.Close)
	}
}

func (c *core) fillPosition(cv *conv, e *protocol.Envelope) {
	if pos, ok := c.q.Position(cv.id); ok {
		e.Position = pos.Overall + 1
		e.InTier = pos.InTier + 1
	}
	if w, ok := c.q.EstimatedWait(cv.id); ok {
		e.ETAMs = w.Milliseconds()
	}
}

func (c *core) sendPosition(cv *conv) {
	e := &protocol.Envelope{Type: protocol.TypePosition, Conv: cv.id, Tier: tierNames[cv.tier]}
	c.fillPosition(cv, e)
	if e.Position > 0 {
		c.toUser(cv.customer, e)
	}
}

func (c *core) onPositions(ups []queue.PositionUpdate) {
	for _, up := range ups {
		cv := c.convs[up.ID]
		if cv == nil || !cv.queued {
			continue
		}
		c.toUser(cv.customer, &protocol.Envelope{
			Type: protocol.TypePosition, Conv: cv.id, Tier: tierNames[cv.tier],
			Position: up.Position.Overall + 1, InTier: up.Position.InTier + 1, ETAMs: up.EstimatedWait.Milliseconds(),
		})
	}
}

// --- supervisors ---

func (c *core) sendStats() {
	hasSup := false
	for _, u := range c.users {
		if u.role == auth.RoleSupervisor && len(u.conns) > 0 {
			hasSup = true
			break
		}
	}
	if !hasSup {
		return
	}
	now := time.Now()
	st := &protocol.Envelope{Type: protocol.TypeStats}
	var longest [3]time.Duration
	for _, cv := range c.convs {
		if cv.queued {
			if snap, ok := c.store.Get(cv.id); ok {
				if w := now.Sub(snap.QueuedAt); w > longest[cv.tier] {
					longest[cv.tier] = w
				}
			}
		}
		if snap, ok := c.store.Get(cv.id); ok && snap.State != session.Closed && snap.State != session.Resolved {
			st.Convs = append(st.Convs, c.info(cv))
		}
	}
	sort.Slice(st.Convs, func(i, j int) bool { return st.Convs[i].Conv < st.Convs[j].Conv })
	for i := range tierNames {
		st.Tiers = append(st.Tiers, protocol.TierStats{Tier: tierNames[i], Depth: c.q.LenTier(i), LongestWaitMs: longest[i].Milliseconds()})
	}
	for _, a := range c.asg.Agents() {
		st.Users = append(st.Users, protocol.AgentStats{ID: a.ID, Presence: a.Presence.String(), Load: a.Active + a.Reserved, Capacity: a.Capacity})
	}
	sort.Slice(st.Users, func(i, j int) bool { return st.Users[i].ID < st.Users[j].ID })
	c.toSupervisors(st)
}
