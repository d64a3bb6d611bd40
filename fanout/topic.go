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
	opSync                       // start tracking the broker position afresh
	opAdd                        // add sub
	opRemove                     // remove sub with reason
	opPresence                   // deliver ev
	opCloseAll                   // close every sub with reason
)

type op struct {
	kind   opKind
	pub    Publication
	sub    *Subscription
	ev     PresenceEvent
	reason error
}

// topic holds one topic's subscribers, sequence, history and presence.
//
// Every change to what subscribers see goes through ops: whoever enqueues an
// op while no dispatch is running becomes the dispatcher and applies ops in
// order, outside the lock, until the queue is empty. So deliveries for a
// topic are serialised and in order, callbacks never run under a lock, and a
// callback that publishes or unsubscribes just enqueues.
type topic struct {
	name string
	sh   *shard

	mu          sync.Mutex
	ops, spare  []op
	dispatching bool
	removed     bool
	offset      uint64 // local mode: last assigned offset
	epoch       string // local mode: epoch
	hist        ring   // local mode
	histOpts    HistoryOptions
	lastPub     time.Time
	members     map[string]*presence // local mode presence
	presenceUse bool                 // broker mode: sweep presence here

	nsubs atomic.Int64 // registered (not yet removed) subscriptions

	brokerMu     sync.Mutex
	brokerSubbed bool

	// Owned by the dispatcher.
	subs    []*Subscription
	last    Position // broker mode: last delivered position
	scratch []*Subscription
}

type presence struct {
	m       Member
	expires time.Time
}

// enqueueLocked appends o and, unless another goroutine is dispatching,
// dispatches until the queue is empty. Called with t.mu held; returns with
// it released.
func (b *Bus) enqueueLocked(t *topic, o op) {
	t.ops = append(t.ops, o)
	if t.dispatching {
		t.mu.Unlock()
		return
	}
	t.dispatching = true
	for {
		batch := t.ops
		t.ops = t.spare[:0]
		t.mu.Unlock()
		for i := range batch {
			b.apply(t, &batch[i])
			batch[i] = op{}
		}
		t.mu.Lock()
		t.spare = batch[:0]
		if len(t.ops) == 0 {
			t.dispatching = false
			t.mu.Unlock()
			return
		}
	}
}

func (b *Bus) apply(t *topic, o *op) {
	switch o.kind {
	case opPublish:
		b.fanout(t, &o.pub)
	case opRemote:
		b.applyRemote(t, &o.pub)
	case opResync:
		b.resync(t)
	case opSync:
		ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
		_, pos, err := b.broker.History(ctx, t.name, 0, -1)
		cancel()
		if err != nil {
			pos = Position{} // accept whatever arrives first
		}
		t.last = pos
	case opAdd:
		s := o.sub
		if s.closing.Load() {
			// Closed before it was ever added: the remove op already ran
			// or will find idx < 0.
			return
		}
		s.idx = len(t.subs)
		t.subs = append(t.subs, s)
	case opRemove:
		b.removeSub(t, o.sub, o.reason)
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
	for _, s := range t.subs {
		if !s.deliver(p, m) {
			drop = append(drop, s)
		}
	}
	if m != nil {
		m.delivered(len(t.subs)-len(drop), b.clock.Now().Sub(p.Time))
	}
	for i, s := range drop {
		drop[i] = nil
		b.disconnect(t, s, ErrSlowSubscriber)
	}
	t.scratch = drop[:0]
}

// disconnect closes s for reason and tells the host. Dispatcher only.
func (b *Bus) disconnect(t *topic, s *Subscription, reason error) {
	if !s.closing.CompareAndSwap(false, true) {
		// The host is closing it concurrently; its remove op finishes it.
		return
	}
	b.removeSub(t, s, reason)
}

// removeSub removes s from t.subs (if added) and finishes it. Dispatcher only.
func (b *Bus) removeSub(t *topic, s *Subscription, reason error) {
	if s.idx >= 0 && s.idx < len(t.subs) && t.subs[s.idx] == s {
		last := len(t.subs) - 1
		t.subs[s.idx] = t.subs[last]
		t.subs[s.idx].idx = s.idx
		t.subs[last] = nil
		t.subs = t.subs[:last]
	}
	s.idx = -1
	s.finish(reason)
	b.subRemoved(t)
	if reason != ErrUnsubscribed && b.cfg.OnDisconnect != nil {
		b.cfg.OnDisconnect(s, reason)
	}
}

func (b *Bus) closeAll(t *topic, reason error) {
	subs := append(t.scratch[:0], t.subs...)
	for i, s := range subs {
		subs[i] = nil
		b.disconnect(t, s, reason)
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
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
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
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.BrokerTimeout)
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
