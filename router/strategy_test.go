package router

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// assignSeq assigns n conversations named prefix0.. and returns the agents picked.
func assignSeq(t *testing.T, f *assignFixture, prefix string, n int) []string {
	t.Helper()
	var got []string
	for i := range n {
		id, err := f.Assign(Request{ConversationID: fmt.Sprint(prefix, i)})
		require.NoError(t, err)
		got = append(got, id)
	}
	return got
}

func TestLeastLoaded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{Strategy: LeastLoaded()}, online("a", 5), online("b", 5), online("c", 5))
		// All idle and never assigned: ties go by join order, then each new
		// assignment makes the others "longer since last assignment".
		assert.Equal(t, []string{"a", "b", "c", "a", "b", "c"}, assignSeq(t, f, "x", 6))

		// Unequal loads: the least loaded wins whatever the rotation.
		require.NoError(t, f.Release("x0")) // a: 1, b: 2, c: 2
		require.NoError(t, f.Release("x3")) // a: 0
		assert.Equal(t, []string{"a", "a"}, assignSeq(t, f, "y", 2))
		// Now all hold 2; a was assigned last, b and c tie on load: b's last
		// assignment (x4) is older than c's (x5).
		assert.Equal(t, []string{"b", "c", "a"}, assignSeq(t, f, "z", 3))

		// Offers count as load.
		f2 := newAssignFixture(t, AssignerConfig{Strategy: LeastLoaded()}, online("a", 5), online("b", 5))
		o, err := f2.Offer(Request{ConversationID: "o"})
		require.NoError(t, err)
		assert.Equal(t, "a", o.AgentID)
		assert.Equal(t, []string{"b"}, assignSeq(t, f2, "p", 1))

		// Ties go to the agent waiting longest, also across manual assignments.
		f3 := newAssignFixture(t, AssignerConfig{Strategy: LeastLoaded()}, online("a", 5), online("b", 5))
		require.NoError(t, f3.AssignManual(Request{ConversationID: "m1"}, "b", false))
		require.NoError(t, f3.AssignManual(Request{ConversationID: "m2"}, "a", false))
		require.NoError(t, f3.Release("m1"))
		require.NoError(t, f3.Release("m2"))
		assert.Equal(t, []string{"b", "a"}, assignSeq(t, f3, "q", 2), "b's last assignment is older")
	})
}

func TestRoundRobin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{Strategy: RoundRobin()}, online("a", 10), online("b", 10), online("c", 10))
		assert.Equal(t, []string{"a", "b", "c", "a", "b", "c", "a"}, assignSeq(t, f, "x", 7))
		// Load does not matter: a holds 3, but b is next in turn.
		require.NoError(t, f.Release("x1"))
		require.NoError(t, f.Release("x4"))
		assert.Equal(t, []string{"b", "c"}, assignSeq(t, f, "y", 2))
		// A newcomer joins the end of the rotation.
		require.NoError(t, f.UpsertAgent(online("d", 10)))
		assert.Equal(t, []string{"a", "b", "c", "d"}, assignSeq(t, f, "z", 4))
		// Manual assignments do not move the rotation.
		require.NoError(t, f.AssignManual(Request{ConversationID: "m"}, "a", false))
		assert.Equal(t, []string{"a", "b"}, assignSeq(t, f, "w", 2))
		// An agent skipped while busy keeps its (now oldest) turn.
		require.NoError(t, f.SetPresence("a", Busy))
		assert.Equal(t, []string{"c", "d", "b"}, assignSeq(t, f, "v", 3))
		require.NoError(t, f.SetPresence("a", Online))
		assert.Equal(t, []string{"a", "c"}, assignSeq(t, f, "u", 2))
	})
}

func TestLoadRotation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{Strategy: LoadRotation()}, online("a", 10), online("b", 10), online("c", 10))
		assert.Equal(t, []string{"a", "b", "c", "a"}, assignSeq(t, f, "x", 4))
		// Any assignment counts: a manual one to b makes c the oldest, then a.
		require.NoError(t, f.AssignManual(Request{ConversationID: "m"}, "b", false))
		assert.Equal(t, []string{"c", "a", "b"}, assignSeq(t, f, "y", 3))
		// A newcomer was never assigned: it goes first.
		require.NoError(t, f.UpsertAgent(online("d", 10)))
		assert.Equal(t, []string{"d", "c"}, assignSeq(t, f, "z", 2))
		// Capacity still applies.
		require.NoError(t, f.SetCapacity("a", 1))
		assert.Equal(t, []string{"b", "d", "c", "b"}, assignSeq(t, f, "w", 4))
	})
}

func TestStickyPrefersLastAgent(t *testing.T) {
	f := newAssignFixture(t, AssignerConfig{Strategy: Sticky(StickyConfig{})},
		online("a", 2, "en"), online("b", 2, "en"), online("c", 2, "de"))
	id, err := f.Assign(Request{ConversationID: "c1", CustomerID: "alice"})
	require.NoError(t, err)
	require.Equal(t, "a", id)
	require.NoError(t, f.Release("c1"))
	// Least-loaded would now pick b (a's last assignment is newer); sticky picks a.
	id, err = f.Assign(Request{ConversationID: "c2", CustomerID: "alice"})
	require.NoError(t, err)
	assert.Equal(t, "a", id)
	id, err = f.Assign(Request{ConversationID: "c3", CustomerID: "bob"})
	require.NoError(t, err)
	assert.Equal(t, "b", id, "new customers use the fallback")

	en := []string{"en"}
	for _, tc := range []struct {
		name  string
		setup func(f *assignFixture)
		req   Request
		want  string
	}{
		{"at capacity", func(f *assignFixture) {
			require.NoError(t, f.AssignManual(Request{ConversationID: "fill"}, "a", true))
			require.NoError(t, f.AssignManual(Request{ConversationID: "fill2"}, "a", true))
		},
			Request{RequiredSkills: en}, "b"},
		{"busy", func(f *assignFixture) { require.NoError(t, f.SetPresence("a", Busy)) }, Request{RequiredSkills: en}, "b"},
		{"offline", func(f *assignFixture) { require.NoError(t, f.SetPresence("a", Offline)) }, Request{RequiredSkills: en}, "b"},
		{"excluded", func(*assignFixture) {}, Request{Exclude: []string{"a"}, RequiredSkills: en}, "b"},
		{"lacks required skill", func(*assignFixture) {}, Request{RequiredSkills: []string{"de"}}, "c"},
		{"wrong team", func(*assignFixture) {}, Request{Team: "x"}, ""},
		{"available", func(*assignFixture) {}, Request{RequiredSkills: en}, "a"},
		{"available, no skills asked", func(*assignFixture) {}, Request{}, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newAssignFixture(t, AssignerConfig{Strategy: Sticky(StickyConfig{Fallback: LeastLoaded()})},
				online("a", 2, "en"), online("b", 2, "en"), online("c", 2, "de"))
			require.NoError(t, f.AssignManual(Request{ConversationID: "warm"}, "b", false)) // so alice's first conversation goes to a
			_, err := f.Assign(Request{ConversationID: "first", CustomerID: "alice"})
			require.NoError(t, err)
			require.NoError(t, f.Release("first"))
			require.NoError(t, f.Release("warm"))
			tc.setup(f)
			tc.req.ConversationID, tc.req.CustomerID = "again", "alice"
			id, err := f.Assign(tc.req)
			if tc.want == "" {
				assert.ErrorIs(t, err, ErrNoAgent)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, id)
		})
	}
}

func TestStickyFollowsTransfersAndOffers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{Strategy: Sticky(StickyConfig{Fallback: RoundRobin()})},
			online("a", 5), online("b", 5), online("c", 5))
		o, err := f.Offer(Request{ConversationID: "c1", CustomerID: "alice"})
		require.NoError(t, err)
		assert.Equal(t, "a", o.AgentID)
		require.NoError(t, f.Accept(o.ID))
		require.NoError(t, f.Transfer("c1", "c"))
		require.NoError(t, f.Release("c1"))
		o, err = f.Offer(Request{ConversationID: "c2", CustomerID: "alice"})
		require.NoError(t, err)
		assert.Equal(t, "c", o.AgentID, "the customer last talked to c")
		// An offer that expires does not make the agent the customer's last one.
		f.clock.Advance(DefaultOfferTimeout)
		exp := f.rec.takeExpired()
		require.Len(t, exp, 1)
		id, err := f.Assign(Request{ConversationID: "c3", CustomerID: "alice"})
		require.NoError(t, err)
		assert.Equal(t, "c", id, "still c: it is the last agent alice talked to and is available")
	})
}

func TestStickyLookupAndBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		lookups := 0
		s := Sticky(StickyConfig{MaxCustomers: 2, Lookup: func(c string) (string, bool) {
			lookups++
			if c == "db-customer" {
				return "b", true
			}
			return "", false
		}})
		f := newAssignFixture(t, AssignerConfig{Strategy: s}, online("a", 0), online("b", 0))
		id, err := f.Assign(Request{ConversationID: "c0", CustomerID: "db-customer"})
		require.NoError(t, err)
		assert.Equal(t, "b", id, "host lookup wins")
		assert.Equal(t, 1, lookups)

		p := s.(Preferrer)
		p.Assigned("u1", "a")
		p.Assigned("u2", "b")
		p.Assigned("u1", "b") // update, not a new entry
		assert.Equal(t, "b", p.PreferredAgent(Request{CustomerID: "u1"}))
		p.Assigned("u3", "a") // table full: forgets the oldest entry, u1
		assert.Equal(t, "", p.PreferredAgent(Request{CustomerID: "u1"}))
		assert.Equal(t, "b", p.PreferredAgent(Request{CustomerID: "u2"}))
		assert.Equal(t, "a", p.PreferredAgent(Request{CustomerID: "u3"}))
		assert.Equal(t, "", p.PreferredAgent(Request{}))
		assert.Equal(t, "sticky", s.Name())
	})
}

// assignByRatio is a custom strategy: lowest load relative to capacity.
type assignByRatio struct{}

func (assignByRatio) Name() string { return "ratio" }
func (assignByRatio) Less(a, b *AgentLoad) bool {
	// a.load/a.cap < b.load/b.cap, unlimited counts as 1000.
	ca, cb := a.Capacity, b.Capacity
	if ca == 0 {
		ca = 1000
	}
	if cb == 0 {
		cb = 1000
	}
	if x, y := a.Load()*cb, b.Load()*ca; x != y {
		return x < y
	}
	return a.AssignSeq < b.AssignSeq
}

func TestCustomStrategy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{Strategy: assignByRatio{}}, online("small", 2), online("big", 8))
		got := assignSeq(t, f, "x", 10)
		count := map[string]int{}
		for _, g := range got {
			count[g]++
		}
		assert.Equal(t, map[string]int{"small": 2, "big": 8}, count)
	})
}

func TestStrategyNames(t *testing.T) {
	assert.Equal(t, "least_loaded", LeastLoaded().Name())
	assert.Equal(t, "round_robin", RoundRobin().Name())
	assert.Equal(t, "load_rotation", LoadRotation().Name())
	assert.Equal(t, "online", Online.String())
	assert.Equal(t, "presence(9)", Presence(9).String())
	assert.Equal(t, "released", CapacityReleased.String())
	assert.Equal(t, "timed_out", OfferTimedOut.String())
	assert.Equal(t, time.Duration(0), Request{}.RelaxAfter)
}
