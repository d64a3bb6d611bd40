package desk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/router"
	"github.com/switchboard-go/switchboard/session"
)

// partition is the reference server's one waiting room (the partition key of
// its conversation records).
const partition = "default"

// transcriptEpoch is the epoch of every conversation's message numbering:
// offsets come from the durable transcript, which never loses messages, so
// the epoch never changes.
const transcriptEpoch = "t1"

// core owns the control plane: the waiting queue, offers, assignments and
// SLA timers. All of its state is touched only by its run goroutine;
// component callbacks post closures into its mailbox. The repository is the
// source of truth: every change is written there (compare-and-set on the
// record's version) before it is applied to the queue and the assigner and
// announced, and a new core rebuilds everything from it.
type core struct {
	cfg   *Config
	bus   *fanout.Bus
	log   *slog.Logger
	repo  session.Repository
	fence session.Fence
	data  *dataPlane
	q     *queue.Queue[string]
	asg   *router.Assigner
	box   *mailbox
	subMu sync.Mutex
	sub   *fanout.Subscription

	convs map[string]*conv
	users map[string]*user
	rank  int64 // next queue rank

	needDrain bool
	retry     *time.Timer // drain retry after a store failure
	metrics   *coreMetrics

	onFenced func()                 // a write was fenced: another node owns the partition
	isLive   func(node string) bool // whether a node is in the cluster
	seen     map[string]time.Time   // recently handled command keys (idempotency)
	seenQ    []string
	heard    map[string]time.Time // node → last command received from it

	ctx    context.Context // canceled by close: bounds store calls
	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
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

// conv is the core's cache of one conversation: the durable record plus the
// handles of the components that act on it (queue item, live offer, timers).
type conv struct {
	rec *session.Record

	offer   router.Offer       // the live offer while rec.Offer is set
	item    queue.Item[string] // the popped queue item while offered
	hasItem bool
	inQueue bool // waiting in c.q now

	offset uint64 // last stored message offset

	// SLA clocks, derived from the transcript (the time of the oldest
	// customer message not yet answered, the first agent reply).
	unanswered  time.Time
	firstAnswer time.Time
	frt, nrt    *slaTimer
	forget      *time.Timer // set once the conversation is finished
}

func (cv *conv) id() string { return cv.rec.ID }

type coreMetrics struct {
	conversations *prometheus.CounterVec
	slaWarnings   *prometheus.CounterVec
	slaBreaches   *prometheus.CounterVec
	queueTimeouts *prometheus.CounterVec
	illegal       *prometheus.CounterVec
	storeErrors   *prometheus.CounterVec
}

func newCore(parent context.Context, cfg *Config, bus *fanout.Bus, repo session.Repository, data *dataPlane, fence session.Fence, onFenced func(), isLive func(string) bool) (*core, error) {
	ctx, cancel := context.WithCancel(parent)
	c := &core{
		cfg:      cfg,
		bus:      bus,
		repo:     repo,
		data:     data,
		fence:    fence,
		onFenced: onFenced,
		isLive:   isLive,
		seen:     map[string]time.Time{},
		heard:    map[string]time.Time{},
		log:      cfg.Observer.Logger().With("component", "desk-core"),
		box:      newMailbox(),
		convs:    map[string]*conv{},
		users:    map[string]*user{},
		ctx:      ctx,
		cancel:   cancel,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if o := cfg.Observer; o != nil {
		c.metrics = &coreMetrics{
			conversations: o.Counter("desk", "conversations_total", "Conversations opened, by tier.", "tier"),
			slaWarnings:   o.Counter("sla", "warnings_total", "SLA about-to-breach warnings, by tier and kind.", "tier", "kind"),
			slaBreaches:   o.Counter("sla", "breaches_total", "SLA breaches, by tier and kind (first_response, next_response).", "tier", "kind"),
			queueTimeouts: o.Counter("desk", "queue_timeouts_total", "Conversations whose waiting-room deadline passed, by tier and action.", "tier", "action"),
			illegal:       o.Counter("desk", "illegal_transitions_total", "Conversation state changes the state machine refused (a bug), by event.", "event"),
			storeErrors:   o.Counter("desk", "store_errors_total", "Conversation record writes that failed, by operation.", "op"),
		}
	}
	tiers := make([]queue.TierConfig, 3)
	actions := [3]queue.Action{queue.Escalate, queue.RetryOnce, queue.Drop}
	quotas := [3]int{100, 10, 1}
	for i := range tiers {
		tiers[i] = queue.TierConfig{Name: tierNames[i], MaxWait: cfg.Tiers[i].MaxWait, Capacity: cfg.WaitingRoomLimit, Quota: quotas[i], OnDeadline: actions[i]}
	}
	var err error
	c.q, err = queue.New(queue.Config[string]{
		Name:             "waiting_room",
		Tiers:            tiers,
		EagerDeadlines:   true,
		PositionDebounce: cfg.PositionDebounce,
		OnPosition:       func(u []queue.PositionUpdate) { c.box.post(func() { c.onPositions(u) }) },
		OnEscalate:       func(it queue.Item[string]) { c.box.post(func() { c.onQueueDeadline(it, "escalate") }) },
		OnRetry:          func(it queue.Item[string]) { c.box.post(func() { c.onQueueDeadline(it, "retry") }) },
		OnDrop:           func(it queue.Item[string]) { c.box.post(func() { c.onQueueDeadline(it, "drop") }) },
		Observer:         cfg.Observer,
	})
	if err != nil {
		cancel()
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
		cancel()
		return nil, errors.Join(err, c.q.Close())
	}
	if err := c.rebuild(); err != nil {
		cancel()
		return nil, errors.Join(fmt.Errorf("rebuild from the conversation store: %w", err), c.asg.Close(), c.q.Close())
	}
	if err := c.subscribe(); err != nil {
		c.stopTimers()
		cancel()
		return nil, errors.Join(err, c.asg.Close(), c.q.Close())
	}
	// Edges re-announce their connections and resend what is pending.
	if b, err := encodeCommand(&command{Kind: cmdOwner, Node: cfg.NodeID}); err == nil {
		if _, err := bus.Publish(ctx, topicOwner, b); err != nil {
			c.log.Warn("announce ownership", "err", err)
		}
	}
	go c.run()
	return c, nil
}

func (c *core) subscribe() error {
	sub, err := c.bus.Subscribe(c.ctx, topicCore, fanout.SubscribeOptions{
		Buffer: 1 << 16,
		Policy: fanout.DropNewest, // edges resend unacknowledged commands
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
		return err
	}
	c.subMu.Lock()
	old := c.sub
	c.sub = sub
	c.subMu.Unlock()
	if old != nil {
		if err := old.Close(); err != nil && !errors.Is(err, fanout.ErrClosed) {
			c.log.Debug("close replaced command subscription", "err", err)
		}
	}
	return nil
}

// restoreSubscription subscribes the command topic again after the bus lost
// it, with backoff, until it works or the core stops.
func (c *core) restoreSubscription() {
	delay := 100 * time.Millisecond
	for {
		if err := c.subscribe(); err == nil {
			return
		}
		select {
		case <-c.stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
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
			// Offer after every batch, not only when the mailbox runs dry:
			// under a steady stream of commands it never does.
			for {
				items := c.box.take()
				if len(items) == 0 {
					break
				}
				for _, f := range items {
					f()
				}
				if c.needDrain {
					c.needDrain = false
					c.drain()
				}
			}
		case <-stats.C:
			c.dropDeadNodes()
			c.sendStats()
		}
	}
}

// close stops the core and its components. The records stay in the store.
func (c *core) close() {
	close(c.stop)
	<-c.done
	c.subMu.Lock()
	var errs []error
	if c.sub != nil {
		errs = append(errs, c.sub.Close())
	}
	c.subMu.Unlock()
	c.cancel()
	c.stopTimers()
	errs = append(errs, c.asg.Close(), c.q.Close())
	if err := errors.Join(errs...); err != nil {
		c.log.Warn("closing the core's components", "err", err)
	}
}

func (c *core) stopTimers() {
	if c.retry != nil {
		c.retry.Stop()
	}
	for _, cv := range c.convs {
		cv.frt.stop()
		cv.nrt.stop()
		if cv.forget != nil {
			cv.forget.Stop()
		}
	}
}

// --- the store ---

func (c *core) storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, c.cfg.StoreTimeout)
}

// errIllegal marks a change the state machine refused.
var errIllegal = errors.New("illegal transition")

// update applies mutate to a copy of cv's record and writes it with
// compare-and-set on the cached version; only when the write succeeded does
// the copy replace the cache. mutate's transitions are recorded in the audit
// trail. A refused transition is a bug: it is logged, counted and reported
// to Config.OnInvariant, and update returns an error wrapping errIllegal.
func (c *core) update(cv *conv, op string, mutate func(r *session.Record) error) error {
	next := cv.rec.Clone()
	if err := mutate(next); err != nil {
		var te *session.TransitionError
		if errors.As(err, &te) {
			c.invariant(op, cv.id(), err)
			return fmt.Errorf("%w: %v", errIllegal, err)
		}
		return err
	}
	audit := next.Conversation.History
	next.Conversation.History = nil
	prev := cv.rec.Conversation.Version
	if next.Conversation.Version == prev {
		next.Conversation.Version++
	}
	ctx, cancel := c.storeCtx()
	defer cancel()
	if err := c.repo.Update(ctx, c.fence, prev, next, audit...); err != nil {
		if m := c.metrics; m != nil {
			m.storeErrors.WithLabelValues(op).Inc()
		}
		c.checkFenced(err)
		c.log.Error("conversation write failed", "op", op, "conv", cv.id(), "err", err)
		return err
	}
	cv.rec = next
	return nil
}

// checkFenced stops acting as the owner when the store says another node
// took the partition over.
func (c *core) checkFenced(err error) {
	if errors.Is(err, session.ErrFenced) {
		c.log.Error("fenced: another node owns the partition now; stopping", "fence", c.fence.Token)
		if c.onFenced != nil {
			c.onFenced()
		}
	}
}

func (c *core) invariant(op, conv string, err error) {
	if m := c.metrics; m != nil {
		m.illegal.WithLabelValues(op).Inc()
	}
	c.log.Error("illegal conversation transition", "op", op, "conv", conv, "err", err)
	if c.cfg.OnInvariant != nil {
		c.cfg.OnInvariant(fmt.Errorf("%s %s: %w", op, conv, err))
	}
}

// apply returns a mutation applying one state-machine change.
func apply(ch session.Change) func(r *session.Record) error {
	return func(r *session.Record) error { return r.Conversation.ApplyChange(ch) }
}

// failStore answers a command whose write failed.
func (c *core) failStore(cmd *command, conv string, err error) {
	code := protocol.ErrCodeInternal
	if errors.Is(err, session.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		code = protocol.ErrCodeUnavailable
	}
	c.fail(cmd, code, conv, "the conversation store could not record this; retry")
}

// retryDrainLater schedules a drain after a store failure.
func (c *core) retryDrainLater() {
	if c.retry != nil {
		c.retry.Stop()
	}
	c.retry = time.AfterFunc(c.cfg.StoreRetry, func() { c.box.post(func() { c.needDrain = true }) })
}

// --- rebuild ---

// rebuild loads every open conversation and restores the waiting queue in its
// order, the assignments and agent loads, and the SLA clocks. Pending offers
// are withdrawn (their agents are offline until they reconnect): the
// conversation keeps its place at the front of its tier and is offered again.
func (c *core) rebuild() error {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.RebuildTimeout)
	defer cancel()
	recs, err := c.repo.OpenConversations(ctx, partition)
	if err != nil {
		return err
	}
	var waiting []*conv
	restored := map[string]bool{}
	for _, r := range recs {
		cv := &conv{rec: r}
		c.convs[r.ID] = cv
		c.member(r.Customer, auth.RoleCustomer, r.CustomerName).convs[r.ID] = struct{}{}
		for _, w := range r.Watchers {
			c.member(w, auth.RoleSupervisor, "").convs[r.ID] = struct{}{}
		}
		if cv.offset, err = c.repo.LastOffset(ctx, r.ID); err != nil {
			return err
		}
		if r.Queue != nil && r.Queue.Rank >= c.rank {
			c.rank = r.Queue.Rank + 1
		}
		if r.Offer != nil {
			if err := c.update(cv, "rebuild-offer", func(n *session.Record) error {
				n.Offer = nil
				return n.Conversation.ApplyChange(session.Change{Event: session.Expire, Actor: "system", Reason: "offer withdrawn by a restart"})
			}); err != nil {
				return err
			}
		}
		switch {
		case cv.rec.Queue != nil:
			waiting = append(waiting, cv)
		case cv.rec.Conversation.Assignee != "":
			a := cv.rec.Conversation.Assignee
			if _, ok := c.asg.Agent(a); !ok {
				if err := c.asg.UpsertAgent(router.Agent{ID: a, Presence: router.Online, Capacity: c.cfg.AgentCapacity}); err != nil {
					return err
				}
				restored[a] = true
			}
			if err := c.asg.AssignManual(router.Request{ConversationID: r.ID}, a, true); err != nil {
				return err
			}
			c.member(a, auth.RoleAgent, "").convs[r.ID] = struct{}{}
		}
		if err := c.rebuildSLA(ctx, cv); err != nil {
			return err
		}
	}
	// The queue: tier, then deadline, then rank — the queue's own order.
	sort.Slice(waiting, func(i, j int) bool {
		a, b := waiting[i].rec, waiting[j].rec
		if a.Tier != b.Tier {
			return a.Tier < b.Tier
		}
		if !a.Queue.Deadline.Equal(b.Queue.Deadline) {
			return a.Queue.Deadline.Before(b.Queue.Deadline)
		}
		return a.Queue.Rank < b.Queue.Rank
	})
	for _, cv := range waiting {
		qe := cv.rec.Queue
		if err := c.q.Requeue(queue.Item[string]{ID: cv.id(), Tier: cv.rec.Tier, Value: cv.id(), Enqueued: qe.Enqueued, Deadline: qe.Deadline, Retried: qe.Retried, Escalated: qe.Escalated}); err != nil {
			return err
		}
		cv.inQueue = true
	}
	// Agents restored for their conversations are offline until they
	// reconnect: their grace period starts now.
	for a := range restored {
		if err := c.asg.SetPresence(a, router.Offline); err != nil {
			return err
		}
	}
	c.needDrain = len(waiting) > 0
	if len(recs) > 0 {
		c.log.Info("rebuilt from the conversation store", "open", len(recs), "waiting", len(waiting))
	}
	return nil
}

// rebuildSLA derives cv's response clocks from the end of its transcript.
func (c *core) rebuildSLA(ctx context.Context, cv *conv) error {
	r := cv.rec
	if r.Conversation.Assignee == "" && r.Queue != nil {
		cv.frt = c.startSLA(cv, "first_response", r.Conversation.Created.Add(c.cfg.Tiers[r.Tier].FirstResponse))
		return nil
	}
	// Walk back from the end until an agent message is found.
	const page = 200
	to := cv.offset
	for to > 0 {
		from := uint64(0)
		if to > page {
			from = to - page
		}
		msgs, err := c.repo.Messages(ctx, r.ID, from, page)
		if err != nil {
			return err
		}
		found := false
		for i := len(msgs) - 1; i >= 0; i-- {
			m := msgs[i]
			if m.Offset > to {
				continue
			}
			if m.Sender == r.Customer {
				cv.unanswered = m.At
			} else if m.SenderRole == auth.RoleAgent {
				cv.firstAnswer = m.At // some answer exists
				found = true
				break
			}
		}
		if found {
			break
		}
		to = from
	}
	switch {
	case cv.firstAnswer.IsZero():
		cv.frt = c.startSLA(cv, "first_response", r.Conversation.Created.Add(c.cfg.Tiers[r.Tier].FirstResponse))
	case !cv.unanswered.IsZero():
		cv.nrt = c.startSLA(cv, "next_response", cv.unanswered.Add(c.cfg.Tiers[r.Tier].NextResponse))
	}
	return nil
}

// --- output helpers ---

func (c *core) toUser(id string, e *protocol.Envelope) {
	if e.TS == 0 {
		e.TS = time.Now().UnixMilli()
	}
	if _, err := c.bus.Publish(c.ctx, topicUser(id), protocol.MustEncode(e)); err != nil {
		c.log.Warn("publish to user failed", "user", id, "err", err)
	}
}

func (c *core) toSupervisors(e *protocol.Envelope) {
	if e.TS == 0 {
		e.TS = time.Now().UnixMilli()
	}
	if _, err := c.bus.Publish(c.ctx, topicSup, protocol.MustEncode(e)); err != nil {
		c.log.Warn("publish to supervisors failed", "err", err)
	}
}

func (c *core) fail(cmd *command, code, conv, format string, args ...any) {
	c.toUser(cmd.User, protocol.Error(code, protocol.RefOf(cmd.Env), conv, format, args...))
}

// participants returns everyone who receives a conversation's events.
func (c *core) participants(cv *conv) []string {
	ids := []string{cv.rec.Customer}
	if a := cv.rec.Conversation.Assignee; a != "" {
		ids = append(ids, a)
	}
	return append(ids, cv.rec.Watchers...)
}

// refreshOffset reads cv's last stored offset from the transcript (the data
// plane's reports may still be on their way) before it is announced.
func (c *core) refreshOffset(cv *conv) {
	ctx, cancel := c.storeCtx()
	defer cancel()
	if off, err := c.repo.LastOffset(ctx, cv.id()); err == nil && off > cv.offset {
		cv.offset = off
	} else if err != nil {
		c.log.Warn("last offset", "conv", cv.id(), "err", err)
	}
}

func (c *core) info(cv *conv) protocol.ConvInfo {
	r := cv.rec
	return protocol.ConvInfo{Conv: r.ID, State: stateName(r.Conversation.State), Customer: r.Customer, Name: r.CustomerName, Agent: r.Conversation.Assignee, Tier: tierNames[r.Tier], Offset: cv.offset, Epoch: transcriptEpoch}
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

// dedupeWindow is how long a handled command key is remembered.
const dedupeWindow = time.Minute

// handle runs one command from an edge once per idempotency key, then
// acknowledges it to the edge (again, for a retry).
func (c *core) handle(cmd command) {
	if cmd.Node != "" {
		c.heard[cmd.Node] = time.Now()
	}
	if cmd.Key != "" {
		now := time.Now()
		if _, dup := c.seen[cmd.Key]; !dup {
			c.seen[cmd.Key] = now
			c.seenQ = append(c.seenQ, cmd.Key)
			c.dispatch(cmd)
		}
		for len(c.seenQ) > 0 && (now.Sub(c.seen[c.seenQ[0]]) > dedupeWindow || len(c.seenQ) > 1<<18) {
			delete(c.seen, c.seenQ[0])
			c.seenQ = c.seenQ[1:]
		}
		if b, err := encodeCommand(&command{Kind: cmdAck, Key: cmd.Key}); err == nil {
			if _, err := c.bus.Publish(c.ctx, topicNode(cmd.Node), b); err != nil {
				c.log.Warn("acknowledge command", "node", cmd.Node, "err", err)
			}
		}
		return
	}
	c.dispatch(cmd)
}

func (c *core) dispatch(cmd command) {
	switch cmd.Kind {
	case cmdOpen:
		c.onOpen(&cmd)
	case cmdClose:
		c.onClose(&cmd)
	case cmdStored:
		if cmd.Env != nil {
			c.onStored(&cmd)
		}
	case cmdEnv:
		if cmd.Env == nil {
			return
		}
		c.onEnvelope(&cmd)
	}
}

// member returns the user, creating it with what is known.
func (c *core) member(id, role, name string) *user {
	u := c.users[id]
	if u == nil {
		u = &user{id: id, role: role, name: name, conns: map[connKey]struct{}{}, convs: map[string]struct{}{}}
		c.users[id] = u
	}
	return u
}

func (c *core) userFor(cmd *command) *user {
	u := c.member(cmd.User, cmd.Role, cmd.Name)
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
			if info.Capacity != capacity {
				if err := c.asg.SetCapacity(u.id, capacity); err != nil {
					c.log.Warn("agent capacity", "agent", u.id, "err", err)
				}
			}
			if !slices.Equal(info.Skills, u.skills) {
				if err := c.asg.SetSkills(u.id, u.skills); err != nil {
					c.log.Warn("agent skills", "agent", u.id, "err", err)
				}
			}
			if info.Presence == router.Offline {
				if err := c.asg.SetPresence(u.id, router.Online); err != nil {
					c.log.Warn("agent presence", "agent", u.id, "err", err)
				}
			}
		} else if err := c.asg.UpsertAgent(router.Agent{ID: u.id, Presence: router.Online, Capacity: capacity, Skills: u.skills}); err != nil {
			c.log.Warn("agent rejected", "agent", u.id, "err", err)
		}
		c.q.SetWorkers(c.onlineAgents())
	}
	if cmd.Resync {
		return // a re-announcement to a new owner: the client is up to date
	}
	// hello goes to the new connection only.
	hello := &protocol.Envelope{Type: protocol.TypeHello, From: u.id, Role: u.role, Name: u.name, Tier: u.tier, Node: cmd.Node, Target: cmd.Conn}
	ids := make([]string, 0, len(u.convs))
	for id := range u.convs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ctx, cancel := c.storeCtx()
	defer cancel()
	for _, id := range ids {
		if cv := c.convs[id]; cv != nil {
			c.refreshOffset(cv)
			inf := c.info(cv)
			if marks, err := c.repo.ReadMarkers(ctx, id); err == nil {
				inf.Read = marks[u.id]
			} else {
				c.log.Warn("read markers", "conv", id, "err", err)
			}
			hello.Convs = append(hello.Convs, inf)
		}
	}
	if u.role == auth.RoleAgent {
		if info, ok := c.asg.Agent(u.id); ok {
			hello.State = info.Presence.String()
		}
	}
	c.toUser(u.id, hello)
	// Re-send pending offers to an agent who reconnected, and positions to
	// a waiting customer.
	for _, cv := range c.convs {
		if cv.rec.Offer != nil && cv.offer.AgentID == u.id {
			c.sendOffer(cv)
		}
		if cv.inQueue && cv.rec.Customer == u.id {
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
		if err := c.asg.SetPresence(u.id, router.Offline); err != nil && !errors.Is(err, router.ErrUnknownAgent) {
			c.log.Warn("agent presence", "agent", u.id, "err", err)
		}
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
		c.onFirstMessage(cmd, u)
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
// one when there is none. It writes the record (with its queue entry) before
// anything is announced.
func (c *core) openConv(cmd *command, u *user, entry string) (*conv, bool) {
	for id := range u.convs {
		if cv := c.convs[id]; cv != nil && cv.rec.Customer == u.id && cv.rec.Open() {
			return cv, true
		}
	}
	tier := tierIndex(u.tier)
	if c.q.LenTier(tier) >= c.cfg.WaitingRoomLimit {
		c.fail(cmd, protocol.ErrCodeQueueFull, "", "the %s waiting room is full (%d waiting); try again later", tierNames[tier], c.cfg.WaitingRoomLimit)
		return nil, false
	}
	now := time.Now()
	id := newConvID()
	rec := &session.Record{
		ID: id, Partition: partition, Customer: u.id, CustomerName: u.name, Tier: tier, Entry: entry, Epoch: transcriptEpoch,
		Conversation: *session.NewConversation(id, now),
		Queue:        &session.QueueEntry{Rank: c.rank, Enqueued: now, Deadline: now.Add(c.cfg.Tiers[tier].MaxWait)},
	}
	if entry != "" {
		rec.Skills = []string{entry}
	}
	audit := session.AuditEntry{At: now, Actor: u.id, Reason: "opened", To: session.Queued, Version: rec.Conversation.Version}
	rec.Conversation.History = nil
	ctx, cancel := c.storeCtx()
	err := c.repo.Create(ctx, c.fence, rec, audit)
	cancel()
	if err != nil {
		c.checkFenced(err)
		c.failStore(cmd, "", err)
		return nil, false
	}
	c.rank++
	cv := &conv{rec: rec}
	if err := c.q.Requeue(queue.Item[string]{ID: id, Tier: tier, Value: id, Enqueued: now, Deadline: rec.Queue.Deadline}); err != nil {
		c.log.Error("queue rejected a stored conversation", "conv", id, "err", err)
		c.fail(cmd, protocol.ErrCodeInternal, id, "could not queue the conversation")
		return nil, false
	}
	cv.inQueue = true
	c.convs[id] = cv
	u.convs[id] = struct{}{}
	if m := c.metrics; m != nil {
		m.conversations.WithLabelValues(tierNames[tier]).Inc()
	}
	cv.frt = c.startSLA(cv, "first_response", now.Add(c.cfg.Tiers[tier].FirstResponse))
	c.log.Info("conversation queued", "conv", id, "customer", u.id, "tier", tierNames[tier])
	q := &protocol.Envelope{Type: protocol.TypeQueued, Conv: id, Tier: tierNames[tier], Entry: entry, Epoch: transcriptEpoch}
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
	for id := range u.convs {
		if cv := c.convs[id]; cv != nil && cv.rec.Customer == u.id && cv.rec.Open() {
			// A second start answers with the open conversation.
			q := &protocol.Envelope{Type: protocol.TypeQueued, Conv: id, Tier: tierNames[cv.rec.Tier], Entry: cv.rec.Entry, Epoch: transcriptEpoch, State: stateName(cv.rec.Conversation.State), Offset: cv.offset}
			c.fillPosition(cv, q)
			c.toUser(u.id, q)
			return
		}
	}
	c.openConv(cmd, u, cmd.Env.Entry)
}

// onFirstMessage handles a customer's message without conv: it opens (or
// finds) the conversation and hands the message to the data plane.
func (c *core) onFirstMessage(cmd *command, u *user) {
	e := cmd.Env
	if u.role != auth.RoleCustomer {
		c.fail(cmd, protocol.ErrCodeBadRequest, "", "message needs a conversation")
		return
	}
	cv, ok := c.openConv(cmd, u, e.Entry)
	if !ok {
		return
	}
	e.Conv = cv.id()
	c.data.submit(cmd.Node, cmd.Conn, sender{id: u.id, role: u.role, name: u.name}, e)
}

// onStored is the data plane's report of a stored message: it moves the
// conversation's offset and its response clocks.
func (c *core) onStored(cmd *command) {
	e := cmd.Env
	cv := c.convs[e.Conv]
	if cv == nil {
		return
	}
	if e.Offset > cv.offset {
		cv.offset = e.Offset
	}
	at := time.UnixMilli(e.TS)
	r := cv.rec
	switch {
	case cmd.User == r.Customer:
		if cv.unanswered.IsZero() {
			cv.unanswered = at
		}
		if r.Conversation.Assignee != "" && cv.frt == nil && cv.nrt == nil && !cv.firstAnswer.IsZero() {
			cv.nrt = c.startSLA(cv, "next_response", at.Add(c.cfg.Tiers[r.Tier].NextResponse))
		}
		if r.Conversation.State == session.Pending {
			if err := c.update(cv, "customer-reply", apply(session.Change{Event: session.CustomerReply, Actor: cmd.User, At: at})); err != nil {
				c.log.Warn("customer reply", "conv", r.ID, "err", err)
			}
		}
	case cmd.User == r.Conversation.Assignee:
		if cv.firstAnswer.IsZero() {
			cv.firstAnswer = at
		}
		cv.unanswered = time.Time{}
		cv.frt.stop()
		cv.frt = nil
		cv.nrt.stop()
		cv.nrt = nil
	}
}

func (c *core) convFor(cmd *command, u *user) *conv {
	cv := c.convs[cmd.Env.Conv]
	if cv == nil {
		c.fail(cmd, protocol.ErrCodeNoConversation, cmd.Env.Conv, "no such conversation")
		return nil
	}
	return cv
}

// isParticipant reports whether u is the conversation's customer or
// assigned agent (watchers are not participants).
func isParticipant(cv *conv, u *user) bool {
	return cv.rec.Customer == u.id || cv.rec.Conversation.Assignee == u.id
}

func (c *core) onCancel(cmd *command, u *user) {
	cv := c.convFor(cmd, u)
	if cv == nil {
		return
	}
	if cv.rec.Customer != u.id {
		c.fail(cmd, protocol.ErrCodeNotParticipant, cv.id(), "only the conversation's customer can leave the queue")
		return
	}
	if s := cv.rec.Conversation.State; s != session.Queued && s != session.Offered {
		c.fail(cmd, protocol.ErrCodeConflict, cv.id(), "conversation is not waiting")
		return
	}
	if err := c.finish(cv, u.id, "customer left the queue", session.Close); err != nil {
		c.failStore(cmd, cv.id(), err)
	}
}

// finish resolves (ev == session.Resolve) or closes a conversation and
// releases everything it holds. The record is written first.
func (c *core) finish(cv *conv, actor, reason string, ev session.Event) error {
	st := "resolved"
	if ev == session.Close || !cv.rec.Conversation.Can(session.Resolve) {
		ev, st = session.Close, "closed"
	}
	if err := c.update(cv, "finish", func(r *session.Record) error {
		r.Queue, r.Offer = nil, nil
		return r.Conversation.ApplyChange(session.Change{Event: ev, Actor: actor, Reason: reason})
	}); err != nil {
		return err
	}
	if cv.inQueue {
		c.q.Cancel(cv.id())
		cv.inQueue = false
	}
	cv.hasItem = false
	if cv.offer.ID != "" || !cv.rec.AssignedAt.IsZero() {
		if err := c.asg.Release(cv.id()); err != nil && !errors.Is(err, router.ErrNotAssigned) {
			c.log.Warn("release", "conv", cv.id(), "err", err)
		}
	}
	if cv.offer.ID != "" {
		c.toUser(cv.offer.AgentID, &protocol.Envelope{Type: protocol.TypeOfferExpired, Conv: cv.id(), Offer: cv.offer.ID, Message: reason})
		cv.offer = router.Offer{}
	}
	if !cv.rec.AssignedAt.IsZero() {
		c.q.RecordService(time.Since(cv.rec.AssignedAt))
	}
	cv.frt.stop()
	cv.nrt.stop()
	cv.frt, cv.nrt = nil, nil
	out := &protocol.Envelope{Type: protocol.TypeResolved, Conv: cv.id(), From: actor, State: st, Message: reason, Offset: cv.offset, Epoch: transcriptEpoch}
	for _, id := range c.participants(cv) {
		c.toUser(id, out)
	}
	c.needDrain = true
	if cv.forget == nil {
		cv.forget = time.AfterFunc(c.cfg.Retention, func() { c.box.post(func() { c.forgetConv(cv) }) })
	}
	return nil
}

// forgetConv drops a finished conversation from memory after the retention
// period (its record and transcript stay in the store).
func (c *core) forgetConv(cv *conv) {
	if cv.rec.Open() {
		cv.forget = nil
		return
	}
	delete(c.convs, cv.id())
	for _, id := range c.participants(cv) {
		if u := c.users[id]; u != nil {
			delete(u.convs, cv.id())
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
	if !isParticipant(cv, u) {
		c.fail(cmd, protocol.ErrCodeNotParticipant, cv.id(), "only the customer or the assigned agent can resolve")
		return
	}
	if !cv.rec.Open() {
		c.fail(cmd, protocol.ErrCodeConflict, cv.id(), "conversation is already %s", stateName(cv.rec.Conversation.State))
		return
	}
	if err := c.finish(cv, u.id, "resolved by "+u.role, session.Resolve); err != nil {
		c.failStore(cmd, cv.id(), err)
	}
}

func (c *core) onAccept(cmd *command, u *user) {
	e := cmd.Env
	cv := c.convs[e.Conv]
	if u.role != auth.RoleAgent {
		c.fail(cmd, protocol.ErrCodeForbidden, e.Conv, "only agents accept offers")
		return
	}
	if cv == nil || cv.rec.Offer == nil || cv.offer.AgentID != u.id || (e.Offer != "" && e.Offer != cv.offer.ID) {
		c.fail(cmd, protocol.ErrCodeOfferGone, e.Conv, "this offer is no longer pending")
		return
	}
	now := time.Now()
	if err := c.update(cv, "accept", func(r *session.Record) error {
		r.Offer, r.Queue = nil, nil
		r.AssignedAt = now
		r.Conversation.Missed = nil
		return r.Conversation.ApplyChange(session.Change{Event: session.Accept, Actor: u.id, Agent: u.id, At: now})
	}); err != nil {
		c.failStore(cmd, cv.id(), err)
		return
	}
	// The record says accepted; make the assigner agree even if the offer
	// timed out meanwhile (its capacity was reserved for this agent).
	if err := c.asg.Accept(cv.offer.ID); err != nil {
		if err := c.asg.AssignManual(router.Request{ConversationID: cv.id()}, u.id, true); err != nil {
			c.log.Error("assigner disagrees with the record", "conv", cv.id(), "err", err)
		}
	}
	cv.offer = router.Offer{}
	cv.hasItem = false
	u.convs[cv.id()] = struct{}{}
	c.announceAssigned(cv, u.id, u.name, "")
	c.log.Info("conversation assigned", "conv", cv.id(), "agent", u.id)
}

func (c *core) announceAssigned(cv *conv, agent, name, msg string) {
	c.refreshOffset(cv)
	out := &protocol.Envelope{Type: protocol.TypeAssigned, Conv: cv.id(), Agent: agent, Name: name, Customer: cv.rec.Customer, Tier: tierNames[cv.rec.Tier], Offset: cv.offset, Epoch: transcriptEpoch, Message: msg}
	for _, id := range c.participants(cv) {
		c.toUser(id, out)
	}
}

func (c *core) onDecline(cmd *command, u *user) {
	e := cmd.Env
	cv := c.convs[e.Conv]
	if cv == nil || cv.rec.Offer == nil || cv.offer.AgentID != u.id || (e.Offer != "" && e.Offer != cv.offer.ID) {
		c.fail(cmd, protocol.ErrCodeOfferGone, e.Conv, "this offer is no longer pending")
		return
	}
	retry, err := c.asg.Decline(cv.offer.ID)
	if err != nil {
		c.fail(cmd, protocol.ErrCodeOfferGone, e.Conv, "offer not declined: %v", err)
		return
	}
	c.offerEnded(cv, retry, u.id, "declined")
}

// offerEnded records that cv's offer ended without acceptance and offers it
// to the next agent, or puts it back at its place in the queue.
func (c *core) offerEnded(cv *conv, retry router.Request, actor, reason string) {
	ev := session.Decline
	if reason != "declined" {
		ev = session.Expire
	}
	if err := c.update(cv, "offer-ended", func(r *session.Record) error {
		r.Offer = nil
		return r.Conversation.ApplyChange(session.Change{Event: ev, Actor: actor, Reason: reason})
	}); err != nil {
		c.log.Warn("offer end not recorded", "conv", cv.id(), "err", err)
	}
	cv.offer = router.Offer{}
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
	from := cv.rec.Conversation.Assignee
	if u.role != auth.RoleSupervisor && from != u.id {
		c.fail(cmd, protocol.ErrCodeForbidden, cv.id(), "only the assigned agent or a supervisor can transfer")
		return
	}
	if from == "" {
		c.fail(cmd, protocol.ErrCodeConflict, cv.id(), "conversation is not assigned")
		return
	}
	if e.To == "" {
		c.backToQueue(cv, u.id, "transferred to queue", "")
		return
	}
	if e.To == from {
		c.fail(cmd, protocol.ErrCodeBadRequest, cv.id(), "conversation is already with %s", e.To)
		return
	}
	to, known := c.asg.Agent(e.To)
	if !known {
		c.fail(cmd, protocol.ErrCodeNoAgent, cv.id(), "no agent %q", e.To)
		return
	}
	if to.Presence == router.Offline || (to.Capacity > 0 && to.Active+to.Reserved >= to.Capacity) {
		c.fail(cmd, protocol.ErrCodeNoAgent, cv.id(), "agent %s is %s or at capacity", e.To, to.Presence)
		return
	}
	now := time.Now()
	if err := c.update(cv, "transfer", func(r *session.Record) error {
		r.AssignedAt = now
		return r.Conversation.ApplyChange(session.Change{Event: session.Transfer, Actor: u.id, Agent: e.To, Reason: "transfer", At: now})
	}); err != nil {
		c.failStore(cmd, cv.id(), err)
		return
	}
	if err := c.asg.Transfer(cv.id(), e.To); err != nil {
		if err := c.asg.AssignManual(router.Request{ConversationID: cv.id()}, e.To, true); err != nil {
			c.log.Error("assigner disagrees with the record", "conv", cv.id(), "err", err)
		}
	}
	if pu := c.users[from]; pu != nil {
		delete(pu.convs, cv.id())
	}
	name := e.To
	if tu := c.users[e.To]; tu != nil {
		tu.convs[cv.id()] = struct{}{}
		name = tu.name
	}
	out := &protocol.Envelope{Type: protocol.TypeTransferred, Conv: cv.id(), From: from, To: e.To, Agent: e.To}
	c.toUser(from, out)
	c.toUser(cv.rec.Customer, out)
	for _, w := range cv.rec.Watchers {
		c.toUser(w, out)
	}
	c.announceAssigned(cv, e.To, name, "transferred from "+from)
}

// backToQueue takes cv from its agent and puts it back at the front of its
// tier (an agent's or supervisor's transfer to the queue, or the agent's
// grace period ran out).
func (c *core) backToQueue(cv *conv, actor, reason, msg string) {
	from := cv.rec.Conversation.Assignee
	if err := c.update(cv, "requeue", func(r *session.Record) error {
		// The front of its tier: its original waiting-room deadline (the
		// queue serves earliest deadline first), extended to at least a
		// tenth of the tier's wait when it has passed, and a rank below
		// every rank handed out.
		wait := c.cfg.Tiers[r.Tier].MaxWait
		dl := r.Conversation.Created.Add(wait)
		if floor := time.Now().Add(wait / 10); dl.Before(floor) {
			dl = floor
		}
		r.Queue = &session.QueueEntry{Rank: -c.rank, Enqueued: r.Conversation.Created, Deadline: dl}
		r.AssignedAt = time.Time{}
		// Whoever had it is not offered it again (sticky routing would
		// otherwise prefer them).
		if err := r.Conversation.ApplyChange(session.Change{Event: session.Requeue, Actor: actor, Reason: reason}); err != nil {
			return err
		}
		r.Conversation.Missed = append(r.Conversation.Missed, from)
		return nil
	}); err != nil {
		c.log.Error("requeue not recorded", "conv", cv.id(), "err", err)
		return
	}
	c.rank++
	if err := c.asg.Release(cv.id()); err != nil && !errors.Is(err, router.ErrNotAssigned) {
		c.log.Warn("release", "conv", cv.id(), "err", err)
	}
	if pu := c.users[from]; pu != nil {
		delete(pu.convs, cv.id())
	}
	c.requeue(cv)
	out := &protocol.Envelope{Type: protocol.TypeTransferred, Conv: cv.id(), From: from, State: "queued", Message: msg}
	c.toUser(from, out)
	c.toUser(cv.rec.Customer, out)
	for _, w := range cv.rec.Watchers {
		c.toUser(w, out)
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
	watching := slices.Contains(cv.rec.Watchers, u.id)
	if cmd.Env.Type == protocol.TypeUnwatch {
		if watching {
			if err := c.update(cv, "unwatch", func(r *session.Record) error {
				r.Watchers = slices.DeleteFunc(r.Watchers, func(w string) bool { return w == u.id })
				return nil
			}); err != nil {
				c.failStore(cmd, cv.id(), err)
				return
			}
		}
		delete(u.convs, cv.id())
		c.toUser(u.id, &protocol.Envelope{Type: protocol.TypeUnwatch, Conv: cv.id()})
		return
	}
	if !watching {
		if err := c.update(cv, "watch", func(r *session.Record) error {
			r.Watchers = append(r.Watchers, u.id)
			return nil
		}); err != nil {
			c.failStore(cmd, cv.id(), err)
			return
		}
	}
	u.convs[cv.id()] = struct{}{}
	c.refreshOffset(cv)
	inf := c.info(cv)
	c.toUser(u.id, &protocol.Envelope{Type: protocol.TypeWatch, Conv: cv.id(), State: inf.State, Agent: inf.Agent, Customer: cv.rec.Customer, Tier: inf.Tier, Offset: cv.offset, Epoch: transcriptEpoch})
}

// --- queue and assignment ---

// requeue puts cv back in the waiting queue at the place its record says.
func (c *core) requeue(cv *conv) {
	qe := cv.rec.Queue
	if qe == nil {
		return
	}
	it := queue.Item[string]{ID: cv.id(), Tier: cv.rec.Tier, Value: cv.id(), Enqueued: qe.Enqueued, Deadline: qe.Deadline, Retried: qe.Retried, Escalated: qe.Escalated}
	if cv.hasItem && cv.item.Enqueued.Equal(qe.Enqueued) {
		it = cv.item // keeps its push order: the front of its tier
	}
	if err := c.q.Requeue(it); err != nil {
		c.log.Error("requeue failed", "conv", cv.id(), "err", err)
		return
	}
	cv.hasItem = false
	cv.inQueue = true
	c.needDrain = true
	c.sendPosition(cv)
}

// drain hands waiting conversations to agents with free capacity, in queue
// order, until no agent can take any of them.
func (c *core) drain() {
	var back []*conv
	n := c.q.Len()
	storeDown := false
	for i := 0; i < n && !storeDown; i++ {
		it, ok := c.q.TryPop()
		if !ok {
			break
		}
		cv := c.convs[it.Value]
		if cv == nil || !cv.inQueue {
			continue
		}
		cv.inQueue = false
		cv.item, cv.hasItem = it, true
		offer, err := c.asg.Offer(router.Request{ConversationID: cv.id(), CustomerID: cv.rec.Customer, RequiredSkills: cv.rec.Skills, Exclude: cv.rec.Conversation.Missed, WaitingSince: it.Enqueued})
		if err != nil {
			back = append(back, cv)
			if errors.Is(err, router.ErrNoAgent) && len(cv.rec.Skills) == 0 && len(cv.rec.Conversation.Missed) == 0 {
				break // nobody can take anything now
			}
			continue
		}
		if err := c.offered(cv, offer); err != nil {
			storeDown = true
			back = append(back, cv)
		}
	}
	for _, cv := range back {
		if err := c.q.Requeue(cv.item); err != nil {
			c.log.Error("requeue failed", "conv", cv.id(), "err", err)
			continue
		}
		cv.hasItem, cv.inQueue = false, true
	}
	if storeDown {
		c.retryDrainLater()
	}
}

// offered records the offer (before announcing it); on a store failure the
// offer is withdrawn and an error returned.
func (c *core) offered(cv *conv, offer router.Offer) error {
	if err := c.update(cv, "offer", func(r *session.Record) error {
		r.Offer = &session.OfferRecord{ID: offer.ID, Agent: offer.AgentID, Expires: offer.ExpiresAt}
		return r.Conversation.ApplyChange(session.Change{Event: session.Offer, Actor: "router", Agent: offer.AgentID})
	}); err != nil {
		if rerr := c.asg.Release(cv.id()); rerr != nil {
			c.log.Warn("withdraw offer", "conv", cv.id(), "err", rerr)
		}
		return err
	}
	cv.offer = offer
	c.sendOffer(cv)
	// The customer is next: an agent is looking at the conversation.
	c.toUser(cv.rec.Customer, &protocol.Envelope{Type: protocol.TypePosition, Conv: cv.id(), Tier: tierNames[cv.rec.Tier], State: "offered"})
	return nil
}

func (c *core) sendOffer(cv *conv) {
	c.toUser(cv.offer.AgentID, &protocol.Envelope{
		Type: protocol.TypeOffer, Conv: cv.id(), Offer: cv.offer.ID, Customer: cv.rec.Customer, Name: cv.rec.CustomerName,
		Tier: tierNames[cv.rec.Tier], Entry: cv.rec.Entry, Expires: cv.offer.ExpiresAt.UnixMilli(),
	})
}

func (c *core) reoffer(cv *conv, retry router.Request) {
	offer, err := c.asg.Offer(retry)
	if err != nil {
		c.requeue(cv)
		return
	}
	if err := c.offered(cv, offer); err != nil {
		c.requeue(cv)
		c.retryDrainLater()
	}
}

func (c *core) onOfferExpired(e router.ExpiredOffer) {
	cv := c.convs[e.Offer.ConversationID]
	if cv == nil || cv.offer.ID != e.Offer.ID {
		return
	}
	c.toUser(e.Offer.AgentID, &protocol.Envelope{Type: protocol.TypeOfferExpired, Conv: cv.id(), Offer: e.Offer.ID, Message: e.Reason.String()})
	c.log.Info("offer missed", "conv", cv.id(), "agent", e.Offer.AgentID, "reason", e.Reason.String())
	c.offerEnded(cv, e.Retry, "router", e.Reason.String())
}

func (c *core) onAgentOffline(e router.AgentOffline) {
	for _, held := range e.Conversations {
		cv := c.convs[held.ConversationID]
		if cv == nil || cv.rec.Conversation.Assignee != e.AgentID {
			continue
		}
		c.backToQueue(cv, "system", "agent offline", "agent disconnected")
		c.log.Info("conversation requeued", "conv", cv.id(), "agent", e.AgentID)
	}
}

func (c *core) onQueueDeadline(it queue.Item[string], action string) {
	id := it.Value
	cv := c.convs[id]
	if cv == nil || cv.rec.Queue == nil {
		return
	}
	if action == "drop" {
		cv.inQueue = false
		if err := c.finish(cv, "system", "no agent became available in time", session.Close); err != nil {
			c.log.Error("queue deadline not recorded", "conv", id, "err", err)
		}
	} else if err := c.update(cv, "queue-deadline", func(r *session.Record) error {
		r.Queue.Deadline, r.Queue.Retried, r.Queue.Escalated = it.Deadline, it.Retried, it.Escalated
		return nil
	}); err != nil {
		c.log.Error("queue deadline not recorded", "conv", id, "err", err)
	}
	if action == "retry" {
		return // a fresh deadline, nothing to tell anyone
	}
	if m := c.metrics; m != nil {
		m.queueTimeouts.WithLabelValues(tierNames[cv.rec.Tier], action).Inc()
	}
	c.toSupervisors(&protocol.Envelope{Type: protocol.TypeSLA, Conv: cv.id(), Tier: tierNames[cv.rec.Tier], Kind: "queue_wait", State: action, Customer: cv.rec.Customer, Name: cv.rec.CustomerName})
}

func (c *core) fillPosition(cv *conv, e *protocol.Envelope) {
	if pos, ok := c.q.Position(cv.id()); ok {
		e.Position = pos.Overall + 1
		e.InTier = pos.InTier + 1
	}
	if w, ok := c.q.EstimatedWait(cv.id()); ok {
		e.ETAMs = w.Milliseconds()
	}
}

func (c *core) sendPosition(cv *conv) {
	e := &protocol.Envelope{Type: protocol.TypePosition, Conv: cv.id(), Tier: tierNames[cv.rec.Tier]}
	c.fillPosition(cv, e)
	if e.Position > 0 {
		c.toUser(cv.rec.Customer, e)
	}
}

func (c *core) onPositions(ups []queue.PositionUpdate) {
	for _, up := range ups {
		cv := c.convs[up.ID]
		if cv == nil || !cv.inQueue {
			continue
		}
		c.toUser(cv.rec.Customer, &protocol.Envelope{
			Type: protocol.TypePosition, Conv: cv.id(), Tier: tierNames[cv.rec.Tier],
			Position: up.Position.Overall + 1, InTier: up.Position.InTier + 1, ETAMs: up.EstimatedWait.Milliseconds(),
		})
	}
}

// dropDeadNodes forgets the connections of nodes that left the cluster
// (crashed: their presence expired and nothing was heard from them for
// NodeTTL), as if each had closed: agents with no other connection go
// offline and their grace period starts.
func (c *core) dropDeadNodes() {
	if c.isLive == nil {
		return
	}
	now := time.Now()
	dead := map[string]bool{}
	for _, u := range c.users {
		for k := range u.conns {
			d, ok := dead[k.node]
			if !ok {
				d = !c.isLive(k.node) && now.Sub(c.heard[k.node]) > c.cfg.NodeTTL
				dead[k.node] = d
			}
			if d {
				c.onClose(&command{Kind: cmdClose, Node: k.node, Conn: k.conn, User: u.id})
			}
		}
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
		if cv.rec.Queue != nil {
			if w := now.Sub(cv.rec.Queue.Enqueued); w > longest[cv.rec.Tier] {
				longest[cv.rec.Tier] = w
			}
		}
		if cv.rec.Open() {
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
