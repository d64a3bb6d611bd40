package router

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/observe"
)

var assignBenchSkills = []string{"en", "de", "fr", "es", "billing", "tech", "sales", "vip"}

// newAssignBench builds an Assigner with n online agents of capacity 8, each
// with 3 random skills out of 8, pre-loaded with about 3 conversations each.
func newAssignBench(tb testing.TB, n int, cfg AssignerConfig) *Assigner {
	tb.Helper()
	a, err := NewAssigner(cfg)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = a.Close() })
	rng := rand.New(rand.NewPCG(uint64(n), 1))
	for i := range n {
		perm := rng.Perm(len(assignBenchSkills))
		require.NoError(tb, a.UpsertAgent(Agent{ID: fmt.Sprintf("agent-%05d", i), Presence: Online, Capacity: 8,
			Skills: []string{assignBenchSkills[perm[0]], assignBenchSkills[perm[1]], assignBenchSkills[perm[2]]}}))
	}
	for i := range 3 * n {
		_, err := a.Assign(Request{ConversationID: fmt.Sprintf("pre-%d", i)})
		require.NoError(tb, err)
	}
	return a
}

func assignBenchIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("conv-%d", i)
	}
	return ids
}

// BenchmarkAssign measures one Assign plus the Release that frees the slot
// again (steady state), for 100 to 10,000 agents.
func BenchmarkAssign(b *testing.B) {
	scenarios := []struct {
		name string
		req  func(i int) Request
	}{
		{"any", func(int) Request { return Request{} }},
		{"skill", func(i int) Request { return Request{RequiredSkills: assignBenchSkills[i%4 : i%4+1]} }},
		{"two-skills", func(i int) Request { return Request{RequiredSkills: []string{"billing", assignBenchSkills[i%4]}} }},
		{"exclude3", func(int) Request {
			return Request{Exclude: []string{"agent-00000", "agent-00001", "agent-00002"}}
		}},
	}
	for _, strat := range []Strategy{LeastLoaded(), RoundRobin()} {
		for _, sc := range scenarios {
			for _, n := range []int{100, 1000, 10000} {
				if strat.Name() != "least_loaded" && sc.name != "any" {
					continue
				}
				b.Run(fmt.Sprintf("%s/%s/agents=%d", strat.Name(), sc.name, n), func(b *testing.B) {
					a := newAssignBench(b, n, AssignerConfig{Strategy: strat})
					ids := assignBenchIDs(1024)
					reqs := make([]Request, len(ids))
					for i := range reqs {
						reqs[i] = sc.req(i)
						reqs[i].ConversationID = ids[i]
					}
					b.ReportAllocs()
					b.ResetTimer()
					for i := 0; b.Loop(); i++ {
						r := &reqs[i&1023]
						if _, err := a.Assign(*r); err != nil {
							b.Fatal(err)
						}
						if err := a.Release(r.ConversationID); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkAssignObserved is BenchmarkAssign/least_loaded/any with metrics on.
func BenchmarkAssignObserved(b *testing.B) {
	o, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	require.NoError(b, err)
	a := newAssignBench(b, 1000, AssignerConfig{Observer: o})
	ids := assignBenchIDs(1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := a.Assign(Request{ConversationID: ids[i&1023]}); err != nil {
			b.Fatal(err)
		}
		if err := a.Release(ids[i&1023]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAssignParallel runs Assign+Release from GOMAXPROCS goroutines.
func BenchmarkAssignParallel(b *testing.B) {
	a := newAssignBench(b, 1000, AssignerConfig{})
	ids := assignBenchIDs(1 << 16)
	var next uint64
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		<-mu
		base := next
		next += 1 << 12
		mu <- struct{}{}
		for i := uint64(0); pb.Next(); i++ {
			id := ids[(base+i&(1<<12-1))&(1<<16-1)]
			if _, err := a.Assign(Request{ConversationID: id}); err != nil {
				b.Fatal(err)
			}
			if err := a.Release(id); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOfferAccept measures Offer + Accept + Release (the offer path
// allocates the offer record, its ID and its timer, which Accept stops).
func BenchmarkOfferAccept(b *testing.B) {
	a := newAssignBench(b, 1000, AssignerConfig{})
	ids := assignBenchIDs(1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		o, err := a.Offer(Request{ConversationID: ids[i&1023]})
		if err != nil {
			b.Fatal(err)
		}
		if err := a.Accept(o.ID); err != nil {
			b.Fatal(err)
		}
		if err := a.Release(ids[i&1023]); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAssignDoesNotAllocate proves the steady-state Assign+Release path is
// allocation-free, with and without metrics, with skills and exclusions.
func TestAssignDoesNotAllocate(t *testing.T) {
	o, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	for _, cfg := range []AssignerConfig{{}, {Observer: o}, {Strategy: Sticky(StickyConfig{})}} {
		a := newAssignBench(t, 200, cfg)
		reqs := []Request{
			{ConversationID: "x"},
			{ConversationID: "x", RequiredSkills: []string{"en"}, CustomerID: "u1"},
			{ConversationID: "x", RequiredSkills: []string{"tech", "en"}, Exclude: []string{"agent-00001"}},
			{ConversationID: "x", RequiredSkills: []string{"en"}, OptionalSkills: []string{"vip"}},
		}
		for _, req := range reqs {
			run := func() {
				if _, err := a.Assign(req); err != nil {
					t.Fatal(err)
				}
				if err := a.Release(req.ConversationID); err != nil {
					t.Fatal(err)
				}
			}
			run() // create the view
			allocs := testing.AllocsPerRun(200, run)
			require.Zero(t, allocs, "%+v", req)
			require.Zero(t, testing.AllocsPerRun(200, func() { a.CanServe(req) }), "CanServe %+v", req)
		}
	}
}
