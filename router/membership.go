package router

import (
	"context"
	"errors"

	"github.com/cespare/xxhash/v2"
)

// Membership is what a service-discovery adapter drives: it pushes the full
// list of live nodes whenever it changes, and the receiver diff-applies it.
// *Ring implements it.
type Membership interface {
	SetMembers(nodes []Node) error
}

var _ Membership = (*Ring)(nil)

// NodeShare is a node's share of the key space, as a fraction of the whole
// ring (0 to 1).
type NodeShare struct {
	ID       string
	Fraction float64
}

// RingChange describes one membership change, as passed to
// RingConfig.OnChange. Added, Removed and Updated (weight or address
// changed; the new value) are sorted by ID. Gained and Lost list, sorted by
// ID, every node whose ownership grew or shrank and by how much of the key
// space: a gateway in Lost should hand over the users for which Moved
// reports true. The slices are the callback's to keep; a retained RingChange
// keeps both ring snapshots it compares alive.
type RingChange struct {
	// Version is the ring version after the change (Ring.Version).
	Version uint64
	Added   []Node
	Removed []Node
	Updated []Node
	Gained  []NodeShare
	Lost    []NodeShare
	// MovedFraction is the share of the key space whose owner changed.
	MovedFraction float64

	before, after *ringSnapshot
}

// Moved reports the owner of key before and after the change and whether it
// differs (a zero Node stands for "no owner", an empty ring). It allocates
// nothing and is safe to call from any goroutine, also after the callback
// returned.
func (c RingChange) Moved(key string) (from, to Node, moved bool) {
	if c.before == nil {
		return Node{}, Node{}, false
	}
	h := xxhash.Sum64String(key)
	from, to = c.before.owner(h), c.after.owner(h)
	return from, to, from.ID != to.ID
}

// ringSpace is the size of the position space: positions are 48 bits.
const ringSpace = 1 << 48

// ringDiff computes the change from prev to next: membership differences by
// ID, and for every elementary arc between consecutive points of either
// snapshot, whether its owner changed. O(points of both).
func ringDiff(prev, next *ringSnapshot) RingChange {
	ch := RingChange{Version: next.version, before: prev, after: next}

	idmap := make([]int, len(prev.nodes)) // prev index → next index, -1 if gone
	i := 0
	for j, n := range next.nodes {
		for i < len(prev.nodes) && prev.nodes[i].ID < n.ID {
			ch.Removed = append(ch.Removed, prev.nodes[i])
			idmap[i] = -1
			i++
		}
		if i < len(prev.nodes) && prev.nodes[i].ID == n.ID {
			if prev.nodes[i] != n {
				ch.Updated = append(ch.Updated, n)
			}
			idmap[i] = j
			i++
			continue
		}
		ch.Added = append(ch.Added, n)
	}
	for ; i < len(prev.nodes); i++ {
		ch.Removed = append(ch.Removed, prev.nodes[i])
		idmap[i] = -1
	}

	lost := make([]uint64, len(prev.nodes))
	gained := make([]uint64, len(next.nodes))
	a, b := prev.points, next.points
	var maxPos uint64
	if len(a) > 0 {
		maxPos = a[len(a)-1] >> 16
	}
	if len(b) > 0 {
		maxPos = max(maxPos, b[len(b)-1]>>16)
	}
	var moved uint64
	ia, ib := 0, 0
	last, first := uint64(0), true
	for ia < len(a) || ib < len(b) {
		v := uint64(ringSpace)
		if ia < len(a) {
			v = a[ia] >> 16
		}
		if ib < len(b) {
			v = min(v, b[ib]>>16)
		}
		// The arc (last, v] is owned by the first point at or after v.
		oa, ob, na := -1, -1, -1
		if len(a) > 0 {
			oa = int(a[ia%len(a)] & ringOwnerMask)
			na = idmap[oa]
		}
		if len(b) > 0 {
			ob = int(b[ib%len(b)] & ringOwnerMask)
		}
		var length uint64
		if first {
			length = v + ringSpace - maxPos
			first = false
		} else {
			length = v - last
		}
		if (oa < 0 || ob < 0 || na != ob) && length > 0 {
			moved += length
			if oa >= 0 {
				lost[oa] += length
			}
			if ob >= 0 {
				gained[ob] += length
			}
		}
		last = v
		for ia < len(a) && a[ia]>>16 == v {
			ia++
		}
		for ib < len(b) && b[ib]>>16 == v {
			ib++
		}
	}
	for k, l := range lost {
		if l > 0 {
			ch.Lost = append(ch.Lost, NodeShare{ID: prev.nodes[k].ID, Fraction: float64(l) / ringSpace})
		}
	}
	for k, g := range gained {
		if g > 0 {
			ch.Gained = append(ch.Gained, NodeShare{ID: next.nodes[k].ID, Fraction: float64(g) / ringSpace})
		}
	}
	ch.MovedFraction = float64(moved) / ringSpace
	return ch
}

// Follow applies every member list received from updates with SetMembers,
// on the calling goroutine, until ctx is done (returning ctx.Err()), updates
// is closed (returning nil) or the ring is closed (returning ErrRingClosed).
// When several lists are queued it applies only the newest. An invalid list
// is skipped, logged through the Observer and counted in
// ring_membership_errors_total; the ring keeps its previous members.
func (r *Ring) Follow(ctx context.Context, updates <-chan []Node) error {
	for {
		var nodes []Node
		select {
		case <-ctx.Done():
			return ctx.Err()
		case n, ok := <-updates:
			if !ok {
				return nil
			}
			nodes = n
		}
	drain:
		for {
			select {
			case n, ok := <-updates:
				if !ok {
					break drain
				}
				nodes = n
			default:
				break drain
			}
		}
		if err := r.SetMembers(nodes); err != nil {
			if errors.Is(err, ErrRingClosed) {
				return err
			}
			r.metrics.memberError(err)
		}
	}
}
