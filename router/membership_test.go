package router

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/observe"
)

// ringRecorder collects OnChange calls.
type ringRecorder struct {
	ring    *Ring // flushed by all
	mu      sync.Mutex
	changes []RingChange
}

func (rec *ringRecorder) onChange(ch RingChange) {
	rec.mu.Lock()
	rec.changes = append(rec.changes, ch)
	rec.mu.Unlock()
}

// all waits until the ring's changes so far are delivered and returns them.
func (rec *ringRecorder) all() []RingChange {
	rec.ring.flush()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.changes)
}

func ringShares(s []NodeShare) map[string]float64 {
	m := map[string]float64{}
	for _, x := range s {
		m[x.ID] = x.Fraction
	}
	return m
}

func ringSum(s []NodeShare) float64 {
	t := 0.0
	for _, x := range s {
		t += x.Fraction
	}
	return t
}

// checkChangeAgainstKeys compares a change's reported shares with the moves
// measured on n keys.
func checkChangeAgainstKeys(t *testing.T, ch RingChange, before, after []string) {
	t.Helper()
	n := float64(len(before))
	lost, gained := map[string]float64{}, map[string]float64{}
	moved := 0
	buf := make([]byte, 0, 32)
	for i := range before {
		from, to, m := ch.Moved(string(ringKey(buf, i)))
		require.Equal(t, before[i], from.ID)
		require.Equal(t, after[i], to.ID)
		require.Equal(t, before[i] != after[i], m)
		if m {
			moved++
			if before[i] != "" {
				lost[before[i]] += 1 / n
			}
			if after[i] != "" {
				gained[after[i]] += 1 / n
			}
		}
	}
	assert.InDelta(t, float64(moved)/n, ch.MovedFraction, 0.005)
	for id, f := range ringShares(ch.Lost) {
		assert.InDelta(t, lost[id], f, 0.005, "lost by %s", id)
	}
	for id, f := range ringShares(ch.Gained) {
		assert.InDelta(t, gained[id], f, 0.005, "gained by %s", id)
	}
	for id, f := range lost {
		assert.Contains(t, ringShares(ch.Lost), id, "%s lost %.4f of the keys but is not reported", id, f)
	}
	for id, f := range gained {
		assert.Contains(t, ringShares(ch.Gained), id, "%s gained %.4f of the keys but is not reported", id, f)
	}
}

func TestSetMembersReportsChange(t *testing.T) {
	skipQualityUnderRace(t)
	rec := &ringRecorder{}
	ids := ringIDs(20, 6)
	r := newTestRing(t, RingConfig{Nodes: ringNodesOf(ids), OnChange: rec.onChange})
	rec.ring = r
	const keys = 200_000
	before := ringOwners(r, keys)

	next := []Node{
		{ID: "newcomer"},
		{ID: ids[1], Weight: 2},
		{ID: ids[2], Weight: 1, Addr: "10.1.1.1:7000"},
		{ID: ids[3]}, {ID: ids[4]}, {ID: ids[5], Weight: 1},
	}
	require.NoError(t, r.SetMembers(next))
	after := ringOwners(r, keys)

	changes := rec.all()
	require.Len(t, changes, 1)
	ch := changes[0]
	assert.Equal(t, uint64(1), ch.Version)
	assert.Equal(t, r.Version(), ch.Version)
	assert.Equal(t, []Node{{ID: "newcomer", Weight: 1}}, ch.Added)
	assert.Equal(t, []Node{{ID: ids[0], Weight: 1}}, ch.Removed)
	assert.Equal(t, []Node{{ID: ids[1], Weight: 2}, {ID: ids[2], Weight: 1, Addr: "10.1.1.1:7000"}}, ch.Updated)
	assert.InDelta(t, ch.MovedFraction, ringSum(ch.Lost), 1e-9)
	assert.InDelta(t, ch.MovedFraction, ringSum(ch.Gained), 1e-9)
	assert.Contains(t, ringShares(ch.Lost), ids[0])
	assert.NotContains(t, ringShares(ch.Gained), ids[0])
	assert.Contains(t, ringShares(ch.Gained), "newcomer")
	checkChangeAgainstKeys(t, ch, before, after)

	// The same list again changes nothing and reports nothing.
	require.NoError(t, r.SetMembers(next))
	assert.Len(t, rec.all(), 1)
	assert.Equal(t, uint64(1), r.Version())
}

func TestRingChangeFromAndToEmpty(t *testing.T) {
	rec := &ringRecorder{}
	r := newTestRing(t, RingConfig{OnChange: rec.onChange})
	rec.ring = r
	const keys = 50_000
	empty := make([]string, keys)

	require.NoError(t, r.SetMembers(ringNodesOf([]string{"a", "b", "c"})))
	full := ringOwners(r, keys)
	require.NoError(t, r.SetMembers(nil))

	changes := rec.all()
	require.Len(t, changes, 2)
	up, down := changes[0], changes[1]
	assert.Len(t, up.Added, 3)
	assert.Empty(t, up.Lost)
	assert.InDelta(t, 1, up.MovedFraction, 1e-9)
	assert.InDelta(t, 1, ringSum(up.Gained), 1e-9)
	checkChangeAgainstKeys(t, up, empty, full)

	assert.Len(t, down.Removed, 3)
	assert.Empty(t, down.Gained)
	assert.InDelta(t, 1, ringSum(down.Lost), 1e-9)
	checkChangeAgainstKeys(t, down, full, empty)

	var zero RingChange
	_, _, moved := zero.Moved("x")
	assert.False(t, moved)
}

func TestRingChangeSingleOperations(t *testing.T) {
	skipQualityUnderRace(t)
	rec := &ringRecorder{}
	ids := ringIDs(21, 5)
	r := newTestRing(t, RingConfig{VirtualNodes: 100, Nodes: ringNodesOf(ids), OnChange: rec.onChange})
	rec.ring = r
	const keys = 100_000
	for i, op := range []func() error{
		func() error { return r.Add(Node{ID: "x"}) },
		func() error { return r.SetWeight(ids[0], 3) },
		func() error { return r.SetWeight(ids[0], 1) },
		func() error { return r.Remove(ids[2]) },
	} {
		before := ringOwners(r, keys)
		require.NoError(t, op())
		after := ringOwners(r, keys)
		changes := rec.all()
		require.Len(t, changes, i+1)
		ch := changes[i]
		switch i {
		case 0:
			assert.Equal(t, []NodeShare{{ID: "x", Fraction: ch.MovedFraction}}, ch.Gained)
		case 1:
			assert.Equal(t, []NodeShare{{ID: ids[0], Fraction: ch.MovedFraction}}, ch.Gained)
			assert.Equal(t, []Node{{ID: ids[0], Weight: 3}}, ch.Updated)
		case 2:
			assert.Equal(t, []NodeShare{{ID: ids[0], Fraction: ch.MovedFraction}}, ch.Lost)
		case 3:
			assert.Equal(t, []NodeShare{{ID: ids[2], Fraction: ch.MovedFraction}}, ch.Lost)
		}
		checkChangeAgainstKeys(t, ch, before, after)
	}
}

func TestOnChangeOrderedSerialAndReentrant(t *testing.T) {
	var (
		inflight atomic.Int32
		mu       sync.Mutex
		versions []uint64
		r        *Ring
	)
	r = newTestRing(t, RingConfig{VirtualNodes: 8, OnChange: func(ch RingChange) {
		if inflight.Add(1) != 1 {
			t.Error("OnChange called concurrently")
		}
		defer inflight.Add(-1)
		mu.Lock()
		versions = append(versions, ch.Version)
		mu.Unlock()
		if ch.Version == 1 {
			// Re-entrant: must neither deadlock nor be delivered out of order.
			if err := r.Add(Node{ID: "from-callback"}); err != nil {
				t.Error(err)
			}
		}
		_, _ = r.Lookup("reads work inside the callback")
	}})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 25 {
				if err := r.Add(Node{ID: "n" + strconv.Itoa(g) + "-" + strconv.Itoa(i)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	// Every mutator has returned; wait for the deliveries.
	r.flush()
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, versions, 101)
	for i, v := range versions {
		require.Equal(t, uint64(i+1), v)
	}
	assert.Equal(t, 101, r.Len())
}

func TestFollow(t *testing.T) {
	o, reg := newRingObserver(t)
	rec := &ringRecorder{}
	r := newTestRing(t, RingConfig{Name: "follow", Observer: o, OnChange: rec.onChange})
	rec.ring = r

	// Lists queued before Follow runs are coalesced to the newest.
	updates := make(chan []Node, 8)
	updates <- ringNodesOf([]string{"a"})
	updates <- ringNodesOf([]string{"a", "b"})
	updates <- ringNodesOf([]string{"a", "b", "c"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Follow(ctx, updates) }()
	require.Eventually(t, func() bool { return r.Len() == 3 }, 5*time.Second, time.Millisecond)
	require.Len(t, rec.all(), 1)

	updates <- []Node{{ID: "a"}, {ID: "a"}} // invalid: skipped, counted
	require.Eventually(t, func() bool {
		return ringMetric(t, reg, "switchboard_router_ring_membership_errors_total", "follow", "") == 1
	}, 5*time.Second, time.Millisecond)
	assert.Equal(t, 3, r.Len())

	updates <- ringNodesOf([]string{"c", "d"})
	close(updates)
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return after the channel closed")
	}
	assert.Equal(t, []Node{{ID: "c", Weight: 1}, {ID: "d", Weight: 1}}, r.Nodes())

	// Cancellation.
	go func() { errc <- r.Follow(ctx, make(chan []Node)) }()
	cancel()
	select {
	case err := <-errc:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not return after cancel")
	}

	// A closed ring ends Follow.
	require.NoError(t, r.Close())
	closedUpdates := make(chan []Node, 1)
	closedUpdates <- ringNodesOf([]string{"z"})
	require.ErrorIs(t, r.Follow(context.Background(), closedUpdates), ErrRingClosed)
}

func newRingObserver(t testing.TB) (*observe.Observer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	o, err := observe.New(observe.Config{Registerer: reg, DisableRuntimeCollectors: true, LogHandler: slog.DiscardHandler})
	require.NoError(t, err)
	return o, reg
}

// ringMetric returns the value of the series of family name with label
// ring=ringName (and op=op when op is set); histograms report their count.
func ringMetric(t *testing.T, g prometheus.Gatherer, name, ringName, op string) float64 {
	t.Helper()
	families, err := g.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if (l.GetName() == "ring" && l.GetValue() != ringName) || (l.GetName() == "op" && l.GetValue() != op) {
					continue series
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return -1
}

func TestRingMetrics(t *testing.T) {
	o, reg := newRingObserver(t)
	gw := newTestRing(t, RingConfig{Name: "gw", Observer: o, VirtualNodes: 10, Nodes: ringNodesOf([]string{"a", "b", "c"})})
	workers := newTestRing(t, RingConfig{Name: "workers", Observer: o, Nodes: ringNodesOf([]string{"w"})})

	for i := range 100 {
		switch i % 3 {
		case 0:
			gw.Lookup(strconv.Itoa(i))
		case 1:
			gw.LookupBytes([]byte(strconv.Itoa(i)))
		case 2:
			gw.LookupN(strconv.Itoa(i), 2)
		}
	}
	for i := range 50 {
		workers.Lookup(strconv.Itoa(i))
	}
	lookups := func(name string) float64 {
		return ringMetric(t, reg, "switchboard_router_ring_lookups_total", name, "")
	}
	assert.Equal(t, 100.0, lookups("gw"))
	assert.Equal(t, 50.0, lookups("workers"))

	require.NoError(t, gw.Add(Node{ID: "d"}))
	require.NoError(t, gw.SetWeight("d", 2))
	require.NoError(t, gw.Remove("a"))
	require.NoError(t, gw.SetMembers(ringNodesOf([]string{"b", "c", "e"})))
	for _, op := range []string{"add", "weight", "remove", "members"} {
		assert.Equal(t, 1.0, ringMetric(t, reg, "switchboard_router_ring_changes_total", "gw", op), op)
	}
	assert.Equal(t, 4.0, ringMetric(t, reg, "switchboard_router_ring_rebuild_seconds", "gw", ""))
	assert.Equal(t, 4.0, ringMetric(t, reg, "switchboard_router_ring_moved_ratio", "gw", ""))
	assert.Equal(t, 3.0, ringMetric(t, reg, "switchboard_router_ring_nodes", "gw", ""))
	assert.Equal(t, 30.0, ringMetric(t, reg, "switchboard_router_ring_points", "gw", ""))
	assert.Equal(t, float64(DefaultVirtualNodes), ringMetric(t, reg, "switchboard_router_ring_points", "workers", ""))

	var held []func()
	for range 12 {
		_, release, err := gw.Acquire("hot")
		require.NoError(t, err)
		held = append(held, release)
	}
	assert.Equal(t, 12.0, ringMetric(t, reg, "switchboard_router_ring_bounded_acquires_total", "gw", ""))
	assert.Equal(t, 12.0, ringMetric(t, reg, "switchboard_router_ring_bounded_held", "gw", ""))
	// ⌈1.25·12/3⌉ = 5 on the owner; the other 7 overflowed.
	assert.Equal(t, 7.0, ringMetric(t, reg, "switchboard_router_ring_bounded_overflows_total", "gw", ""))
	for _, release := range held {
		release()
	}
	assert.Equal(t, 0.0, ringMetric(t, reg, "switchboard_router_ring_bounded_held", "gw", ""))

	// Closing folds the ring's lookups in; a new ring of the same name adds on.
	require.NoError(t, gw.Close())
	gw.Lookup("after close is not counted")
	assert.Equal(t, 100.0, lookups("gw"))
	gw2 := newTestRing(t, RingConfig{Name: "gw", Observer: o, Nodes: ringNodesOf([]string{"a"})})
	gw2.Lookup("x")
	assert.Equal(t, 101.0, lookups("gw"))
	assert.Zero(t, testing.AllocsPerRun(100, func() { gw2.Lookup("x") }), "metrics must not make lookups allocate")
}
