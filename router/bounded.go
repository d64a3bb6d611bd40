package router

import (
	"errors"
	"math"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// NodeLoad is a node's bounded-load state, as reported by Loads.
type NodeLoad struct {
	Node Node
	// Load is the number of acquisitions the node currently holds.
	Load int
	// Capacity is the most the node may hold after the next Acquire:
	// ⌈c · (total+1) · weight / total weight⌉.
	Capacity int
}

// ringBounded holds the loads for Acquire. Loads are kept per node ID and
// realigned to the current snapshot lazily, so membership changes never
// wait for it.
type ringBounded struct {
	mu      sync.Mutex
	snap    *ringSnapshot   // snapshot entries is aligned with
	entries []*boundedEntry // by node index in snap
	byID    map[string]*boundedEntry
	total   int // sum of the loads of live nodes
	gen     uint64

	// check, when set (tests), is called under mu after every placement
	// with the node's new load, its capacity and the new total.
	check func(n Node, load, capacity, total int)
}

type boundedEntry struct {
	load int
	live bool
	gen  uint64
}

// errBoundedFull cannot happen: with c > 1 the capacities sum to more than
// the load, so some node is always below capacity. It guards the loop.
var errBoundedFull = errors.New("router: every node at capacity")

// Acquire places one unit of load for key with consistent hashing with
// bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2018): the key goes to
// its owner unless that node already holds its capacity
// ⌈c · m · weight / total weight⌉, m being the total load including this
// one, in which case it overflows to the next node clockwise that is below
// its capacity. With equal weights no node ever holds more than ⌈c·m/n⌉ at
// the moment it is given a key. c is RingConfig.LoadFactor.
//
// The caller must call release exactly once when the key's work ends; later
// calls are no-ops. Loads are counted per node ID: if the node is removed
// while held, its load stops counting and release only forgets it. Acquire
// serialises on a mutex (placement needs a consistent view of all loads),
// usually probes only the first few nodes clockwise (the paper bounds the
// expected probes by O(1/ε²), ε = c−1), and allocates the release function
// (two small objects). It returns ErrEmptyRing when the ring has no nodes.
func (r *Ring) Acquire(key string) (Node, func(), error) {
	h := xxhash.Sum64String(key)
	b := &r.bounded
	b.mu.Lock()
	s := r.snap.Load()
	if len(s.nodes) == 0 {
		b.mu.Unlock()
		return Node{}, nil, ErrEmptyRing
	}
	b.syncLocked(s)
	m := b.total + 1
	start := s.search(h)
	pts := s.points
	i := start
	for range len(pts) {
		o := pts[i] & ringOwnerMask
		e := b.entries[o]
		capacity := boundedCapacity(r.loadFactor, m, s.nodes[o].Weight, s.totalWeight)
		if e.load < capacity {
			e.load++
			b.total++
			n := s.nodes[o]
			if b.check != nil {
				b.check(n, e.load, capacity, b.total)
			}
			r.metrics.acquired(o != pts[start]&ringOwnerMask, b.total)
			b.mu.Unlock()
			l := &boundedLease{r: r, e: e}
			return n, l.release, nil
		}
		if i++; i == len(pts) {
			i = 0
		}
	}
	b.mu.Unlock()
	return Node{}, nil, errBoundedFull
}

// Loads returns every member's current load and capacity, sorted by ID, as
// one consistent view. It allocates the result.
func (r *Ring) Loads() []NodeLoad {
	b := &r.bounded
	b.mu.Lock()
	defer b.mu.Unlock()
	s := r.snap.Load()
	b.syncLocked(s)
	out := make([]NodeLoad, len(s.nodes))
	for i, n := range s.nodes {
		out[i] = NodeLoad{
			Node:     n,
			Load:     b.entries[i].load,
			Capacity: boundedCapacity(r.loadFactor, b.total+1, n.Weight, s.totalWeight),
		}
	}
	return out
}

// syncLocked aligns the entries with snapshot s: members keep their load
// by ID, departed members stop counting.
func (b *ringBounded) syncLocked(s *ringSnapshot) {
	if b.snap == s {
		return
	}
	if b.byID == nil {
		b.byID = make(map[string]*boundedEntry, len(s.nodes))
	}
	b.gen++
	b.entries = make([]*boundedEntry, len(s.nodes))
	for i, n := range s.nodes {
		e := b.byID[n.ID]
		if e == nil {
			e = &boundedEntry{live: true}
			b.byID[n.ID] = e
		}
		e.gen = b.gen
		b.entries[i] = e
	}
	for id, e := range b.byID {
		if e.gen != b.gen {
			b.total -= e.load
			e.live = false
			delete(b.byID, id)
		}
	}
	b.snap = s
}

// boundedCapacity is ⌈c · m · w / W⌉, read as the exact ceiling when the
// product lands within floating-point noise above an integer.
func boundedCapacity(c float64, m, w, totalW int) int {
	x := c * float64(m) * float64(w) / float64(totalW)
	k := math.Ceil(x)
	if k-x > 1-1e-9 {
		k--
	}
	return int(k)
}

// boundedLease is one acquisition; release gives it back once.
type boundedLease struct {
	r    *Ring
	e    *boundedEntry
	done bool // guarded by r.bounded.mu
}

func (l *boundedLease) release() {
	b := &l.r.bounded
	b.mu.Lock()
	if l.done {
		b.mu.Unlock()
		return
	}
	l.done = true
	l.e.load--
	if l.e.live {
		b.total--
	}
	l.r.metrics.released(b.total)
	b.mu.Unlock()
}
