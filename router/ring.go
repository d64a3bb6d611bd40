package router

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/switchboard-go/switchboard/internal/lifetime"
	"github.com/switchboard-go/switchboard/internal/notify"
	"github.com/switchboard-go/switchboard/observe"
)

// DefaultVirtualNodes is the number of virtual nodes per unit of weight used
// when RingConfig.VirtualNodes is zero. It keeps ten equal nodes within ±10%
// of the mean load (max/mean ≤ 1.10 and min/mean ≥ 0.90 averaged over ten
// name sets, see TestRingBalance) for every naming scheme we tried; 256 misses
// that for some schemes and the whitepaper's 100 gives about 1.16.
const DefaultVirtualNodes = 400

// DefaultLoadFactor is the bounded-load factor c used by Acquire when
// RingConfig.LoadFactor is zero.
const DefaultLoadFactor = 1.25

// MaxNodes is the largest number of nodes a Ring holds: a ring point stores
// its owner in 16 bits.
const MaxNodes = 1 << 16

// MaxPointsPerNode bounds Weight × VirtualNodes for a single node.
const MaxPointsPerNode = 1 << 20

// Errors returned by Ring. They are wrapped with details; test with errors.Is.
var (
	// ErrInvalidConfig is wrapped by NewRing and NewAssigner when a
	// RingConfig or AssignerConfig field is invalid; the message names the
	// field.
	ErrInvalidConfig = errors.New("router: invalid config")
	// ErrInvalidNode is wrapped when a Node has an empty ID, a negative
	// weight, a weight too large for the virtual-node budget, or when a
	// member list repeats an ID or exceeds MaxNodes.
	ErrInvalidNode = errors.New("router: invalid node")
	// ErrNodeExists is returned by Add for an ID already in the ring.
	ErrNodeExists = errors.New("router: node already in ring")
	// ErrUnknownNode is returned by Remove and SetWeight for an ID not in the ring.
	ErrUnknownNode = errors.New("router: unknown node")
	// ErrEmptyRing is returned by Acquire when the ring has no nodes.
	ErrEmptyRing = errors.New("router: ring is empty")
	// ErrRingClosed is returned by mutations once Shutdown or Close has
	// begun, and wrapped by Ready.
	ErrRingClosed = errors.New("router: ring closed")
)

// Node is a member of a Ring.
type Node struct {
	// ID names the node; it alone decides where the node's virtual nodes
	// sit, so every process that uses the same IDs, weights and
	// VirtualNodes computes the same ring. Required.
	ID string
	// Weight scales the node's share of the key space: a node of weight 2
	// owns about twice the keys of a node of weight 1. Zero means 1;
	// negative is invalid.
	Weight int
	// Addr is where the node can be reached (for example host:port). It is
	// opaque to the ring: it is carried in lookups but never hashed.
	Addr string
}

// RingConfig configures a Ring. The zero value is valid.
type RingConfig struct {
	// Name labels the ring's metrics (label "ring"), so several rings can
	// share one Observer. Default "default".
	Name string
	// VirtualNodes is the number of points each unit of weight places on the
	// ring. Default DefaultVirtualNodes; must not be negative.
	VirtualNodes int
	// LoadFactor is c in "no node holds more than ⌈c·average⌉" for Acquire
	// (consistent hashing with bounded loads). Default DefaultLoadFactor;
	// must be greater than 1 when set.
	LoadFactor float64
	// Nodes are the initial members. OnChange is not called for them.
	Nodes []Node
	// Observer receives the ring's metrics. Nil disables them at no cost.
	// With an Observer each lookup also does one atomic add on one of 64
	// striped counters (ring_lookups_total): a few nanoseconds, more when
	// many cores look up at once; lookups still never block or allocate.
	Observer *observe.Observer
	// OnChange, when set, is called after every membership change that
	// altered the ring, with the nodes that joined, left or changed and the
	// share of the key space each node gained or lost. Calls run on a
	// goroutine the Ring owns (started while changes are pending), one at a
	// time, in Version order: never on the goroutine of a caller inside a
	// Ring method and never under an internal lock, so the host may hold
	// its own lock around a mutator and take it again in the callback, and
	// the callback may call the Ring, mutators included. A mutator returns
	// before its change is delivered. A panic in OnChange is not recovered.
	OnChange func(RingChange)
}

// Ring is a consistent-hash ring with weighted virtual nodes, hashing keys
// and virtual nodes with xxhash64.
//
// Reads (Lookup, LookupBytes, AppendLookupN, Nodes, Member, Len, Version)
// never block and never take a lock: every membership change builds a new
// immutable snapshot and publishes it with one atomic store (copy-on-write).
// Lookup and LookupBytes do not allocate. Mutations are serialised by an
// internal mutex and cost O(points) each. All methods are safe for
// concurrent use.
//
// Placement is a pure function of the members' IDs and weights and of
// VirtualNodes: rings built in any order, in any process, agree on every key.
// A key belongs to the first virtual node clockwise from the key's hash. So
// adding a node moves keys only to that node, removing a node moves only its
// keys, and changing a node's weight moves keys only to or from that node.
type Ring struct {
	snap    atomic.Pointer[ringSnapshot]
	lookups *ringStripes // nil without an Observer

	vnodes     int
	loadFactor float64
	name       string
	onChange   func(RingChange)
	metrics    *ringMetrics // nil without an Observer

	notes *notify.Notifier[RingChange] // nil without OnChange

	mu     sync.Mutex // serialises mutations and guards closed
	closed bool

	bounded ringBounded
}

// ringSnapshot is one immutable version of the ring.
//
// points holds one uint64 per virtual node: the top 48 bits are the virtual
// node's position (the top 48 bits of its xxhash64), the low 16 bits the
// index of its owner in nodes. Sorted ascending, so ties in position are
// broken by owner index, and owner indexes follow the ID order, which makes
// the tie-break the same in every process.
//
// index is a prefix table over points: index[b] is the first point whose top
// bits (point >> shift) are ≥ b, and index[len-1] == len(points). It narrows
// a search to the points sharing the key's prefix, about one.
//
// table has one 16-byte ringBucket per prefix bucket, from which Lookup
// answers most keys without reading index or points (see ownerOf).
type ringSnapshot struct {
	version     uint64
	nodes       []Node // sorted by ID
	table       []ringBucket
	shift       uint
	points      []uint64
	index       []uint32
	totalWeight int
}

const ringOwnerMask = 1<<16 - 1

var ringEmpty = &ringSnapshot{index: []uint32{0, 0}, shift: 64}

// NewRing returns a Ring holding cfg.Nodes. It returns an error wrapping
// ErrInvalidConfig naming the bad field; for a bad initial node the error
// names Nodes and wraps ErrInvalidNode too. A Ring starts no goroutine
// of its own; OnChange runs on one only while changes are pending.
func NewRing(cfg RingConfig) (*Ring, error) {
	r := &Ring{
		vnodes:     cfg.VirtualNodes,
		loadFactor: cfg.LoadFactor,
		name:       cfg.Name,
		onChange:   cfg.OnChange,
	}
	if r.onChange != nil {
		r.notes = notify.New(r.onChange)
	}
	switch {
	case cfg.VirtualNodes < 0:
		return nil, fmt.Errorf("%w: VirtualNodes %d is negative", ErrInvalidConfig, cfg.VirtualNodes)
	case cfg.VirtualNodes > MaxPointsPerNode:
		return nil, fmt.Errorf("%w: VirtualNodes %d exceeds %d", ErrInvalidConfig, cfg.VirtualNodes, MaxPointsPerNode)
	case cfg.VirtualNodes == 0:
		r.vnodes = DefaultVirtualNodes
	}
	switch {
	case cfg.LoadFactor == 0:
		r.loadFactor = DefaultLoadFactor
	case !(cfg.LoadFactor > 1) || math.IsInf(cfg.LoadFactor, 0):
		return nil, fmt.Errorf("%w: LoadFactor %v must be a finite number greater than 1", ErrInvalidConfig, cfg.LoadFactor)
	}
	if r.name == "" {
		r.name = "default"
	}
	nodes, err := r.normalize(cfg.Nodes)
	if err != nil {
		return nil, fmt.Errorf("%w: Nodes: %w", ErrInvalidConfig, err)
	}
	if cfg.Observer != nil {
		r.metrics = newRingMetrics(cfg.Observer, r.name)
		r.lookups = r.metrics.stripes
	}
	s := r.build(ringEmpty, nodes)
	s.version = 0
	r.snap.Store(s)
	r.metrics.setShape(s)
	return r, nil
}

// Lookup returns the node that owns key, and false when the ring is empty.
// It never blocks and does not allocate.
func (r *Ring) Lookup(key string) (Node, bool) {
	// Small enough to be inlined, so the caller copies the Node straight
	// from the snapshot rather than through registers and its stack.
	if n := r.lookupString(key); n != nil {
		return *n, true
	}
	return Node{}, false
}

// LookupBytes is Lookup for a []byte key; both give the same answer for the
// same bytes. It never blocks and does not allocate.
func (r *Ring) LookupBytes(key []byte) (Node, bool) {
	if n := r.lookupBytes(key); n != nil {
		return *n, true
	}
	return Node{}, false
}

// lookupString returns the owner of key in the current snapshot, or nil
// when the ring is empty. The Node is immutable (snapshots are never
// modified), so the caller may copy it at leisure.
func (r *Ring) lookupString(key string) *Node {
	h := xxhash.Sum64String(key)
	if st := r.lookups; st != nil {
		st.inc()
	}
	s := r.snap.Load()
	if len(s.nodes) == 0 {
		return nil
	}
	return &s.nodes[s.ownerOf(h)]
}

// lookupBytes is lookupString for a []byte key. (Hashing in a shared
// function would add a call to every lookup.)
func (r *Ring) lookupBytes(key []byte) *Node {
	h := xxhash.Sum64(key)
	if st := r.lookups; st != nil {
		st.inc()
	}
	s := r.snap.Load()
	if len(s.nodes) == 0 {
		return nil
	}
	return &s.nodes[s.ownerOf(h)]
}

// LookupN returns up to n distinct nodes for key in ring order: the owner
// first, then each next distinct node clockwise. That is the order in which
// the key fails over: if the first node is removed, the second becomes the
// owner. It returns min(n, Len()) nodes, none when n ≤ 0 or the ring is
// empty. It never blocks; it allocates the result (see AppendLookupN).
func (r *Ring) LookupN(key string, n int) []Node {
	if n <= 0 {
		return nil
	}
	s := r.snap.Load()
	return r.AppendLookupN(make([]Node, 0, min(n, len(s.nodes))), key, n)
}

// AppendLookupN appends LookupN(key, n) to dst and returns it. It never
// blocks, and does not allocate when dst has room for the result and n ≤ 64.
func (r *Ring) AppendLookupN(dst []Node, key string, n int) []Node {
	h := xxhash.Sum64String(key)
	if st := r.lookups; st != nil {
		st.inc()
	}
	s := r.snap.Load()
	if n <= 0 || len(s.nodes) == 0 {
		return dst
	}
	return s.appendN(dst, s.search(h), min(n, len(s.nodes)))
}

// Nodes returns the members sorted by ID. It never blocks and allocates the
// returned slice, which the caller owns.
func (r *Ring) Nodes() []Node {
	return slices.Clone(r.snap.Load().nodes)
}

// Member returns the member with the given ID. It never blocks and does not
// allocate.
func (r *Ring) Member(id string) (Node, bool) {
	s := r.snap.Load()
	i, ok := s.find(id)
	if !ok {
		return Node{}, false
	}
	return s.nodes[i], true
}

// Len returns the number of members.
func (r *Ring) Len() int { return len(r.snap.Load().nodes) }

// Version returns the number of membership changes applied so far (0 for the
// initial members). RingChange.Version carries the same number.
func (r *Ring) Version() uint64 { return r.snap.Load().version }

// Add inserts a node. Keys move only to the new node. It returns
// ErrNodeExists if the ID is taken, an error wrapping ErrInvalidNode for a
// bad node, and ErrRingClosed after Shutdown or Close.
func (r *Ring) Add(n Node) error {
	if err := r.validate(&n); err != nil {
		return err
	}
	return r.mutate("add", func(cur []Node) ([]Node, error) {
		i, found := slices.BinarySearchFunc(cur, n.ID, ringCompareID)
		if found {
			return nil, fmt.Errorf("%w: %q", ErrNodeExists, n.ID)
		}
		if len(cur) >= MaxNodes {
			return nil, fmt.Errorf("%w: ring already holds MaxNodes (%d) nodes", ErrInvalidNode, MaxNodes)
		}
		return slices.Insert(slices.Clone(cur), i, n), nil
	})
}

// Remove deletes the node with the given ID. Only that node's keys move,
// each to the next node clockwise (LookupN's second node). It returns
// ErrUnknownNode if the ID is absent and ErrRingClosed after Shutdown or Close.
func (r *Ring) Remove(id string) error {
	return r.mutate("remove", func(cur []Node) ([]Node, error) {
		i, found := slices.BinarySearchFunc(cur, id, ringCompareID)
		if !found {
			return nil, fmt.Errorf("%w: %q", ErrUnknownNode, id)
		}
		return slices.Delete(slices.Clone(cur), i, i+1), nil
	})
}

// SetWeight changes a node's weight (zero means 1). Raising it moves keys
// only to that node, lowering it moves keys only away from it: virtual node
// i of a node sits at the same place whatever the weight. It returns
// ErrUnknownNode if the ID is absent, an error wrapping ErrInvalidNode for
// a bad weight, and ErrRingClosed after Shutdown or Close.
func (r *Ring) SetWeight(id string, weight int) error {
	probe := Node{ID: id, Weight: weight}
	if err := r.validate(&probe); err != nil {
		return err
	}
	return r.mutate("weight", func(cur []Node) ([]Node, error) {
		i, found := slices.BinarySearchFunc(cur, id, ringCompareID)
		if !found {
			return nil, fmt.Errorf("%w: %q", ErrUnknownNode, id)
		}
		if cur[i].Weight == probe.Weight {
			return cur, nil
		}
		next := slices.Clone(cur)
		next[i].Weight = probe.Weight
		return next, nil
	})
}

// SetMembers makes the ring hold exactly nodes (in any order): absent IDs
// are removed, new ones added, and nodes whose Weight or Addr differ are
// updated, all in one new snapshot and one RingChange. An empty list empties
// the ring. The list is validated as a whole first (empty or repeated IDs,
// bad weights, more than MaxNodes): on error nothing changes. A list equal to
// the current members changes nothing and reports nothing.
func (r *Ring) SetMembers(nodes []Node) error {
	next, err := r.normalize(nodes)
	if err != nil {
		return err
	}
	return r.mutate("members", func([]Node) ([]Node, error) { return next, nil })
}

// Shutdown stops the ring gracefully: from its start mutations return
// ErrRingClosed and Ready reports it; it then waits until the changes made
// before it have been delivered to OnChange, or until ctx is done, in which
// case the undelivered ones are dropped and it returns ctx.Err() once the
// call in progress (if any) has returned. It stops the ring's metrics
// (folding its lookup count into the Observer's totals). Lookups keep
// answering from the last snapshot. When it returns no goroutine of the
// Ring runs and OnChange is not called again. Shutdown is idempotent; it
// must not be called from OnChange, nor while holding a lock OnChange takes.
func (r *Ring) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		r.metrics.close()
	}
	r.mu.Unlock()
	if r.notes == nil {
		return nil
	}
	return r.notes.Stop(ctx)
}

// Close is Shutdown without the grace: changes not yet delivered to
// OnChange are dropped; it returns once the call in progress (if any) has
// returned. It is idempotent and returns nil.
func (r *Ring) Close() error {
	ctx := lifetime.Canceled() // Close is Shutdown with a context already done
	_ = r.Shutdown(ctx)        // only reports dropped changes, as Close documents
	return nil
}

// Ready returns nil while the ring accepts membership changes, and an
// error wrapping ErrRingClosed once Shutdown or Close has begun.
func (r *Ring) Ready() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("%w: shut down", ErrRingClosed)
	}
	return nil
}

// validate checks n and replaces a zero weight by 1.
func (r *Ring) validate(n *Node) error {
	if n.ID == "" {
		return fmt.Errorf("%w: empty ID", ErrInvalidNode)
	}
	if n.Weight < 0 {
		return fmt.Errorf("%w: %q has negative weight %d", ErrInvalidNode, n.ID, n.Weight)
	}
	if n.Weight == 0 {
		n.Weight = 1
	}
	if n.Weight > MaxPointsPerNode/r.vnodes {
		return fmt.Errorf("%w: %q weight %d × %d virtual nodes exceeds MaxPointsPerNode (%d)", ErrInvalidNode, n.ID, n.Weight, r.vnodes, MaxPointsPerNode)
	}
	return nil
}

// normalize validates a member list and returns a sorted copy.
func (r *Ring) normalize(nodes []Node) ([]Node, error) {
	if len(nodes) > MaxNodes {
		return nil, fmt.Errorf("%w: %d nodes exceed MaxNodes (%d)", ErrInvalidNode, len(nodes), MaxNodes)
	}
	out := slices.Clone(nodes)
	for i := range out {
		if err := r.validate(&out[i]); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.ID, b.ID) })
	for i := 1; i < len(out); i++ {
		if out[i].ID == out[i-1].ID {
			return nil, fmt.Errorf("%w: ID %q listed twice", ErrInvalidNode, out[i].ID)
		}
	}
	return out, nil
}

func ringCompareID(n Node, id string) int { return strings.Compare(n.ID, id) }

// mutate applies f to the current members under the mutation lock,
// publishes the resulting snapshot and delivers the change.
func (r *Ring) mutate(op string, f func(cur []Node) ([]Node, error)) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrRingClosed
	}
	cur := r.snap.Load()
	nodes, err := f(cur.nodes)
	if err != nil {
		r.mu.Unlock()
		return err
	}
	if slices.Equal(nodes, cur.nodes) {
		r.mu.Unlock()
		return nil
	}
	var start time.Time
	if r.metrics != nil {
		start = time.Now()
	}
	next := r.build(cur, nodes)
	r.snap.Store(next)
	if r.metrics != nil {
		r.metrics.rebuilt(op, next, start)
	}
	if r.onChange != nil || r.metrics != nil {
		ch := ringDiff(cur, next)
		r.metrics.moved(ch)
		if r.notes != nil {
			r.notes.Post(ch) // under r.mu: delivered in Version order
		}
	}
	r.mu.Unlock()
	return nil
}

// flush waits until every change made so far has been delivered.
func (r *Ring) flush() {
	if r.notes != nil {
		r.notes.Flush()
	}
}

// build returns the snapshot for nodes (sorted by ID, validated), reusing
// the points of every node whose ID and weight are unchanged from prev.
func (r *Ring) build(prev *ringSnapshot, nodes []Node) *ringSnapshot {
	s := &ringSnapshot{version: prev.version + 1, nodes: nodes}
	// remap[i] is the new index of prev.nodes[i] when its points carry over, else -1.
	remap := make([]int32, len(prev.nodes))
	fresh := make([]bool, len(nodes))
	total, kept := 0, 0
	i := 0
	for j, n := range nodes {
		s.totalWeight += n.Weight
		total += n.Weight * r.vnodes
		for i < len(prev.nodes) && prev.nodes[i].ID < n.ID {
			remap[i] = -1
			i++
		}
		if i < len(prev.nodes) && prev.nodes[i].ID == n.ID && prev.nodes[i].Weight == n.Weight {
			remap[i] = int32(j)
			kept += n.Weight * r.vnodes
			i++
			continue
		}
		fresh[j] = true
	}
	for ; i < len(prev.nodes); i++ {
		remap[i] = -1
	}

	var add []uint64
	if kept == 0 {
		add = make([]uint64, 0, total)
	} else {
		add = make([]uint64, 0, total-kept)
	}
	var buf []byte
	for j, n := range nodes {
		if !fresh[j] {
			continue
		}
		buf = append(buf[:0], n.ID...)
		buf = append(buf, '#')
		base := len(buf)
		for v := range n.Weight * r.vnodes {
			buf = strconv.AppendInt(buf[:base], int64(v), 10)
			add = append(add, xxhash.Sum64(buf)&^ringOwnerMask|uint64(j))
		}
	}
	if kept == 0 {
		s.setPoints(add)
		return s
	}
	// Incremental change: the carried-over points stay sorted (remap is
	// increasing), so one sequential pass filters them and merges in the
	// few new points, sorted first.
	slices.Sort(add)
	out := make([]uint64, 0, total)
	j := 0
	for _, p := range prev.points {
		k := remap[p&ringOwnerMask]
		if k < 0 {
			continue
		}
		q := p&^ringOwnerMask | uint64(k)
		for j < len(add) && add[j] < q {
			out = append(out, add[j])
			j++
		}
		out = append(out, q)
	}
	out = append(out, add[j:]...)
	s.setSortedPoints(out)
	return s
}

// ringMaxIndexBits caps the prefix table at 4 MiB.
const ringMaxIndexBits = 20

// ringIndexBits returns the prefix length for n points: about one point per
// bucket.
func ringIndexBits(n int) int {
	bits := 0
	for bits < ringMaxIndexBits && 1<<bits < n {
		bits++
	}
	return bits
}

// setSortedPoints stores sorted points and builds the prefix table.
func (s *ringSnapshot) setSortedPoints(points []uint64) {
	bits := ringIndexBits(len(points))
	shift := uint(64 - bits)
	s.points, s.index, s.shift = points, ringPrefixIndex(points, shift, 1<<bits), shift
	s.table = ringBucketTable(s.points, s.index, s.shift)
}

// ringPrefixIndex returns the table whose entry b is the number of points
// with prefix (point >> shift) below b, which for sorted points is the first
// point of bucket b; entry nb is len(points). Counting then summing avoids
// the mispredicted branches of a per-bucket search.
func ringPrefixIndex(points []uint64, shift uint, nb int) []uint32 {
	index := make([]uint32, nb+1)
	for _, p := range points {
		index[p>>shift+1]++
	}
	for b := 1; b <= nb; b++ {
		index[b] += index[b-1]
	}
	return index
}

// setPoints sorts points (in any order) into s.points and builds the prefix
// table, about one point per bucket, in O(points + buckets): a counting sort
// on the prefix, which is the table itself, then an insertion sort inside
// each bucket.
func (s *ringSnapshot) setPoints(points []uint64) {
	bits := ringIndexBits(len(points))
	shift := uint(64 - bits)
	nb := 1 << bits
	index := ringPrefixIndex(points, shift, nb)
	sorted := make([]uint64, len(points))
	for _, p := range points { // index[b] walks from the start to the end of bucket b
		b := p >> shift
		sorted[index[b]] = p
		index[b]++
	}
	for b := nb - 1; b > 0; b-- { // back to starts
		index[b] = index[b-1]
	}
	index[0] = 0
	for b := range nb {
		bucket := sorted[index[b]:index[b+1]]
		if len(bucket) > 16 {
			slices.Sort(bucket)
			continue
		}
		for i := 1; i < len(bucket); i++ {
			for j := i; j > 0 && bucket[j] < bucket[j-1]; j-- {
				bucket[j], bucket[j-1] = bucket[j-1], bucket[j]
			}
		}
	}
	s.points, s.index, s.shift = sorted, index, shift
	s.table = ringBucketTable(s.points, s.index, s.shift)
}

// search returns the index of the first point at or after the position of
// hash h, wrapping to 0. The ring must not be empty.
func (s *ringSnapshot) search(h uint64) int {
	k := h &^ ringOwnerMask
	b := h >> s.shift
	lo, hi := int(s.index[b]), int(s.index[b+1])
	pts := s.points
	if hi-lo > 8 {
		lo, _ = slices.BinarySearch(pts[lo:hi], k)
		lo += int(s.index[b])
	} else {
		for lo < hi && pts[lo] < k {
			lo++
		}
	}
	if lo == len(pts) {
		lo = 0
	}
	return lo
}

// appendN appends the first n distinct owners from point i clockwise.
// n must be in [1, len(s.nodes)].
func (s *ringSnapshot) appendN(dst []Node, i, n int) []Node {
	pts := s.points
	if n <= 64 {
		var seen [64]uint16
		k := 0
		for k < n {
			o := uint16(pts[i] & ringOwnerMask)
			if !slices.Contains(seen[:k], o) {
				seen[k] = o
				k++
				dst = append(dst, s.nodes[o])
			}
			if i++; i == len(pts) {
				i = 0
			}
		}
		return dst
	}
	seen := make([]uint64, (len(s.nodes)+63)/64)
	for k := 0; k < n; {
		o := pts[i] & ringOwnerMask
		if seen[o/64]&(1<<(o%64)) == 0 {
			seen[o/64] |= 1 << (o % 64)
			k++
			dst = append(dst, s.nodes[o])
		}
		if i++; i == len(pts) {
			i = 0
		}
	}
	return dst
}

// find returns the index of the node with the given ID.
func (s *ringSnapshot) find(id string) (int, bool) {
	return slices.BinarySearchFunc(s.nodes, id, ringCompareID)
}

// owner returns the owner of hash h, or the zero Node on an empty ring.
func (s *ringSnapshot) owner(h uint64) Node {
	if len(s.nodes) == 0 {
		return Node{}
	}
	return s.nodes[s.ownerOf(h)]
}
