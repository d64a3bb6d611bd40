package fanout

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/switchboard-go/switchboard/internal/lifetime"
)

// Bus is a topic publish/subscribe hub with bounded subscribers, history
// and recovery, and presence. With Config.Broker it is one node of many.
// All methods are safe for concurrent use.
//
// The bus owns its goroutines: the delivery goroutines that run every
// callback (see doc.go, "Callbacks") and the sweeper. Shutdown or Close
// stops them.
type Bus struct {
	cfg     Config
	broker  Broker
	shards  []shard
	workers []*worker
	m       *metrics
	log     *slog.Logger

	// life bounds the broker calls the bus makes on its own (position
	// sync, gap filling, sweeps); Shutdown stops it when it gives up
	// waiting, and at the end.
	life *lifetime.Context

	closed      atomic.Bool   // Shutdown began: intake is refused
	abandon     atomic.Bool   // Shutdown stopped waiting: deliveries are skipped
	stopSweep   chan struct{} // closed by Shutdown
	sweepDone   chan struct{} // closed by the sweeper when it exits
	quit        chan struct{} // closed by Shutdown once every topic is shut
	running     atomic.Int32  // delivery goroutines still running
	workersDone chan struct{} // closed by the last delivery goroutine to exit

	shutting  atomic.Bool
	hurry     chan struct{} // closed when Shutdown must stop waiting
	hurryOnce sync.Once
	shutDone  chan struct{} // closed when the first Shutdown returns
	shutErr   error         // what releasing resources returned
}

type shard struct {
	mu     sync.RWMutex
	topics map[string]*topic
	opts   map[string]HistoryOptions // per-topic overrides
}

// New validates cfg, fills defaults, starts the broker (if any), the
// delivery goroutines (one per GOMAXPROCS) and the presence/idle-topic
// sweeper. Shutdown or Close stops them.
func New(cfg Config) (*Bus, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:         cfg,
		broker:      cfg.Broker,
		shards:      make([]shard, cfg.Shards),
		log:         cfg.Observer.Logger().With("component", "fanout", "node", cfg.NodeID),
		life:        lifetime.New(),
		stopSweep:   make(chan struct{}),
		sweepDone:   make(chan struct{}),
		quit:        make(chan struct{}),
		workersDone: make(chan struct{}),
		hurry:       make(chan struct{}),
		shutDone:    make(chan struct{}),
	}
	for i := range b.shards {
		b.shards[i].topics = map[string]*topic{}
		b.shards[i].opts = map[string]HistoryOptions{}
	}
	b.m = newMetrics(cfg.Observer, b)
	if b.broker != nil {
		if err := b.broker.Start(brokerHandler{b}); err != nil {
			return nil, err
		}
	}
	b.workers = make([]*worker, max(runtime.GOMAXPROCS(0), 1))
	b.running.Store(int32(len(b.workers)))
	for i := range b.workers {
		w := &worker{wake: make(chan struct{}, 1)}
		b.workers[i] = w
		go b.work(w)
	}
	go b.sweepLoop()
	return b, nil
}

func (b *Bus) shardOf(name string) *shard {
	return &b.shards[xxhash.Sum64String(name)%uint64(len(b.shards))]
}

// lockTopic returns the topic, locked, creating it when create is set. It
// returns nil when the topic does not exist (and create is false), or when
// the bus is shutting down and the topic is shut or would be created.
func (b *Bus) lockTopic(name string, create bool) *topic {
	h := xxhash.Sum64String(name)
	sh := &b.shards[h%uint64(len(b.shards))]
	for {
		sh.mu.RLock()
		t := sh.topics[name]
		sh.mu.RUnlock()
		if t == nil {
			if !create {
				return nil
			}
			sh.mu.Lock()
			if b.closed.Load() {
				// Shutdown shuts the topics it finds under this lock:
				// one created now would escape it.
				sh.mu.Unlock()
				return nil
			}
			if t = sh.topics[name]; t == nil {
				hist, ok := sh.opts[name]
				if !ok {
					hist = b.cfg.History
				}
				t = &topic{name: name, sh: sh, w: b.workers[(h>>32)%uint64(len(b.workers))],
					epoch: randomID(), histOpts: hist, lastPub: time.Now()}
				if b.broker != nil {
					t.brokerSem = make(chan struct{}, 1)
				}
				t.hist.configure(hist)
				sh.topics[name] = t
				b.m.topicsDelta(1)
			}
			sh.mu.Unlock()
		}
		t.mu.Lock()
		switch {
		case t.shut:
			t.mu.Unlock()
			return nil
		case !t.removed:
			return t
		}
		t.mu.Unlock()
	}
}

// intake checks what every Bus method taking a topic checks first.
func (b *Bus) intake(ctx context.Context, name string) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if !validTopic(name) {
		return ErrInvalidTopic
	}
	return ctx.Err()
}

// SetTopicOptions sets the history of one topic, overriding
// Config.History, for the topic's current and future incarnations. Shrinking
// keeps the newest publications. With a Broker the options are passed on
// every Publish to the topic. It makes no network call.
func (b *Bus) SetTopicOptions(name string, h HistoryOptions) error {
	if !validTopic(name) {
		return ErrInvalidTopic
	}
	if h.Size < 0 || h.TTL < 0 {
		return errors.New("fanout: HistoryOptions Size and TTL must be >= 0")
	}
	h = h.withDefaults()
	sh := b.shardOf(name)
	sh.mu.Lock()
	sh.opts[name] = h
	t := sh.topics[name]
	sh.mu.Unlock()
	if t != nil {
		t.mu.Lock()
		t.histOpts = h
		t.hist.configure(h)
		t.mu.Unlock()
	}
	return nil
}

func (b *Bus) historyOf(name string) HistoryOptions {
	sh := b.shardOf(name)
	sh.mu.RLock()
	h, ok := sh.opts[name]
	sh.mu.RUnlock()
	if !ok {
		return b.cfg.History
	}
	return h
}

// Subscribe adds a subscriber to topic. Publications accepted after
// Subscribe returns are delivered to it in offset order, on the bus's
// delivery goroutine (see SubscribeOptions.OnPublication); earlier ones
// are available through Recover (deliveries may overlap what Recover
// returns: skip offsets already seen). With a Broker, the first local
// subscriber of a topic subscribes the node through the broker and reads
// the topic's position, two round trips bounded by ctx; a ctx that ends
// first makes Subscribe return an error wrapping ctx.Err(). Without a Broker it makes no network call; a
// ctx already done still returns ctx.Err(). It allocates the subscription
// and its buffer, and returns ErrClosed once Shutdown has begun.
func (b *Bus) Subscribe(ctx context.Context, name string, opts SubscribeOptions) (*Subscription, error) {
	if err := b.intake(ctx, name); err != nil {
		return nil, err
	}
	if opts.Buffer < 0 {
		return nil, errors.New("fanout: SubscribeOptions.Buffer must be >= 0")
	}
	if opts.Policy > Disconnect {
		return nil, errors.New("fanout: SubscribeOptions.Policy is unknown")
	}
	s := &Subscription{
		bus: b, topic: name, onPub: opts.OnPublication, onPresence: opts.OnPresence,
		policy: opts.Policy, value: opts.Value, idx: -1, done: make(chan struct{}),
	}
	if s.policy == 0 {
		s.policy = b.cfg.DefaultPolicy
	}
	if s.onPub == nil {
		n := opts.Buffer
		if n == 0 {
			n = b.cfg.DefaultBuffer
		}
		s.ch = make(chan Publication, n)
	}
	t := b.lockTopic(name, true)
	if t == nil {
		return nil, ErrClosed
	}
	t.nsubs.Add(1)
	t.mu.Unlock()
	s.t = t
	b.m.subsDelta(1)
	if b.broker != nil {
		if err := b.brokerSubscribe(ctx, t); err != nil {
			b.abortSubscribe(s, err)
			return nil, err
		}
	}
	t.mu.Lock()
	if !b.enqueueLocked(t, op{kind: opAdd, sub: s}) {
		b.abortSubscribe(s, ErrShutdown)
		return nil, ErrClosed
	}
	return s, nil
}

// abortSubscribe finishes a subscription that was never handed to the
// delivery goroutine.
func (b *Bus) abortSubscribe(s *Subscription, reason error) {
	s.t.nsubs.Add(-1)
	b.m.subsDelta(-1)
	s.closing.Store(true)
	s.finished = true
	s.finish(reason)
}

// brokerSubscribe subscribes this node to t through the broker unless it
// is already, then reads t's position, so that the first local subscriber
// gets exactly what is published after Subscribe returns. All of it,
// waiting for a concurrent subscribe or unsubscribe of the same topic
// included, is bounded by ctx.
func (b *Bus) brokerSubscribe(ctx context.Context, t *topic) error {
	select {
	case t.brokerSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-t.brokerSem }()
	if t.brokerSubbed.Load() {
		return nil
	}
	if err := b.broker.Subscribe(ctx, t.name); err != nil {
		return err
	}
	t.brokerSubbed.Store(true) // released by the sweeper once unused
	_, pos, err := b.broker.History(ctx, t.name, 0, -1)
	if err != nil {
		pos = Position{} // accept whatever arrives first
	}
	t.mu.Lock()
	b.enqueueLocked(t, op{kind: opSync, pos: pos}) // refused only when shut
	return err
}

// brokerRelease unsubscribes the node from t when it has no subscriber
// left. Sweeper only; it skips a topic whose broker subscription is being
// changed (the next sweep sees it again).
func (b *Bus) brokerRelease(t *topic) {
	select {
	case t.brokerSem <- struct{}{}:
	default:
		return
	}
	defer func() { <-t.brokerSem }()
	if !t.brokerSubbed.Load() || t.nsubs.Load() != 0 {
		return
	}
	ctx, cancel := context.WithTimeout(b.life, b.cfg.BrokerTimeout)
	defer cancel()
	if err := b.broker.Unsubscribe(ctx, t.name); err != nil {
		b.log.Warn("fanout: broker unsubscribe failed", "topic", t.name, "err", err)
		return
	}
	t.brokerSubbed.Store(false)
}

// Unsubscribe closes sub with ErrUnsubscribed. It makes no network call
// and never blocks on deliveries: C is closed and Done fires once the
// topic's delivery goroutine reaches the removal, and no publication is
// delivered to sub after Unsubscribe returns (a callback already running
// finishes). Unsubscribing twice is a no-op.
func (b *Bus) Unsubscribe(sub *Subscription) error {
	if sub == nil || !sub.closing.CompareAndSwap(false, true) {
		return nil
	}
	t := sub.t
	t.mu.Lock()
	b.enqueueLocked(t, op{kind: opRemove, sub: sub, reason: ErrUnsubscribed})
	return nil
}

// Publish publishes payload on topic and returns the publication with its
// offset and epoch. It never waits for subscribers and never runs their
// callbacks: each subscriber gets the publication in its bounded buffer (or
// its callback is run) on the topic's delivery goroutine, after Publish
// has returned, and overflow is handled by the subscriber's policy.
//
// Without a Broker, Publish sequences the publication and stores it in the
// history before it returns; it makes no network call and, without
// contention, does not allocate; a ctx already done returns ctx.Err(). With
// a Broker, Publish returns once the broker has sequenced it (one round
// trip, bounded by ctx: a ctx that ends first makes Publish return an error
// wrapping ctx.Err(), though the broker may still have published it), and
// local subscribers receive it from the broker like every other node.
// payload is not copied and must not be modified afterwards.
func (b *Bus) Publish(ctx context.Context, name string, payload []byte) (Publication, error) {
	if err := b.intake(ctx, name); err != nil {
		return Publication{}, err
	}
	if b.broker != nil {
		p, err := b.broker.Publish(ctx, name, payload, b.historyOf(name))
		if err != nil {
			b.m.publishFailed()
			return Publication{}, err
		}
		b.m.published()
		return p, nil
	}
	t := b.lockTopic(name, true)
	if t == nil {
		return Publication{}, ErrClosed
	}
	now := time.Now()
	t.offset++
	p := Publication{Topic: t.name, Offset: t.offset, Epoch: t.epoch, Payload: payload, Time: now}
	t.hist.add(p)
	t.lastPub = now
	b.m.published()
	b.enqueueLocked(t, op{kind: opPublish, pub: p})
	return p, nil
}

// Recover returns the publications of topic after offset since in epoch,
// oldest first, for a client that reconnects with the last position it
// saw. It returns ErrRecoveryGap (wrapped) when the epoch differs or the
// history no longer holds every publication after since; the client must
// then reload its state. since equal to the current offset returns nothing
// and no error. It allocates the result; with a Broker it is one round
// trip bounded by ctx (an error wrapping ctx.Err() when ctx ends first).
func (b *Bus) Recover(ctx context.Context, name string, since uint64, epoch string) ([]Publication, error) {
	if err := b.intake(ctx, name); err != nil {
		return nil, err
	}
	pubs, err := b.recover(ctx, name, since, epoch)
	b.m.recovered(err)
	return pubs, err
}

func (b *Bus) recover(ctx context.Context, name string, since uint64, epoch string) ([]Publication, error) {
	if b.broker != nil {
		pubs, pos, err := b.broker.History(ctx, name, since, 0)
		if err != nil {
			return nil, err
		}
		if pos.Epoch != epoch && !(pos.Epoch == "" && since == 0) {
			return nil, &GapError{Topic: name, Since: since, Epoch: epoch, Current: pos}
		}
		if since == pos.Offset {
			return nil, nil
		}
		if since > pos.Offset || len(pubs) == 0 || pubs[0].Offset != since+1 {
			return nil, &GapError{Topic: name, Since: since, Epoch: epoch, Current: pos}
		}
		return pubs, nil
	}
	t := b.lockTopic(name, false)
	if t == nil {
		if since == 0 {
			return nil, nil
		}
		return nil, &GapError{Topic: name, Since: since, Epoch: epoch}
	}
	defer t.mu.Unlock()
	pos := Position{Offset: t.offset, Epoch: t.epoch}
	if epoch != t.epoch && !(since == 0 && epoch == "") {
		return nil, &GapError{Topic: name, Since: since, Epoch: epoch, Current: pos}
	}
	t.hist.expire(time.Now())
	pubs, ok := t.hist.since(since, t.offset)
	if !ok {
		return nil, &GapError{Topic: name, Since: since, Epoch: epoch, Current: pos}
	}
	return pubs, nil
}

// Position returns the topic's current position (last offset and epoch).
// Clients that start fresh store it and recover from it later. With a
// Broker it is one round trip bounded by ctx.
func (b *Bus) Position(ctx context.Context, name string) (Position, error) {
	if err := b.intake(ctx, name); err != nil {
		return Position{}, err
	}
	if b.broker != nil {
		_, pos, err := b.broker.History(ctx, name, 0, -1)
		return pos, err
	}
	t := b.lockTopic(name, true)
	if t == nil {
		return Position{}, ErrClosed
	}
	defer t.mu.Unlock()
	return Position{Offset: t.offset, Epoch: t.epoch}, nil
}

// GapError is returned (wrapping ErrRecoveryGap) when Recover cannot
// return every missed publication.
type GapError struct {
	// Topic, Since and Epoch are what Recover was asked for.
	Topic string
	Since uint64
	Epoch string
	// Current is the topic's position now, to restart from after a reload.
	Current Position
}

// Error describes the gap.
func (e *GapError) Error() string {
	return "fanout: recovery gap on " + strconv.Quote(e.Topic) + " since " +
		strconv.FormatUint(e.Since, 10) + "@" + e.Epoch + " (now " +
		strconv.FormatUint(e.Current.Offset, 10) + "@" + e.Current.Epoch + ")"
}

// Unwrap returns ErrRecoveryGap.
func (e *GapError) Unwrap() error { return ErrRecoveryGap }

type brokerHandler struct{ b *Bus }

// HandlePublication queues p for the topic's delivery goroutine; it never
// blocks on subscribers.
func (h brokerHandler) HandlePublication(p Publication) {
	t := h.b.lockTopic(p.Topic, false)
	if t == nil {
		return
	}
	h.b.enqueueLocked(t, op{kind: opRemote, pub: p})
}

// HandlePresence queues ev for the topic's delivery goroutine.
func (h brokerHandler) HandlePresence(ev PresenceEvent) {
	t := h.b.lockTopic(ev.Topic, false)
	if t == nil {
		return
	}
	t.presenceUse = true
	h.b.enqueueLocked(t, op{kind: opPresence, ev: ev})
}

// HandleReconnect queues a re-synchronisation of every affected topic; the
// delivery goroutines read the broker history, so it does not block.
func (h brokerHandler) HandleReconnect(affected func(topic string) bool) {
	b := h.b
	b.log.Info("fanout: broker reconnected, resynchronising topics")
	for _, t := range b.topics() {
		t.mu.Lock()
		if t.removed || t.shut || (affected != nil && !affected(t.name)) {
			t.mu.Unlock()
			continue
		}
		b.enqueueLocked(t, op{kind: opResync})
	}
}

// topics returns a snapshot of every topic held.
func (b *Bus) topics() []*topic {
	var ts []*topic
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		for _, t := range sh.topics {
			ts = append(ts, t)
		}
		sh.mu.RUnlock()
	}
	return ts
}

func randomID() string {
	return strconv.FormatUint(rand.Uint64(), 36)
}
