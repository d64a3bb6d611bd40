package fanout

import (
	"context"
	"errors"
	"sort"
	"time"
)

// Join adds member to topic for ttl (refreshing it when already present)
// and, when it is new, sends a Join event to the topic's subscribers on
// every node (delivered on the bus's delivery goroutine, after Join
// returns). The owner must call Refresh (or Join) before ttl elapses, so a
// crashed owner's members disappear with a Leave event. ttl must be > 0.
// With a Broker it is one round trip bounded by ctx (an error wrapping
// ctx.Err() when ctx ends first); without one, a ctx already done returns
// ctx.Err().
func (b *Bus) Join(ctx context.Context, name string, m Member, ttl time.Duration) error {
	if err := b.presenceArgs(ctx, name, m.ID, ttl); err != nil {
		return err
	}
	t := b.lockTopic(name, true)
	if t == nil {
		return ErrClosed
	}
	if b.broker != nil {
		t.presenceUse = true
		t.mu.Unlock()
		return b.broker.Join(ctx, name, m, ttl)
	}
	if t.members == nil {
		t.members = map[string]*presence{}
	}
	exp := time.Now().Add(ttl)
	if p, ok := t.members[m.ID]; ok {
		p.m, p.expires = m, exp
		t.mu.Unlock()
		return nil
	}
	t.members[m.ID] = &presence{m: m, expires: exp}
	b.m.presenceEvent(Join)
	b.enqueueLocked(t, op{kind: opPresence, ev: PresenceEvent{Topic: name, Kind: Join, Member: m}})
	return nil
}

// Refresh extends a present member's TTL to ttl from now, without an
// event. It returns ErrNotMember when the member is absent (for example
// already expired: Join again). With a Broker it is one round trip bounded
// by ctx.
func (b *Bus) Refresh(ctx context.Context, name, memberID string, ttl time.Duration) error {
	if err := b.presenceArgs(ctx, name, memberID, ttl); err != nil {
		return err
	}
	if b.broker != nil {
		return b.broker.Refresh(ctx, name, memberID, ttl)
	}
	t := b.lockTopic(name, false)
	if t == nil {
		return ErrNotMember
	}
	defer t.mu.Unlock()
	p, ok := t.members[memberID]
	if !ok {
		return ErrNotMember
	}
	p.expires = time.Now().Add(ttl)
	return nil
}

// Leave removes a member and sends a Leave event to the topic's
// subscribers on every node. It returns ErrNotMember when absent. With a
// Broker it is one round trip bounded by ctx.
func (b *Bus) Leave(ctx context.Context, name, memberID string) error {
	if err := b.presenceArgs(ctx, name, memberID, time.Second); err != nil {
		return err
	}
	if b.broker != nil {
		return b.broker.Leave(ctx, name, memberID)
	}
	t := b.lockTopic(name, false)
	if t == nil {
		return ErrNotMember
	}
	p, ok := t.members[memberID]
	if !ok {
		t.mu.Unlock()
		return ErrNotMember
	}
	delete(t.members, memberID)
	b.m.presenceEvent(Leave)
	b.enqueueLocked(t, op{kind: opPresence, ev: PresenceEvent{Topic: name, Kind: Leave, Member: p.m}})
	return nil
}

// Members returns the topic's present members sorted by ID. Expired
// members are removed first (with a Leave event each). With a Broker it is
// one round trip bounded by ctx (an error wrapping ctx.Err() when ctx ends
// first); without one, a ctx already done returns ctx.Err().
func (b *Bus) Members(ctx context.Context, name string) ([]Member, error) {
	if err := b.intake(ctx, name); err != nil {
		return nil, err
	}
	if b.broker != nil {
		ms, err := b.broker.Members(ctx, name)
		if err != nil {
			return nil, err
		}
		sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
		return ms, nil
	}
	t := b.lockTopic(name, false)
	if t == nil {
		return nil, nil
	}
	t.mu.Unlock()
	b.expirePresence(t, time.Now())
	t.mu.Lock()
	out := make([]Member, 0, len(t.members))
	for _, p := range t.members {
		out = append(out, p.m)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// expirePresence removes expired members of a local topic with Leave events.
func (b *Bus) expirePresence(t *topic, now time.Time) {
	t.mu.Lock()
	var gone []Member
	for id, p := range t.members {
		if !now.Before(p.expires) {
			delete(t.members, id)
			gone = append(gone, p.m)
		}
	}
	if len(gone) == 0 || t.shut {
		t.mu.Unlock()
		return
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].ID < gone[j].ID })
	for _, m := range gone[:len(gone)-1] {
		b.m.presenceEvent(Leave)
		t.ops = append(t.ops, op{kind: opPresence, ev: PresenceEvent{Topic: t.name, Kind: Leave, Member: m}})
	}
	b.m.presenceEvent(Leave)
	b.enqueueLocked(t, op{kind: opPresence, ev: PresenceEvent{Topic: t.name, Kind: Leave, Member: gone[len(gone)-1]}})
}

func (b *Bus) presenceArgs(ctx context.Context, name, id string, ttl time.Duration) error {
	if err := b.intake(ctx, name); err != nil {
		return err
	}
	if id == "" {
		return errors.New("fanout: Member.ID must not be empty")
	}
	if ttl <= 0 {
		return errors.New("fanout: presence ttl must be > 0")
	}
	return nil
}
