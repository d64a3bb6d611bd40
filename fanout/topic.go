package fanout

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

type opKind uint8

const (
	opPublish  opKind = iota + 1 // deliver pub (local: already sequenced)
	opRemote                     // pub from the broker: check sequence first
	opResync                     // re-read the broker position and fill gaps
	opSync                       // start tracking the broker position from pos
	opAdd                        // add sub
	opRemove                     // remove sub with reason
	opPresence                   // deliver ev
	opCloseAll                   // close every sub with reason
)

type op struct {
	kind   opKind
	pos    Position
	pub    Publication
	sub    *Subscription
	ev     PresenceEvent
	reason error
}

// topic holds one topic's subscribers, sequence, history and presence.
//
// Every change to what subscribers see goes through ops: enqueueLocked
// appends an op and queues the topic on its worker, the bus's delivery
// goroutine for it, which applies the ops in order, outside the lock. So
// deliveries for a topic are serialised and in order, callbacks never run
// under a lock nor on a goroutine inside a Bus method, and a callback that
// publishes or unsubscribes just enqueues.
type topic struct {
	name string
	sh   *shard
	w    *worker

	mu          sync.Mutex
	ops, spare  []op
	queued      bool   // on w.ready or being drained
	removed     bool   // dropped from the shard by the sweeper
	shut        bool   // Shutdown queued opCloseAll: no new deliveries
	offset      uint64 // local mode: last assigned offset
	epoch       string // local mode: epoch
	hist        ring   // local mode
	histOpts    HistoryOptions
	lastPub     time.Time
	members     map[string]*presence // local mode presence
	presenceUse bool                 // broker mode: sweep presence here

	nsubs atomic.Int64 // registered (not yet removed) subscriptions

	// brokerSem (capacity 1) serialises broker subscribe/unsubscribe of
	// the topic; a channel so that waiting for it respects a ctx.
	brokerSem    chan struct{}
	brokerSubbed atomic.Bool

	// Owned by the delivery goroutine.
	subs    []*Subscription
	last    Position // broker mode: last delivered position
	scratch []*Subscription
}

type presence struct {
	m       Member
	expires time.Time
}

func (b *Bus) apply(t *topic, o *op) {
	if b.abandon.Load() {
		switch o.kind {
		case opPublish, opRemote, opResync, opSync, opPresence:
			return // Shutdown stopped waiting: close subscriptions only
		}
	}
	switch o.kind {
	case opPublish:
		b.fanout(t, &o.pub)
	case opRemote:
		b.applyRemote(t, &o.pub)
	case opResync:
		b.resync(t)
	case opSync:
		// pos was read by Subscribe after the broker subscription, so what
		// is published later arrives as opRemote and continues from it.
		// Publications applied meanwhile may have moved past it already.
		if t.last.Epoch != o.pos.Epoch || t.last.Offset < o.pos.Offset {
			t.last = o.pos
		}
	case opAdd:
		// Added even if the host closed it meanwhile: its remove op (or
		// Shutdown's close) follows and finishes it; fanout skips it.
		s := o.sub
		s.idx = len(t.subs)
		t.subs = append(t.subs, s)
	case opRemove:
		b.removeSub(t, o.sub, o.reason, false)
	case opPresence:
		for _, s := range t.subs {
			if s.onPresence != nil && !s.closing.Load() {
				s.onPresence(o.ev)
			}
		}
	case opCloseAll:
		b.closeAll(t, o.reason)
	}
}

// fanout delivers p to every subscriber, never blocking.
func (b *Bus) fanout(t *topic, p *Publication) {
	m := b.m
	drop := t.scratch[:0]
	n := 0
	for _, s := range t.subs {
		switch {
		case s.closing.Load():
			// Closed by the host; its remove op follows.
		case s.deliver(p, m):
			n++
		default:
			drop = append(drop, s)
		}
	}
	if m != nil {
		m.delivered(n, time.Since(p.Time))
	}
	for i, s := range drop {
		drop[i] = nil
		b.disconnect(t, s, ErrSlowSubscriber)
	}
	t.scratch = drop[:0]
}

// disconnect closes s for reason and tells the host. Delivery goroutine
// only.
func (b *Bus) disconnect(t *topic, s *Subscription, reason error) {
	if !s.closing.CompareAndSwap(false, true) {
		// The host is closing it concurrently; its remove op finishes it.
		return
	}
	b.removeSub(t, s, reason, true)
}

// removeSub removes s from t.subs (if added) and finishes it, once. With
// notify, and unless Shutdown has begun, OnDisconnect is called. Delivery
// goroutine only.
func (b *Bus) removeSub(t *topic, s *Subscription, reason error, notify bool) {
	if s.finished {
		return
	}
	if s.idx >= 0 && s.idx < len(t.subs) && t.subs[s.idx] == s {
		last := len(t.subs) - 1
		t.subs[s.idx] = t.subs[last]
		t.subs[s.idx].idx = s.idx
		t.subs[last] = nil
		t.subs = t.subs[:last]
	}
	s.idx = -1
	s.finished = true
	s.finish(reason)
	b.m.subsDelta(-1)
	t.nsubs.Add(-1)
	if notify && b.cfg.OnDisconnect != nil && !b.closed.Load() {
		b.cfg.OnDisconnect(s, reason)
	}
}

// closeAll closes every subscription of t with reason. For ErrShutdown it
// also finishes those the host is closing concurrently (their remove op may
// never be applied), with the reason the host gave.
func (b *Bus) closeAll(t *topic, reason error) {
	subs := append(t.scratch[:0], t.subs...)
	for i, s := range subs {
		subs[i] = nil
		switch {
		case s.closing.CompareAndSwap(false, true):
			b.removeSub(t, s, reason, reason != ErrShutdown)
		case reason == ErrShutdown:
			b.removeSub(t, s, ErrUnsubscribed, false)
		}
	}
	t.scratch = subs[:0]
}

// applyRemote delivers a publication received from the broker after
// checking it continues the stream the subscribers have seen; a gap is
// filled from the broker history, and state that cannot be recovered
// disconnects the subscribers with ErrInsufficientState.
func (b *Bus) applyRemote(t *topic, p *Publication) {
	switch {
	case t.last.Epoch == "":
	case p.Epoch != t.last.Epoch:
		b.lostState(t, Position{Offset: p.Offset, Epoch: p.Epoch}, "epoch changed")
		return
	case p.Offset <= t.last.Offset:
		return // duplicate (already filled from history)
	case p.Offset != t.last.Offset+1:
		if !b.fill(t, p.Offset-1) {
			return
		}
	}
	t.last = Position{Offset: p.Offset, Epoch: p.Epoch}
	b.fanout(t, p)
}

// resync re-reads the topic's broker position after a reconnect and
// delivers what was missed.
func (b *Bus) resync(t *topic) {
	if len(t.subs) == 0 && t.last.Epoch == "" {
		return
	}
	ctx, cancel := context.WithTimeout(b.life, b.cfg.BrokerTimeout)
	_, pos, err := b.broker.History(ctx, t.name, 0, -1)
	cancel()
	switch {
	case err != nil:
		b.lostState(t, Position{}, "history: "+err.Error())
	case t.last.Epoch == "":
		t.last = pos
	case pos.Epoch != t.last.Epoch:
		b.lostState(t, pos, "epoch changed")
	case pos.Offset > t.last.Offset:
		b.fill(t, pos.Offset)
	}
}

// fill delivers the publications after t.last up to and including upto
// from the broker history. It returns false (after disconnecting the
// subscribers) when the history cannot fill the gap.
func (b *Bus) fill(t *topic, upto uint64) bool {
	ctx, cancel := context.WithTimeout(b.life, b.cfg.BrokerTimeout)
	pubs, pos, err := b.broker.History(ctx, t.name, t.last.Offset, int(upto-t.last.Offset))
	cancel()
	if err != nil {
		b.lostState(t, Position{}, "history: "+err.Error())
		return false
	}
	if pos.Epoch != t.last.Epoch {
		b.lostState(t, pos, "epoch changed")
		return false
	}
	if len(pubs) == 0 || pubs[0].Offset != t.last.Offset+1 {
		b.lostState(t, pos, "history gap")
		return false
	}
	b.m.resynced()
	for i := range pubs {
		if pubs[i].Offset > upto {
			break
		}
		if pubs[i].Offset != t.last.Offset+1 {
			b.lostState(t, pos, "history gap")
			return false
		}
		t.last = Position{Offset: pubs[i].Offset, Epoch: pubs[i].Epoch}
		b.fanout(t, &pubs[i])
	}
	return t.last.Offset == upto
}

func (b *Bus) lostState(t *topic, pos Position, why string) {
	b.log.Warn("fanout: lost publications, disconnecting subscribers",
		"topic", t.name, "subscribers", len(t.subs), "reason", why)
	b.m.lost()
	t.last = pos
	b.closeAll(t, ErrInsufficientState)
}
