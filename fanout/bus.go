package fanout

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Bus is a topic publish/subscribe hub with bounded subscribers, history
// and recovery, and presence. With Config.Broker it is one node of many.
// All methods are safe for concurrent use.
type Bus struct {
	cfg    Config
	clock  Clock
	broker Broker
	shards []shard
	m      *metrics
	log    *slog.Logger

	closed   atomic.Bool
	stop     chan struct{}
	sweeper  sync.WaitGroup
	releases sync.WaitGroup // brokerRelease calls started by dispatchers
	shutOnce sync.Once
	shutErr  error
}

type shard struct {
	mu     sync.RWMutex
	topics map[string]*topic
	opts   map[string]HistoryOptions // per-topic overrides
}

// New validates cfg, fills defaults, starts the broker (if any) and the
// presence/idle-topic sweeper. Close or Shutdown stops them.
func New(cfg Config) (*Bus, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	b := &Bus{
		cfg:    cfg,
		clock:  cfg.Clock,
		broker: cfg.Broker,
		shards: make([]shard, cfg.Shards),
		log:    cfg.Observer.Logger().With("component", "fanout", "node", cfg.NodeID),
		stop:   make(chan struct{}),
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
	t := b.clock.NewTicker(cfg.SweepInterval)
	b.sweeper.Add(1)
	go b.sweepLoop(t)
	return b, nil
}

func (b *Bus) shardOf(name string) *shard {
	return &b.shards[xxhash.Sum64String(name)%uint64(len(b.shards))]
}

// lockTopic returns the topic, locked, creating it when create is set; nil
// when it does not exist (and create is false).
func (b *Bus) lockTopic(name string, create bool) *topic {
	sh := b.shardOf(name)
	for {
		sh.mu.RLock()
		t := sh.topics[name]
		sh.mu.RUnlock()
		if t == nil {
			if !create {
				return nil
			}
			sh.mu.Lock()
			if t = sh.topics[name]; t == nil {
				h, ok := sh.opts[name]
				if !ok {
					h = b.cfg.History
				}
				t = &topic{name: name, sh: sh, epoch: randomID(), histOpts: h, lastPub: b.clock.Now()}
				t.hist.configure(h)
				sh.topics[name] = t
				b.m.topicsDelta(1)
			}
			sh.mu.Unlock()
		}
		t.mu.Lock()
		if !t.removed {
			return t
		}
		t.mu.Unlock()
	}
}

// SetTopicOptions sets the history of one topic, overriding
// Config.History, for the topic's current and future incarnations. Shrinking
// keeps the newest publications. With a Broker the options are passed on
// every Publish to the topic.
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
// Subscribe returns are delivered to it in offset order; earlier ones are
// available through Recover (deliveries may overlap what Recover returns:
// skip offsets already seen). With a Broker, the first local subscriber of
// a topic subscribes the node through the broker, which may block up to
// Config.BrokerTimeout. It allocates the subscription and its buffer.
func (b *Bus) Subscribe(name string, opts SubscribeOptions) (*Subscription, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if !validTopic(name) {
		return nil, ErrInvalidTopic
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
	t.nsubs.Add(1)
	t.mu.Unlock()
	s.t = t
	b.m.subsDelta(1)
	if b.broker != nil {
		if err := b.brokerSubscribe(t); err != nil {
			t.nsubs.Add(-1)
			b.m.subsDelta(-1)
			s.closing.Store(true)
			s.finish(err)
			b.brokerRelease(t)
			return nil, err
		}
	}
	t.mu.Lock()
	b.enqueueLocked(t, op{kind: opAdd, sub: s})
	return s, nil
}

func (b *Bus) brokerSubscribe(t *topic) error {
	t.brokerMu.Lock()
	defer t.brokerMu.Unlock()
	if t.brokerSubbed {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
	defer cancel()
	if err := b.broker.Subscribe(ctx, t.name); err != nil {
		return err
	}
	t.brokerSubbed = true
	t.mu.Lock()
	b.enqueueLocked(t, op{kind: opSync})
	return nil
}

// brokerRelease unsubscribes the node from t when it has no subscriber left.
func (b *Bus) brokerRelease(t *topic) {
	if b.broker == nil || t.nsubs.Load() != 0 {
		return
	}
	t.brokerMu.Lock()
	defer t.brokerMu.Unlock()
	if !t.brokerSubbed || t.nsubs.Load() != 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
	defer cancel()
	if err := b.broker.Unsubscribe(ctx, t.name); err != nil {
		b.log.Warn("fanout: broker unsubscribe failed", "topic", t.name, "err", err)
		return
	}
	t.brokerSubbed = false
}

// subRemoved accounts for a finished subscription. Dispatcher only.
func (b *Bus) subRemoved(t *topic) {
	b.m.subsDelta(-1)
	if t.nsubs.Add(-1) == 0 && b.broker != nil && !b.closed.Load() {
		// Network call: not on the dispatching goroutine. Shutdown waits.
		b.releases.Add(1)
		go func() {
			defer b.releases.Done()
			b.brokerRelease(t)
		}()
	}
}

// Unsubscribe closes sub with ErrUnsubscribed. It never blocks on
// deliveries: if the topic is being dispatched concurrently, C is closed
// when that dispatch reaches the removal. Unsubscribing twice is a no-op.
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
// offset and epoch. It never waits for subscribers: each gets the
// publication in its bounded buffer (or its callback is run), and overflow
// is handled by the subscriber's policy. Without a Broker, local delivery
// is done before Publish returns, unless another goroutine is dispatching
// the same topic, which then delivers it in order. With a Broker, Publish
// returns once the broker has sequenced it (one round trip, bounded by
// Config.BrokerTimeout) and local subscribers receive it from the broker
// like every other node. payload is not copied and must not be modified
// afterwards. Without a Broker and without dispatch contention Publish
// does not allocate.
func (b *Bus) Publish(name string, payload []byte) (Publication, error) {
	if b.closed.Load() {
		return Publication{}, ErrClosed
	}
	if !validTopic(name) {
		return Publication{}, ErrInvalidTopic
	}
	if b.broker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
		defer cancel()
		p, err := b.broker.Publish(ctx, name, payload, b.historyOf(name))
		if err != nil {
			b.m.publishFailed()
			return Publication{}, err
		}
		b.m.published()
		return p, nil
	}
	t := b.lockTopic(name, true)
	now := b.clock.Now()
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
// and no error. It allocates the result; with a Broker it is one round trip.
func (b *Bus) Recover(name string, since uint64, epoch string) ([]Publication, error) {
	if b.closed.Load() {
		return nil, ErrClosed
	}
	if !validTopic(name) {
		return nil, ErrInvalidTopic
	}
	pubs, err := b.recover(name, since, epoch)
	b.m.recovered(err)
	return pubs, err
}

func (b *Bus) recover(name string, since uint64, epoch string) ([]Publication, error) {
	if b.broker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
		defer cancel()
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
	t.hist.expire(b.clock.Now())
	pubs, ok := t.hist.since(since, t.offset)
	if !ok {
		return nil, &GapError{Topic: name, Since: since, Epoch: epoch, Current: pos}
	}
	return pubs, nil
}

// Position returns the topic's current position (last offset and epoch).
// Clients that start fresh store it and recover from it later.
func (b *Bus) Position(name string) (Position, error) {
	if !validTopic(name) {
		return Position{}, ErrInvalidTopic
	}
	if b.broker != nil {
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
		defer cancel()
		_, pos, err := b.broker.History(ctx, name, 0, -1)
		return pos, err
	}
	t := b.lockTopic(name, true)
	defer t.mu.Unlock()
	return Position{Offset: t.offset, Epoch: t.epoch}, nil
}

// GapError is returned (wrapping ErrRecoveryGap) when Recover cannot
// return every missed publication.
type GapError struct {
	Topic   string
	Since   uint64
	Epoch   string
	Current Position // the topic's position now, to restart from after a reload
}

func (e *GapError) Error() string {
	return "fanout: recovery gap on " + strconv.Quote(e.Topic) + " since " +
		strconv.FormatUint(e.Since, 10) + "@" + e.Epoch + " (now " +
		strconv.FormatUint(e.Current.Offset, 10) + "@" + e.Current.Epoch + ")"
}

// Unwrap returns ErrRecoveryGap.
func (e *GapError) Unwrap() error { return ErrRecoveryGap }

// Close is Shutdown with no deadline.
func (b *Bus) Close() error { return b.Shutdown(context.Background()) }

// Shutdown stops intake (Subscribe and Publish return ErrClosed), closes
// every subscription with ErrShutdown (telling the host through
// OnDisconnect), stops the sweeper and closes the broker. It returns
// ctx.Err() if ctx ends first; the remaining work is then abandoned
// except stopping the sweeper. Calling it again returns the first result.
func (b *Bus) Shutdown(ctx context.Context) error {
	b.shutOnce.Do(func() {
		b.closed.Store(true)
		close(b.stop)
		b.sweeper.Wait()
		for i := range b.shards {
			if err := ctx.Err(); err != nil {
				b.shutErr = err
				break
			}
			sh := &b.shards[i]
			sh.mu.RLock()
			ts := make([]*topic, 0, len(sh.topics))
			for _, t := range sh.topics {
				ts = append(ts, t)
			}
			sh.mu.RUnlock()
			for _, t := range ts {
				t.mu.Lock()
				b.enqueueLocked(t, op{kind: opCloseAll, reason: ErrShutdown})
			}
		}
		b.releases.Wait()
		if b.broker != nil {
			if err := b.broker.Close(); err != nil && b.shutErr == nil {
				b.shutErr = err
			}
		}
	})
	return b.shutErr
}

func (b *Bus) sweepLoop(t Ticker) {
	defer b.sweeper.Done()
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C():
			b.Sweep()
		}
	}
}

// Sweep expires presence members and history entries and drops idle
// topics. The bus runs it every Config.SweepInterval; tests with a fake
// clock may call it directly. With a Broker it asks the broker to expire
// presence of topics this node has joined or subscribed, one call each.
func (b *Bus) Sweep() {
	now := b.clock.Now()
	var brokerTopics []string
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		ts := make([]*topic, 0, len(sh.topics))
		for _, t := range sh.topics {
			ts = append(ts, t)
		}
		sh.mu.RUnlock()
		for _, t := range ts {
			if b.broker != nil {
				if t.presenceUse && t.nsubs.Load() > 0 {
					brokerTopics = append(brokerTopics, t.name)
				}
			} else {
				b.expirePresence(t, now)
			}
			b.maybeDrop(sh, t, now)
		}
	}
	for _, name := range brokerTopics {
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
		if _, err := b.broker.Members(ctx, name); err != nil {
			b.log.Warn("fanout: presence sweep failed", "topic", name, "err", err)
		}
		cancel()
	}
}

// maybeDrop removes a topic that has no subscriber, no pending work, no
// presence and no unexpired history.
func (b *Bus) maybeDrop(sh *shard, t *topic, now time.Time) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hist.expire(now)
	if t.removed || t.dispatching || len(t.ops) > 0 || t.nsubs.Load() > 0 ||
		len(t.members) > 0 || t.hist.n > 0 {
		return
	}
	if t.histOpts.Size > 0 && now.Sub(t.lastPub) < t.histOpts.TTL {
		return
	}
	t.brokerMu.Lock()
	subbed := t.brokerSubbed
	t.brokerMu.Unlock()
	if subbed {
		return
	}
	t.removed = true
	delete(sh.topics, t.name)
	b.m.topicsDelta(-1)
}

type brokerHandler struct{ b *Bus }

func (h brokerHandler) HandlePublication(p Publication) {
	t := h.b.lockTopic(p.Topic, false)
	if t == nil {
		return
	}
	h.b.enqueueLocked(t, op{kind: opRemote, pub: p})
}

func (h brokerHandler) HandlePresence(ev PresenceEvent) {
	t := h.b.lockTopic(ev.Topic, false)
	if t == nil {
		return
	}
	t.presenceUse = true
	h.b.enqueueLocked(t, op{kind: opPresence, ev: ev})
}

func (h brokerHandler) HandleReconnect(affected func(topic string) bool) {
	b := h.b
	b.log.Info("fanout: broker reconnected, resynchronising topics")
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		ts := make([]*topic, 0, len(sh.topics))
		for _, t := range sh.topics {
			ts = append(ts, t)
		}
		sh.mu.RUnlock()
		for _, t := range ts {
			t.mu.Lock()
			if t.removed || (affected != nil && !affected(t.name)) {
				t.mu.Unlock()
				continue
			}
			b.enqueueLocked(t, op{kind: opResync})
		}
	}
}

func randomID() string {
	return strconv.FormatUint(rand.Uint64(), 36)
}
