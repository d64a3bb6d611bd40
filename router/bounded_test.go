package router

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// boundedCap125 is ⌈1.25 · m · w / W⌉ in exact integer arithmetic.
func boundedCap125(m, w, totalW int) int {
	return (5*m*w + 4*totalW - 1) / (4 * totalW)
}

// boundedReference is the algorithm of Mirrokni et al. written plainly: walk
// clockwise from the key's point to the first node below its capacity.
func boundedReference(s *ringSnapshot, loads map[string]int, total int, key string) Node {
	m := total + 1
	i := ringLinearSearch(s.points, xxhash.Sum64String(key))
	for {
		n := s.nodes[s.points[i]&ringOwnerMask]
		if loads[n.ID] < boundedCap125(m, n.Weight, s.totalWeight) {
			return n
		}
		i = (i + 1) % len(s.points)
	}
}

// boundedKey draws keys with a few very hot ones, so owners fill up and
// overflow happens often.
func boundedKey(rng *rand.Rand) string {
	if rng.IntN(3) == 0 {
		return "hot-" + strconv.Itoa(rng.IntN(3))
	}
	return "conv-" + strconv.Itoa(rng.IntN(500))
}

type boundedHeld struct {
	id      string
	release func()
}

func TestBoundedMatchesReference(t *testing.T) {
	ids := ringIDs(11, 10)
	nodes := ringNodesOf(ids)
	nodes[2].Weight = 2
	r := newTestRing(t, RingConfig{Nodes: nodes, LoadFactor: 1.25})
	rng := rand.New(rand.NewPCG(7, 8))
	loads := map[string]int{}
	total := 0
	var held []boundedHeld
	overflows := 0
	for step := range 20000 {
		switch {
		case step == 8000: // a node leaves while holding load
			gone := ids[5]
			require.NoError(t, r.Remove(gone))
			total -= loads[gone]
			delete(loads, gone)
		case step == 12000:
			require.NoError(t, r.Add(Node{ID: "late-joiner"}))
		case len(held) > 0 && rng.IntN(5) < 2:
			k := rng.IntN(len(held))
			h := held[k]
			held[k] = held[len(held)-1]
			held = held[:len(held)-1]
			h.release()
			h.release() // idempotent
			if _, live := loads[h.id]; live {
				loads[h.id]--
				total--
			}
		default:
			key := boundedKey(rng)
			want := boundedReference(r.snap.Load(), loads, total, key)
			got, release, err := r.Acquire(key)
			require.NoError(t, err)
			require.Equal(t, want, got, "step %d key %s", step, key)
			if owner, _ := r.Lookup(key); owner.ID != got.ID {
				overflows++
			}
			loads[got.ID]++
			total++
			held = append(held, boundedHeld{got.ID, release})
		}
		if step%1000 == 0 {
			for _, l := range r.Loads() {
				require.Equal(t, loads[l.Node.ID], l.Load, "step %d node %s", step, l.Node.ID)
				require.Equal(t, boundedCap125(total+1, l.Node.Weight, r.snap.Load().totalWeight), l.Capacity)
			}
		}
	}
	t.Logf("%d overflows", overflows)
	assert.Greater(t, overflows, 100, "the test must exercise overflow")
	for _, h := range held {
		h.release()
	}
	for _, l := range r.Loads() {
		assert.Zero(t, l.Load, l.Node.ID)
	}
}

func TestBoundedConcurrentNeverExceedsCapacity(t *testing.T) {
	ids := ringIDs(12, 10)
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ids)}) // default c = 1.25
	var violations, placements atomic.Int64
	var firstViolation atomic.Value
	r.bounded.check = func(n Node, load, capacity, total int) {
		placements.Add(1)
		limit := boundedCap125(total, 1, 10) // ⌈1.25 · average⌉ with the new key counted
		if load > limit || capacity != limit {
			violations.Add(1)
			firstViolation.CompareAndSwap(nil, fmt.Sprintf("%s load %d capacity %d limit %d total %d", n.ID, load, capacity, limit, total))
		}
	}
	var wg sync.WaitGroup
	var overflows atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			var held []func()
			for range 3000 {
				if len(held) > 0 && (len(held) > 40 || rng.IntN(2) == 0) {
					k := rng.IntN(len(held))
					held[k]()
					held[k] = held[len(held)-1]
					held = held[:len(held)-1]
					continue
				}
				key := boundedKey(rng)
				n, release, err := r.Acquire(key)
				if err != nil {
					t.Error(err)
					return
				}
				if owner, _ := r.Lookup(key); owner.ID != n.ID {
					overflows.Add(1)
				}
				held = append(held, release)
			}
			for _, release := range held {
				release()
			}
		})
	}
	wg.Wait()
	assert.Zero(t, violations.Load(), "%v", firstViolation.Load())
	assert.Positive(t, placements.Load())
	assert.Positive(t, overflows.Load(), "hot keys must overflow")
	for _, l := range r.Loads() {
		assert.Zero(t, l.Load, l.Node.ID)
	}
}

// TestBoundedConcurrentSnapshots checks the bound from the outside: while
// keys are only acquired, every consistent view of the loads has no node
// above ⌈1.25 · average⌉.
func TestBoundedConcurrentSnapshots(t *testing.T) {
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ringIDs(13, 10))})
	var wg sync.WaitGroup
	var done atomic.Bool
	var releases sync.Map
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := range 1500 {
				_, release, err := r.Acquire(boundedKey(rng))
				if err != nil {
					t.Error(err)
					return
				}
				releases.Store(g*10000+i, release)
			}
		})
	}
	samples := 0
	checker := make(chan struct{})
	go func() {
		defer close(checker)
		for !done.Load() {
			loads := r.Loads()
			total, hi := 0, 0
			for _, l := range loads {
				total += l.Load
				hi = max(hi, l.Load)
			}
			if total > 0 && hi > boundedCap125(total, 1, len(loads)) {
				t.Errorf("max load %d above ⌈1.25·%d/%d⌉", hi, total, len(loads))
				return
			}
			samples++
		}
	}()
	wg.Wait()
	done.Store(true)
	<-checker
	assert.Positive(t, samples)
	releases.Range(func(_, v any) bool { v.(func())(); return true })
	for _, l := range r.Loads() {
		assert.Zero(t, l.Load)
	}
}

func TestBoundedHotKeyOverflowsClockwise(t *testing.T) {
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ringIDs(14, 4)), LoadFactor: 1.25})
	const key = "vip-customer"
	order := r.LookupN(key, 4)
	counts := map[string]int{}
	for m := 1; m <= 40; m++ {
		// The paper's rule: the first node in ring order below ⌈1.25·m/4⌉.
		var want Node
		for _, n := range order {
			if counts[n.ID] < boundedCap125(m, 1, 4) {
				want = n
				break
			}
		}
		got, _, err := r.Acquire(key)
		require.NoError(t, err)
		require.Equal(t, want, got, "acquisition %d", m)
		counts[got.ID]++
	}
	// Worked by hand: capacities ⌈5m/16⌉ fill the nodes in ring order.
	assert.Equal(t, map[string]int{order[0].ID: 13, order[1].ID: 13, order[2].ID: 12, order[3].ID: 2}, counts)
}

func TestBoundedWeightedCapacity(t *testing.T) {
	r := newTestRing(t, RingConfig{Nodes: []Node{{ID: "big", Weight: 3}, {ID: "small", Weight: 1}}, LoadFactor: 1.25})
	for range 400 {
		_, _, err := r.Acquire("same-key")
		require.NoError(t, err)
	}
	loads := map[string]NodeLoad{}
	for _, l := range r.Loads() {
		loads[l.Node.ID] = l
	}
	// Capacities ⌈1.25·m·w/W⌉ for m = 400: 375 and 125; the hot key fills
	// its owner to capacity and the rest overflows to the other node.
	assert.Equal(t, 400, loads["big"].Load+loads["small"].Load)
	assert.LessOrEqual(t, loads["big"].Load, boundedCap125(400, 3, 4))
	assert.LessOrEqual(t, loads["small"].Load, boundedCap125(400, 1, 4))
	assert.Equal(t, boundedCap125(401, 3, 4), loads["big"].Capacity)
}

func TestBoundedRemovedNodeStopsCounting(t *testing.T) {
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf([]string{"a", "b", "c"})})
	var held []func()
	var onA int
	for i := 0; onA < 2; i++ {
		n, release, err := r.Acquire("k" + strconv.Itoa(i))
		require.NoError(t, err)
		held = append(held, release)
		if n.ID == "a" {
			onA++
		}
	}
	require.NoError(t, r.Remove("a"))
	total := 0
	for _, l := range r.Loads() {
		require.NotEqual(t, "a", l.Node.ID)
		total += l.Load
	}
	assert.Equal(t, len(held)-2, total, "a's load left with it")
	for _, release := range held {
		release()
	}
	require.NoError(t, r.Add(Node{ID: "a"}))
	for _, l := range r.Loads() {
		assert.Zero(t, l.Load, l.Node.ID)
	}
}

func TestBoundedCapacityRounding(t *testing.T) {
	for _, tc := range []struct {
		c          float64
		m, w, tot  int
		want       int
		descriptor string
	}{
		{1.25, 1, 1, 10, 1, "a first key always fits"},
		{1.25, 8, 1, 10, 1, "exactly 1.0"},
		{1.25, 9, 1, 10, 2, "just above 1"},
		{1.1, 10, 1, 11, 1, "1.1·10/11 = 1 despite float noise"},
		{1.1, 100, 1, 11, 10, "1.1·100/11 = 10"},
		{2, 7, 1, 2, 7, "c = 2"},
		{1.25, 400, 3, 4, 375, "weighted"},
	} {
		assert.Equal(t, tc.want, boundedCapacity(tc.c, tc.m, tc.w, tc.tot), tc.descriptor)
	}
}
