package router

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ringIDs returns n node IDs of name set `set`, in the style of gateway
// service names.
func ringIDs(set, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("gateway-%d-%d.chat.svc:7000", set, i)
	}
	return ids
}

func ringNodesOf(ids []string) []Node {
	nodes := make([]Node, len(ids))
	for i, id := range ids {
		nodes[i] = Node{ID: id, Weight: 1}
	}
	return nodes
}

func newTestRing(t testing.TB, cfg RingConfig) *Ring {
	t.Helper()
	r, err := NewRing(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// ringKey writes the deterministic test key number i into buf.
func ringKey(buf []byte, i int) []byte {
	return strconv.AppendInt(append(buf[:0], "user:"...), int64(i), 10)
}

// ringOwners returns the owner ID of keys 0..n-1.
func ringOwners(r *Ring, n int) []string {
	owners := make([]string, n)
	buf := make([]byte, 0, 32)
	for i := range owners {
		buf = ringKey(buf, i)
		nd, _ := r.LookupBytes(buf)
		owners[i] = nd.ID
	}
	return owners
}

func ringCounts(owners []string) map[string]int {
	c := map[string]int{}
	for _, o := range owners {
		c[o]++
	}
	return c
}

const ringQualityKeys = 1_000_000

// skipQualityUnderRace skips the million-key quality checks under -race:
// they are deterministic and single-goroutine, so the detector has nothing to
// find, and they run in the plain `go test` pass.
func skipQualityUnderRace(t *testing.T) {
	t.Helper()
	if ringRaceEnabled {
		t.Skip("deterministic single-goroutine quality check; covered by the run without -race")
	}
}

func TestRingBalance(t *testing.T) {
	skipQualityUnderRace(t)
	// 10 equal nodes, default virtual nodes, 1,000,000 keys, averaged over
	// 10 node-name sets.
	var sumMax, sumMin float64
	for set := range 10 {
		r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ringIDs(set, 10))})
		counts := ringCounts(ringOwners(r, ringQualityKeys))
		require.Len(t, counts, 10)
		mean := float64(ringQualityKeys) / 10
		hi, lo := 0, ringQualityKeys
		for _, c := range counts {
			hi, lo = max(hi, c), min(lo, c)
		}
		sumMax += float64(hi) / mean
		sumMin += float64(lo) / mean
	}
	avgMax, avgMin := sumMax/10, sumMin/10
	t.Logf("default %d virtual nodes: max/mean %.4f, min/mean %.4f", DefaultVirtualNodes, avgMax, avgMin)
	assert.LessOrEqual(t, avgMax, 1.10)
	assert.GreaterOrEqual(t, avgMin, 0.90)
}

func TestRingAddMovesKeysOnlyToNewNode(t *testing.T) {
	skipQualityUnderRace(t)
	for set := range 3 {
		ids := ringIDs(set, 11)
		r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ids[:10])})
		before := ringOwners(r, ringQualityKeys)
		require.NoError(t, r.Add(Node{ID: ids[10]}))
		after := ringOwners(r, ringQualityKeys)
		moved, elsewhere := 0, 0
		for i := range before {
			if before[i] != after[i] {
				moved++
				if after[i] != ids[10] {
					elsewhere++
				}
			}
		}
		frac := float64(moved) / ringQualityKeys
		t.Logf("set %d: adding an 11th node moved %.4f of keys (1/11 = %.4f)", set, frac, 1.0/11)
		assert.Zero(t, elsewhere, "keys moved between old nodes")
		assert.LessOrEqual(t, frac, 1.15/11)
		assert.Greater(t, frac, 0.5/11, "the new node must take a fair share")
	}
}

func TestRingRemoveMovesOnlyThatNodesKeys(t *testing.T) {
	skipQualityUnderRace(t)
	for set := range 3 {
		ids := ringIDs(set, 10)
		r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ids)})
		const n = 200_000
		before := ringOwners(r, n)
		next := make([]string, n) // the failover node of each key
		buf := make([]byte, 0, 32)
		for i := range next {
			buf = ringKey(buf, i)
			two := r.LookupN(string(buf), 2)
			require.Equal(t, before[i], two[0].ID)
			next[i] = two[1].ID
		}
		gone := ids[set]
		require.NoError(t, r.Remove(gone))
		after := ringOwners(r, n)
		for i := range before {
			if before[i] == gone {
				require.Equal(t, next[i], after[i], "key %d must fail over to its second node", i)
			} else {
				require.Equal(t, before[i], after[i], "key %d moved although its node stayed", i)
			}
		}
	}
}

func TestRingWeights(t *testing.T) {
	skipQualityUnderRace(t)
	for set := range 5 {
		ids := ringIDs(set, 10)
		nodes := ringNodesOf(ids)
		nodes[3].Weight = 2
		r := newTestRing(t, RingConfig{Nodes: nodes})
		counts := ringCounts(ringOwners(r, ringQualityKeys))
		light := 0
		for _, id := range ids {
			if id != ids[3] {
				light += counts[id]
			}
		}
		ratio := float64(counts[ids[3]]) / (float64(light) / 9)
		t.Logf("set %d: weight-2 node holds %.3f× a weight-1 node", set, ratio)
		assert.InDelta(t, 2.0, ratio, 0.2)
	}
}

func TestRingSetWeightMovesOnlyToOrFromThatNode(t *testing.T) {
	skipQualityUnderRace(t)
	ids := ringIDs(0, 8)
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ids)})
	const n = 200_000
	base := ringOwners(r, n)

	require.NoError(t, r.SetWeight(ids[2], 3))
	heavier := ringOwners(r, n)
	gained := 0
	for i := range base {
		if base[i] != heavier[i] {
			require.Equal(t, ids[2], heavier[i], "raising a weight moved a key to another node")
			gained++
		}
	}
	assert.Positive(t, gained)

	require.NoError(t, r.SetWeight(ids[2], 0)) // zero means 1
	m, ok := r.Member(ids[2])
	require.True(t, ok)
	assert.Equal(t, 1, m.Weight)
	assert.Equal(t, base, ringOwners(r, n), "back to weight 1 must restore the original placement")
}

func TestRingPlacementIndependentOfHistory(t *testing.T) {
	ids := ringIDs(7, 20)
	a := newTestRing(t, RingConfig{Nodes: ringNodesOf(ids)})

	b := newTestRing(t, RingConfig{})
	shuffled := slices.Clone(ids)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for _, id := range shuffled {
		require.NoError(t, b.Add(Node{ID: id}))
	}
	require.NoError(t, b.Add(Node{ID: "temporary"}))
	require.NoError(t, b.SetWeight(ids[4], 5))
	require.NoError(t, b.Remove("temporary"))
	require.NoError(t, b.SetWeight(ids[4], 1))

	c := newTestRing(t, RingConfig{})
	require.NoError(t, c.SetMembers(ringNodesOf(shuffled)))

	sa, sb, sc := a.snap.Load(), b.snap.Load(), c.snap.Load()
	assert.Equal(t, sa.points, sb.points)
	assert.Equal(t, sa.points, sc.points)
	assert.Equal(t, sa.index, sb.index)
	assert.Equal(t, ringOwners(a, 20_000), ringOwners(b, 20_000))
	assert.Equal(t, a.Nodes(), b.Nodes())
	assert.Equal(t, uint64(0), a.Version())
	assert.Equal(t, uint64(len(ids)+4), b.Version())
}

func TestRingLookupMatchesLinearSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ nodes, vnodes int }{
		{1, 1}, {1, 7}, {2, 1}, {3, 3}, {10, 50}, {64, 400}, {300, 20},
	} {
		t.Run(fmt.Sprintf("%dx%d", tc.nodes, tc.vnodes), func(t *testing.T) {
			r := newTestRing(t, RingConfig{VirtualNodes: tc.vnodes, Nodes: ringNodesOf(ringIDs(1, tc.nodes))})
			s := r.snap.Load()
			require.Len(t, s.points, tc.nodes*tc.vnodes)
			require.True(t, slices.IsSorted(s.points))
			probes := []uint64{0, ^uint64(0)}
			for _, p := range s.points {
				probes = append(probes, p, p&^ringOwnerMask-1, p|ringOwnerMask, p|ringOwnerMask+1)
			}
			for range 2000 {
				probes = append(probes, rng.Uint64())
			}
			for _, h := range probes {
				require.Equal(t, ringLinearSearch(s.points, h), s.search(h), "hash %#x", h)
			}
		})
	}
}

// TestRingSearchDenseBuckets covers buckets holding many points (the binary
// search path), which real hashes almost never produce.
func TestRingSearchDenseBuckets(t *testing.T) {
	var pts []uint64
	for i := range 40 {
		pts = append(pts, uint64(i)<<20, uint64(i)<<20|1) // a cluster at the bottom
	}
	pts = append(pts, 1<<63, 1<<63|2, 3<<62)
	for i := range 20 {
		pts = append(pts, ^uint64(0)-uint64(i)<<16)
	}
	slices.Sort(pts)
	sorted := &ringSnapshot{nodes: make([]Node, 3)}
	sorted.setSortedPoints(slices.Clone(pts))

	shuffled := slices.Clone(pts)
	rand.New(rand.NewPCG(9, 9)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	counted := &ringSnapshot{nodes: make([]Node, 3)}
	counted.setPoints(shuffled)
	require.Equal(t, pts, counted.points, "counting sort")
	require.Equal(t, sorted.index, counted.index)

	for _, p := range pts {
		for _, h := range []uint64{p, p &^ ringOwnerMask, p&^ringOwnerMask - 1, p | ringOwnerMask, p | ringOwnerMask + 1} {
			require.Equal(t, ringLinearSearch(pts, h), sorted.search(h), "hash %#x", h)
		}
	}
}

// ringLinearSearch is the definition search implements: the first point whose
// 48-bit position is at or after the key's, wrapping to 0.
func ringLinearSearch(pts []uint64, h uint64) int {
	i := sort.Search(len(pts), func(i int) bool { return pts[i]>>16 >= h>>16 })
	if i == len(pts) {
		return 0
	}
	return i
}

// ringCheckOwnerOf checks the bucket table of s against its points and
// ownerOf against ringLinearSearch for hashes at, just before and just after
// every point, at the ends of the circle and at n random places. It returns
// how many probes fell strictly between the first and last point of a bucket
// (the path that scans the points), so callers can require that it ran.
func ringCheckOwnerOf(t *testing.T, s *ringSnapshot, rng *rand.Rand, n int) int {
	t.Helper()
	require.Len(t, s.table, len(s.index)-1)
	for b, e := range s.table {
		lo, hi := s.index[b], s.index[b+1]
		next := s.points[int(hi)%len(s.points)] & ringOwnerMask
		if lo == hi {
			require.Equal(t, uint64(b), e.first>>s.shift, "empty bucket %d", b)
			require.Equal(t, next, e.first&ringOwnerMask, "empty bucket %d", b)
		} else {
			require.Equal(t, s.points[lo], e.first, "bucket %d", b)
		}
		require.Equal(t, next, e.tail&ringOwnerMask, "bucket %d", b)
	}
	probes := []uint64{0, ^uint64(0), 1 << 63, 1<<63 - 1}
	for _, p := range s.points {
		probes = append(probes, p, p&^ringOwnerMask-1, p|ringOwnerMask, p|ringOwnerMask+1)
	}
	for range n {
		probes = append(probes, rng.Uint64())
	}
	scanned := 0
	for _, h := range probes {
		e := s.table[h>>s.shift]
		k := h &^ ringOwnerMask
		if k > e.first && k <= e.first&^ringOwnerMask+e.tail&^ringOwnerMask {
			scanned++
		}
		want := uint16(s.points[ringLinearSearch(s.points, h)] & ringOwnerMask)
		require.Equal(t, want, s.ownerOf(h), "hash %#x", h)
	}
	return scanned
}

// TestRingOwnerOfMatchesLinearSearch checks the bucket table Lookup reads
// against the definition, for rings of every shape and after every kind of
// change (the incremental merge and the full counting sort build the table
// alike).
func TestRingOwnerOfMatchesLinearSearch(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	scanned := 0
	for _, tc := range []struct{ nodes, vnodes int }{
		{1, 1}, {1, 7}, {2, 1}, {3, 3}, {10, 50}, {64, 400}, {300, 20},
	} {
		t.Run(fmt.Sprintf("%dx%d", tc.nodes, tc.vnodes), func(t *testing.T) {
			r := newTestRing(t, RingConfig{VirtualNodes: tc.vnodes, Nodes: ringNodesOf(ringIDs(1, tc.nodes))})
			scanned += ringCheckOwnerOf(t, r.snap.Load(), rng, 2000)

			require.NoError(t, r.Add(Node{ID: "added", Weight: 3}))
			scanned += ringCheckOwnerOf(t, r.snap.Load(), rng, 2000)
			require.NoError(t, r.SetWeight(ringIDs(1, 1)[0], 2))
			scanned += ringCheckOwnerOf(t, r.snap.Load(), rng, 2000)
			require.NoError(t, r.Remove("added"))
			scanned += ringCheckOwnerOf(t, r.snap.Load(), rng, 2000)
			require.NoError(t, r.SetMembers(ringNodesOf(ringIDs(2, tc.nodes))))
			scanned += ringCheckOwnerOf(t, r.snap.Load(), rng, 2000)

			buf := make([]byte, 0, 32)
			s := r.snap.Load()
			for i := range 2000 {
				key := ringKey(buf, i)
				want := s.nodes[s.points[ringLinearSearch(s.points, xxhash.Sum64(key))]&ringOwnerMask]
				got, ok := r.LookupBytes(key)
				require.True(t, ok)
				require.Equal(t, want, got)
				got, ok = r.Lookup(string(key))
				require.True(t, ok)
				require.Equal(t, want, got)
			}
		})
	}
	require.Positive(t, scanned, "no probe exercised the in-bucket scan")
}

// TestRingOwnerOfDenseBuckets covers buckets of many points, empty buckets
// at both ends and owners up to 0xffff in the bucket table.
func TestRingOwnerOfDenseBuckets(t *testing.T) {
	var pts []uint64
	for i := range 40 {
		pts = append(pts, uint64(i)<<20|7, uint64(i)<<20|1<<16|0xfffe) // a cluster at the bottom
	}
	pts = append(pts, 1<<63|5, 1<<63|2<<16|0xffff, 3<<62)
	for i := range 20 {
		pts = append(pts, ^uint64(0)-uint64(i)<<16)
	}
	slices.Sort(pts)
	rng := rand.New(rand.NewPCG(7, 7))
	sorted := &ringSnapshot{nodes: make([]Node, 3)}
	sorted.setSortedPoints(slices.Clone(pts))
	require.Positive(t, ringCheckOwnerOf(t, sorted, rng, 5000))

	shuffled := slices.Clone(pts)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	counted := &ringSnapshot{nodes: make([]Node, 3)}
	counted.setPoints(shuffled)
	require.Equal(t, sorted.table, counted.table)
	require.Positive(t, ringCheckOwnerOf(t, counted, rng, 5000))
}

func FuzzRingSearch(f *testing.F) {
	f.Add(uint64(0), uint8(3), uint8(5), "alpha")
	f.Add(^uint64(0), uint8(1), uint8(1), "")
	f.Add(uint64(1)<<47, uint8(40), uint8(2), "k")
	f.Fuzz(func(t *testing.T, seed uint64, nodes, vnodes uint8, key string) {
		n, v := int(nodes%50)+1, int(vnodes%30)+1
		r, err := NewRing(RingConfig{VirtualNodes: v, Nodes: ringNodesOf(ringIDs(int(seed%7), n))})
		require.NoError(t, err)
		s := r.snap.Load()
		for _, h := range []uint64{seed, xxhash.Sum64String(key), seed ^ xxhash.Sum64String(key)} {
			require.Equal(t, ringLinearSearch(s.points, h), s.search(h))
		}
		got, ok := r.Lookup(key)
		require.True(t, ok)
		require.Equal(t, s.nodes[s.points[ringLinearSearch(s.points, xxhash.Sum64String(key))]&ringOwnerMask], got)
	})
}

func TestRingLookupN(t *testing.T) {
	ids := ringIDs(2, 12)
	nodes := ringNodesOf(ids)
	nodes[5].Weight = 3
	r := newTestRing(t, RingConfig{VirtualNodes: 50, Nodes: nodes})
	buf := make([]byte, 0, 32)
	for i := range 2000 {
		key := string(ringKey(buf, i))
		owner, ok := r.Lookup(key)
		require.True(t, ok)
		all := r.LookupN(key, 100)
		require.Len(t, all, 12, "n above Len returns every node")
		assert.Equal(t, owner, all[0])
		seen := map[string]bool{}
		for _, nd := range all {
			assert.False(t, seen[nd.ID], "duplicate %s", nd.ID)
			seen[nd.ID] = true
		}
		for n := 1; n <= 12; n++ {
			assert.Equal(t, all[:n], r.LookupN(key, n))
		}
		dst := r.AppendLookupN(make([]Node, 1, 4), key, 3)
		assert.Equal(t, all[:3], dst[1:])
	}
	assert.Nil(t, r.LookupN("k", 0))
	assert.Nil(t, r.LookupN("k", -1))
	assert.Empty(t, r.AppendLookupN(nil, "k", 0))
}

func TestRingLookupNMoreThan64(t *testing.T) {
	ids := ringIDs(3, 150)
	r := newTestRing(t, RingConfig{VirtualNodes: 10, Nodes: ringNodesOf(ids)})
	got := r.LookupN("conversation-42", 100)
	require.Len(t, got, 100)
	// Reference: walk the points and keep first occurrences.
	s := r.snap.Load()
	i := ringLinearSearch(s.points, xxhash.Sum64String("conversation-42"))
	var want []Node
	seen := map[uint64]bool{}
	for len(want) < 100 {
		o := s.points[i] & ringOwnerMask
		if !seen[o] {
			seen[o] = true
			want = append(want, s.nodes[o])
		}
		i = (i + 1) % len(s.points)
	}
	assert.Equal(t, want, got)
	assert.Len(t, r.LookupN("x", 1000), 150)
}

func TestRingLookupFailoverOrder(t *testing.T) {
	// Removing a key's owners one by one walks its LookupN order.
	ids := ringIDs(4, 6)
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ids)})
	for i := range 50 {
		key := "user-" + strconv.Itoa(i)
		order := r.LookupN(key, 6)
		c := newTestRing(t, RingConfig{Nodes: ringNodesOf(ids)})
		for k := range 5 {
			owner, _ := c.Lookup(key)
			require.Equal(t, order[k], owner)
			require.NoError(t, c.Remove(owner.ID))
		}
	}
}

func TestRingEmptyAndSingle(t *testing.T) {
	r := newTestRing(t, RingConfig{})
	_, ok := r.Lookup("a")
	assert.False(t, ok)
	_, ok = r.LookupBytes([]byte("a"))
	assert.False(t, ok)
	assert.Empty(t, r.LookupN("a", 3))
	assert.Empty(t, r.Nodes())
	assert.Zero(t, r.Len())
	_, _, err := r.Acquire("a")
	assert.ErrorIs(t, err, ErrEmptyRing)

	require.NoError(t, r.Add(Node{ID: "only", Addr: "10.0.0.1:7000"}))
	for i := range 100 {
		n, ok := r.Lookup(strconv.Itoa(i))
		require.True(t, ok)
		assert.Equal(t, Node{ID: "only", Weight: 1, Addr: "10.0.0.1:7000"}, n)
	}
	assert.Equal(t, []Node{{ID: "only", Weight: 1, Addr: "10.0.0.1:7000"}}, r.LookupN("a", 5))

	require.NoError(t, r.Remove("only"))
	_, ok = r.Lookup("a")
	assert.False(t, ok)
	assert.Equal(t, uint64(2), r.Version())
}

func TestRingLookupBytesMatchesString(t *testing.T) {
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ringIDs(5, 9))})
	buf := make([]byte, 0, 32)
	for i := range 5000 {
		buf = ringKey(buf, i)
		a, _ := r.LookupBytes(buf)
		b, _ := r.Lookup(string(buf))
		require.Equal(t, b, a)
	}
}

func TestRingNewRingValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   RingConfig
		field string
		want  error
	}{
		{"negative vnodes", RingConfig{VirtualNodes: -1}, "VirtualNodes", ErrInvalidConfig},
		{"huge vnodes", RingConfig{VirtualNodes: MaxPointsPerNode + 1}, "VirtualNodes", ErrInvalidConfig},
		{"load factor 1", RingConfig{LoadFactor: 1}, "LoadFactor", ErrInvalidConfig},
		{"load factor below 1", RingConfig{LoadFactor: 0.5}, "LoadFactor", ErrInvalidConfig},
		{"negative load factor", RingConfig{LoadFactor: -2}, "LoadFactor", ErrInvalidConfig},
		{"NaN load factor", RingConfig{LoadFactor: math.NaN()}, "LoadFactor", ErrInvalidConfig},
		{"empty node ID", RingConfig{Nodes: []Node{{ID: ""}}}, "empty ID", ErrInvalidNode},
		{"negative weight", RingConfig{Nodes: []Node{{ID: "a", Weight: -1}}}, "negative weight", ErrInvalidNode},
		{"weight too large", RingConfig{VirtualNodes: 1000, Nodes: []Node{{ID: "a", Weight: MaxPointsPerNode}}}, "MaxPointsPerNode", ErrInvalidNode},
		{"duplicate", RingConfig{Nodes: []Node{{ID: "a"}, {ID: "b"}, {ID: "a"}}}, `"a" listed twice`, ErrInvalidNode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRing(tc.cfg)
			require.ErrorIs(t, err, tc.want)
			require.ErrorIs(t, err, ErrInvalidConfig, "every config error wraps ErrInvalidConfig")
			assert.Contains(t, err.Error(), tc.field)
			assert.Nil(t, r)
		})
	}
	r, err := NewRing(RingConfig{})
	require.NoError(t, err)
	assert.Equal(t, DefaultVirtualNodes, r.vnodes)
	assert.Equal(t, DefaultLoadFactor, r.loadFactor)
	assert.Equal(t, "default", r.name)
}

func TestRingMutationErrors(t *testing.T) {
	r := newTestRing(t, RingConfig{Nodes: []Node{{ID: "a"}, {ID: "b", Weight: 2}}})
	v := r.Version()
	assert.ErrorIs(t, r.Add(Node{ID: "a"}), ErrNodeExists)
	assert.ErrorIs(t, r.Add(Node{}), ErrInvalidNode)
	assert.ErrorIs(t, r.Add(Node{ID: "c", Weight: -3}), ErrInvalidNode)
	assert.ErrorIs(t, r.Remove("zz"), ErrUnknownNode)
	assert.ErrorIs(t, r.SetWeight("zz", 2), ErrUnknownNode)
	assert.ErrorIs(t, r.SetWeight("a", -1), ErrInvalidNode)
	assert.ErrorIs(t, r.SetMembers([]Node{{ID: "x"}, {ID: "x"}}), ErrInvalidNode)
	assert.ErrorIs(t, r.SetMembers([]Node{{ID: "x"}, {ID: ""}}), ErrInvalidNode)
	assert.Equal(t, v, r.Version(), "failed mutations must not change the ring")
	assert.Equal(t, []Node{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}}, r.Nodes())

	// No-op mutations publish nothing.
	require.NoError(t, r.SetWeight("b", 2))
	require.NoError(t, r.SetMembers([]Node{{ID: "b", Weight: 2}, {ID: "a"}}))
	assert.Equal(t, v, r.Version())

	require.NoError(t, r.Close())
	require.NoError(t, r.Close())
	assert.ErrorIs(t, r.Add(Node{ID: "c"}), ErrRingClosed)
	assert.ErrorIs(t, r.Remove("a"), ErrRingClosed)
	assert.ErrorIs(t, r.SetWeight("a", 3), ErrRingClosed)
	assert.ErrorIs(t, r.SetMembers(nil), ErrRingClosed)
	_, ok := r.Lookup("still answers")
	assert.True(t, ok)
}

func TestRingTooManyNodes(t *testing.T) {
	nodes := make([]Node, MaxNodes+1)
	for i := range nodes {
		nodes[i] = Node{ID: strconv.Itoa(i)}
	}
	r := newTestRing(t, RingConfig{VirtualNodes: 1})
	assert.ErrorIs(t, r.SetMembers(nodes), ErrInvalidNode)
	require.NoError(t, r.SetMembers(nodes[:MaxNodes]))
	assert.ErrorIs(t, r.Add(nodes[MaxNodes]), ErrInvalidNode)
	// The last node index still resolves.
	last := r.snap.Load().nodes[MaxNodes-1]
	found := false
	for _, p := range r.snap.Load().points {
		if p&ringOwnerMask == MaxNodes-1 {
			found = true
			assert.Equal(t, last, r.snap.Load().owner(p))
		}
	}
	assert.True(t, found)
}

func TestRingZeroAllocs(t *testing.T) {
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ringIDs(0, 64))})
	key := "user-000000000000000042"
	bkey := []byte(key)
	dst := make([]Node, 0, 8)
	for name, f := range map[string]func(){
		"Lookup":        func() { r.Lookup(key) },
		"LookupBytes":   func() { r.LookupBytes(bkey) },
		"AppendLookupN": func() { dst = r.AppendLookupN(dst[:0], key, 3) },
		"Member":        func() { r.Member("gateway-0-7.chat.svc:7000") },
		"Len":           func() { r.Len() },
	} {
		assert.Zero(t, testing.AllocsPerRun(1000, f), name)
	}
}

func TestRingConcurrentLookupsAndChanges(t *testing.T) {
	universe := ringIDs(9, 16)
	known := map[string]bool{}
	for _, id := range universe {
		known[id] = true
	}
	r := newTestRing(t, RingConfig{VirtualNodes: 64, Nodes: ringNodesOf(universe[:8])})

	var stop atomic.Bool
	var wg sync.WaitGroup
	var lookups atomic.Int64
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 0, 32)
			dst := make([]Node, 0, 4)
			for i := 0; !stop.Load(); i++ {
				buf = ringKey(buf, i*4+g)
				n, ok := r.LookupBytes(buf)
				if !ok || !known[n.ID] {
					errs <- fmt.Errorf("lookup returned %+v, %v", n, ok)
					return
				}
				dst = r.AppendLookupN(dst[:0], string(buf), 3)
				if len(dst) != 3 || dst[0] == dst[1] || dst[1] == dst[2] || dst[0] == dst[2] {
					errs <- fmt.Errorf("LookupN returned %+v", dst)
					return
				}
				if len(r.Nodes()) < 3 {
					errs <- fmt.Errorf("ring shrank below 3 nodes")
					return
				}
				lookups.Add(1)
			}
		})
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 300 {
		switch i % 4 {
		case 0:
			id := universe[8+rng.IntN(8)]
			if err := r.Add(Node{ID: id}); err != nil {
				require.ErrorIs(t, err, ErrNodeExists)
			}
		case 1:
			id := universe[8+rng.IntN(8)]
			if err := r.Remove(id); err != nil {
				require.ErrorIs(t, err, ErrUnknownNode)
			}
		case 2:
			require.NoError(t, r.SetWeight(universe[rng.IntN(3)], 1+rng.IntN(3)))
		case 3:
			members := ringNodesOf(universe[:3+rng.IntN(13)])
			require.NoError(t, r.SetMembers(members))
		}
	}
	require.Eventually(t, func() bool { return lookups.Load() > 1000 }, 10*time.Second, time.Millisecond)
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
