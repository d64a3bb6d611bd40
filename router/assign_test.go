package router

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/observe"
)

// assignRecorder records every callback of an Assigner. Its take methods
// first wait until the callbacks queued so far have been delivered.
type assignRecorder struct {
	flush    func()
	mu       sync.Mutex
	capacity []CapacityEvent
	expired  []ExpiredOffer
	offline  []AgentOffline
}

func (r *assignRecorder) install(cfg *AssignerConfig) {
	cfg.OnCapacity = func(e CapacityEvent) { r.mu.Lock(); r.capacity = append(r.capacity, e); r.mu.Unlock() }
	cfg.OnOfferExpired = func(e ExpiredOffer) { r.mu.Lock(); r.expired = append(r.expired, e); r.mu.Unlock() }
	cfg.OnAgentOffline = func(e AgentOffline) { r.mu.Lock(); r.offline = append(r.offline, e); r.mu.Unlock() }
}

// takeCapacity returns and clears the recorded capacity events.
func (r *assignRecorder) takeCapacity() []CapacityEvent {
	r.flush()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.capacity
	r.capacity = nil
	return out
}

func (r *assignRecorder) takeExpired() []ExpiredOffer {
	r.flush()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.expired
	r.expired = nil
	return out
}

func (r *assignRecorder) takeOffline() []AgentOffline {
	r.flush()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.offline
	r.offline = nil
	return out
}

type assignFixture struct {
	*Assigner
	clock bubbleClock
	rec   *assignRecorder
}

// bubbleClock reads and advances the fake clock of the testing/synctest
// bubble a test runs in.
type bubbleClock struct{}

func (bubbleClock) Now() time.Time { return time.Now() }

// Advance moves the bubble's time forward by d and waits until the timers
// due by then (offer expiries, grace periods) have run.
func (bubbleClock) Advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// pendingTimers counts the offer and grace timers armed and not yet fired.
func (f *assignFixture) pendingTimers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.offers)
	for _, g := range f.agents {
		if g.graceTimer != nil {
			n++
		}
	}
	return n
}

// newAssignFixture returns an Assigner recording its callbacks, closed at
// the end of the test. Tests that read or advance f.clock run in a
// testing/synctest bubble.
func newAssignFixture(t *testing.T, cfg AssignerConfig, agents ...Agent) *assignFixture {
	t.Helper()
	f := &assignFixture{rec: &assignRecorder{}}
	f.rec.install(&cfg)
	a, err := NewAssigner(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	f.Assigner = a
	f.rec.flush = a.flush
	for _, ag := range agents {
		require.NoError(t, a.UpsertAgent(ag))
	}
	f.rec.takeCapacity()
	return f
}

func (f *assignFixture) info(t *testing.T, id string) AgentInfo {
	t.Helper()
	inf, ok := f.Agent(id)
	require.True(t, ok, "agent %s", id)
	return inf
}

// convIDs returns the IDs of handed-back conversations.
func convIDs(cs []ConversationInfo) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.ConversationID)
	}
	return out
}

// offlineIDs is an AgentOffline report reduced to its conversation IDs.
type offlineIDs struct {
	AgentID       string
	Conversations []string
	Since         time.Time
}

func offlineReports(offs []AgentOffline) []offlineIDs {
	out := make([]offlineIDs, 0, len(offs))
	for _, o := range offs {
		out = append(out, offlineIDs{o.AgentID, convIDs(o.Conversations), o.Since})
	}
	return out
}

func online(id string, capacity int, skills ...string) Agent {
	return Agent{ID: id, Presence: Online, Capacity: capacity, Skills: skills}
}

func TestNewAssignerValidation(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   AssignerConfig
		field string
	}{
		{"offer timeout", AssignerConfig{OfferTimeout: -1}, "OfferTimeout"},
		{"grace", AssignerConfig{OfflineGrace: -time.Second}, "OfflineGrace"},
		{"misses", AssignerConfig{AwayAfterMisses: -1}, "AwayAfterMisses"},
		{"views", AssignerConfig{MaxSkillViews: -2}, "MaxSkillViews"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := NewAssigner(tc.cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Nil(t, a)
			assert.Contains(t, err.Error(), tc.field)
		})
	}
	a, err := NewAssigner(AssignerConfig{})
	require.NoError(t, err)
	assert.Equal(t, DefaultOfferTimeout, a.timeout)
	assert.Equal(t, DefaultOptionalSkillWait, a.relaxWait)
	assert.Equal(t, "least_loaded", a.strat.Name())
	require.NoError(t, a.Close())
}

func TestUpsertAgentValidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{})
		for _, ag := range []Agent{{}, {ID: "a", Capacity: -1}, {ID: "a", Presence: Presence(9)}} {
			assert.ErrorIs(t, f.UpsertAgent(ag), ErrInvalidAgent, "%+v", ag)
		}
		assert.ErrorIs(t, f.SetCapacity("x", -1), ErrInvalidAgent)
		assert.ErrorIs(t, f.SetCapacity("x", 1), ErrUnknownAgent)
		assert.ErrorIs(t, f.SetPresence("x", Online), ErrUnknownAgent)
		assert.ErrorIs(t, f.SetPresence("x", Presence(7)), ErrInvalidAgent)
		assert.ErrorIs(t, f.SetSkills("x", nil), ErrUnknownAgent)
		_, err := f.RemoveAgent("x")
		assert.ErrorIs(t, err, ErrUnknownAgent)
	})
}

func TestAssignBasics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 2))
		_, err := f.Assign(Request{})
		assert.ErrorIs(t, err, ErrInvalidRequest)

		id, err := f.Assign(Request{ConversationID: "c1", CustomerID: "u1"})
		require.NoError(t, err)
		assert.Equal(t, "a", id)
		_, err = f.Assign(Request{ConversationID: "c1"})
		assert.ErrorIs(t, err, ErrAlreadyAssigned)

		id, err = f.Assign(Request{ConversationID: "c2"})
		require.NoError(t, err)
		assert.Equal(t, "a", id)
		_, err = f.Assign(Request{ConversationID: "c3"})
		assert.ErrorIs(t, err, ErrNoAgent, "capacity 2 is full")

		inf := f.info(t, "a")
		assert.Equal(t, 2, inf.Active)
		assert.Equal(t, 0, inf.Free())
		assert.Equal(t, []string{"c1", "c2"}, inf.Conversations)
		assert.Equal(t, f.clock.Now(), inf.LastAssigned)

		ci, ok := f.Conversation("c1")
		require.True(t, ok)
		now := f.clock.Now()
		assert.Equal(t, ConversationInfo{ConversationID: "c1", AgentID: "a", CustomerID: "u1", WaitingSince: now,
			Request: Request{ConversationID: "c1", CustomerID: "u1", WaitingSince: now}}, ci, "a zero WaitingSince becomes the assignment time")

		require.NoError(t, f.Release("c1"))
		assert.ErrorIs(t, f.Release("c1"), ErrNotAssigned)
		_, ok = f.Conversation("c1")
		assert.False(t, ok)
		id, err = f.Assign(Request{ConversationID: "c3"})
		require.NoError(t, err)
		assert.Equal(t, "a", id)

		st := f.Stats()
		assert.Equal(t, AssignerStats{Agents: 1, ByPresence: [4]int{Online: 1}, Conversations: 2, CapacityInUse: 2}, st)
	})
}

func TestAssignPresenceGatesNewWork(t *testing.T) {
	for _, p := range []Presence{Offline, Busy, Away} {
		t.Run(p.String(), func(t *testing.T) {
			f := newAssignFixture(t, AssignerConfig{}, Agent{ID: "a", Presence: p})
			_, err := f.Assign(Request{ConversationID: "c"})
			assert.ErrorIs(t, err, ErrNoAgent)
			require.NoError(t, f.SetPresence("a", Online))
			id, err := f.Assign(Request{ConversationID: "c"})
			require.NoError(t, err)
			assert.Equal(t, "a", id)
		})
	}
}

func TestAssignUnlimitedCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 0))
		for i := range 500 {
			id, err := f.Assign(Request{ConversationID: fmt.Sprint(i)})
			require.NoError(t, err)
			require.Equal(t, "a", id)
		}
		assert.Equal(t, -1, f.info(t, "a").Free())
		require.NoError(t, f.Release("7"))
		assert.Empty(t, f.rec.takeCapacity(), "releasing on an unlimited agent is no capacity gain")
	})
}

func TestAssignRequiredSkillsAndTeams(t *testing.T) {
	f := newAssignFixture(t, AssignerConfig{},
		Agent{ID: "en", Presence: Online, Skills: []string{"en"}, Teams: []string{"sales"}},
		Agent{ID: "en-billing", Presence: Online, Skills: []string{"billing", "en", "en", ""}},
		Agent{ID: "de-billing", Presence: Online, Skills: []string{"de", "billing"}, Teams: []string{"support"}},
	)
	assert.Equal(t, []string{"billing", "en"}, f.info(t, "en-billing").Skills, "normalised")
	for _, tc := range []struct {
		req  Request
		want []string // acceptable agents; nil = ErrNoAgent
	}{
		{Request{RequiredSkills: []string{"en"}}, []string{"en", "en-billing"}},
		{Request{RequiredSkills: []string{"billing", "en"}}, []string{"en-billing"}},
		{Request{RequiredSkills: []string{"en", "billing", "en"}}, []string{"en-billing"}},
		{Request{RequiredSkills: []string{"de"}}, []string{"de-billing"}},
		{Request{RequiredSkills: []string{"fr"}}, nil},
		{Request{RequiredSkills: []string{"de", "en"}}, nil},
		{Request{Team: "sales"}, []string{"en"}},
		{Request{Team: "support", RequiredSkills: []string{"billing"}}, []string{"de-billing"}},
		{Request{Team: "sales", RequiredSkills: []string{"billing"}}, nil},
		{Request{Team: "nobody"}, nil},
		{Request{RequiredSkills: []string{"billing"}, Exclude: []string{"de-billing"}}, []string{"en-billing"}},
		{Request{RequiredSkills: []string{"billing"}, Exclude: []string{"de-billing", "en-billing"}}, nil},
	} {
		t.Run(fmt.Sprintf("%v/%s/%v", tc.req.RequiredSkills, tc.req.Team, tc.req.Exclude), func(t *testing.T) {
			tc.req.ConversationID = "c"
			id, err := f.Assign(tc.req)
			if tc.want == nil {
				assert.ErrorIs(t, err, ErrNoAgent)
				return
			}
			require.NoError(t, err)
			assert.Contains(t, tc.want, id)
			require.NoError(t, f.Release("c"))
		})
	}
}

func TestAssignSkillChangesReindex(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 0, "en"))
		_, err := f.Assign(Request{ConversationID: "c1", RequiredSkills: []string{"fr"}})
		require.ErrorIs(t, err, ErrNoAgent)
		require.NoError(t, f.SetSkills("a", []string{"en", "fr"}))
		ev := f.rec.takeCapacity()
		require.Len(t, ev, 1)
		assert.Equal(t, CapacityEvent{AgentID: "a", Free: -1, Reason: CapacitySkillsChanged}, ev[0])
		id, err := f.Assign(Request{ConversationID: "c1", RequiredSkills: []string{"fr"}})
		require.NoError(t, err)
		assert.Equal(t, "a", id)
		require.NoError(t, f.SetSkills("a", []string{"en"}))
		assert.Empty(t, f.rec.takeCapacity(), "losing a skill is no gain")
		_, err = f.Assign(Request{ConversationID: "c2", RequiredSkills: []string{"fr"}})
		require.ErrorIs(t, err, ErrNoAgent)
		require.NoError(t, f.SetTeams("a", []string{"vip"}))
		assert.Len(t, f.rec.takeCapacity(), 1)
		id, err = f.Assign(Request{ConversationID: "c2", Team: "vip"})
		require.NoError(t, err)
		assert.Equal(t, "a", id)
		assert.Equal(t, []string{"vip"}, f.info(t, "a").Teams)
	})
}

func TestAssignOptionalSkillRelaxation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{OptionalSkillWait: 45 * time.Second},
			online("generalist", 5, "en"),
			online("vip-desk", 1, "en", "vip"),
		)
		start := f.clock.Now()
		req := func(conv string) Request {
			return Request{ConversationID: conv, RequiredSkills: []string{"en"}, OptionalSkills: []string{"vip"}, WaitingSince: start}
		}
		id, err := f.Assign(req("c1"))
		require.NoError(t, err)
		assert.Equal(t, "vip-desk", id, "an agent with the optional skill comes first")

		// vip-desk is full: before the wait the optional skill is mandatory.
		_, err = f.Assign(req("c2"))
		require.ErrorIs(t, err, ErrNoAgent)
		var nae *NoAgentError
		require.ErrorAs(t, err, &nae)
		assert.Equal(t, start.Add(45*time.Second), nae.RelaxAt)

		f.clock.Advance(44 * time.Second)
		_, err = f.Assign(req("c2"))
		require.ErrorIs(t, err, ErrNoAgent)

		f.clock.Advance(time.Second)
		id, err = f.Assign(req("c2"))
		require.NoError(t, err)
		assert.Equal(t, "generalist", id, "after the wait the pool widens")

		// After relaxation agents with the optional skill are still preferred.
		require.NoError(t, f.Release("c1"))
		id, err = f.Assign(req("c3"))
		require.NoError(t, err)
		assert.Equal(t, "vip-desk", id)

		// Per-request overrides: negative never relaxes, positive replaces the config.
		r := req("c4")
		r.RelaxAfter = -1
		f.clock.Advance(time.Hour)
		_, err = f.Assign(r)
		require.ErrorIs(t, err, ErrNoAgent)
		assert.False(t, errors.As(err, &nae), "never relaxing has no RelaxAt")
		r.RelaxAfter = time.Nanosecond
		r.WaitingSince = time.Time{} // zero = now
		_, err = f.Assign(r)
		require.ErrorIs(t, err, ErrNoAgent, "waiting starts now, 1ns has not passed on the fake clock")
		r.WaitingSince = f.clock.Now().Add(-time.Nanosecond)
		id, err = f.Assign(r)
		require.NoError(t, err)
		assert.Equal(t, "generalist", id)
	})
}

func TestAssignManualAndForce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 1), Agent{ID: "off", Capacity: 1})
		assert.ErrorIs(t, f.AssignManual(Request{ConversationID: "c1"}, "nobody", false), ErrUnknownAgent)
		assert.ErrorIs(t, f.AssignManual(Request{ConversationID: ""}, "a", false), ErrInvalidRequest)
		require.NoError(t, f.AssignManual(Request{ConversationID: "c1"}, "a", false))
		require.NoError(t, f.AssignManual(Request{ConversationID: "c1"}, "a", false), "same agent is a no-op")
		assert.ErrorIs(t, f.AssignManual(Request{ConversationID: "c2"}, "a", false), ErrAtCapacity)
		assert.ErrorIs(t, f.AssignManual(Request{ConversationID: "c2"}, "off", false), ErrAgentOffline)
		require.NoError(t, f.AssignManual(Request{ConversationID: "c2"}, "a", true), "a supervisor may exceed capacity")
		require.NoError(t, f.AssignManual(Request{ConversationID: "c3"}, "off", true))
		inf := f.info(t, "a")
		assert.Equal(t, 2, inf.Active)
		assert.Equal(t, 0, inf.Free())
		assert.Equal(t, []string{"c3"}, f.info(t, "off").Conversations)

		// Moving an assigned conversation with AssignManual frees the old agent.
		require.NoError(t, f.UpsertAgent(online("b", 3)))
		f.rec.takeCapacity()
		require.NoError(t, f.AssignManual(Request{ConversationID: "c1"}, "b", false))
		assert.Equal(t, []string{"c2"}, f.info(t, "a").Conversations)
		assert.Empty(t, f.rec.takeCapacity(), "a is still at its capacity of 1: no gain")
		require.NoError(t, f.AssignManual(Request{ConversationID: "c2"}, "b", false))
		assert.Equal(t, []CapacityEvent{{AgentID: "a", Free: 1, Reason: CapacityReleased}}, f.rec.takeCapacity())
	})
}

func TestAssignTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 2), online("b", 1), Agent{ID: "off", Capacity: 1})
		_, err := f.Assign(Request{ConversationID: "c1", CustomerID: "u"})
		require.NoError(t, err)
		from, _ := f.Conversation("c1")

		assert.ErrorIs(t, f.Transfer("nope", "b"), ErrNotAssigned)
		assert.ErrorIs(t, f.Transfer("c1", "nobody"), ErrUnknownAgent)
		assert.ErrorIs(t, f.Transfer("c1", "off"), ErrAgentOffline)
		require.NoError(t, f.Transfer("c1", from.AgentID), "no-op")
		to := "b"
		if from.AgentID == "b" {
			to = "a"
		}
		require.NoError(t, f.Transfer("c1", to))
		ci, _ := f.Conversation("c1")
		now := f.clock.Now()
		assert.Equal(t, ConversationInfo{ConversationID: "c1", AgentID: to, CustomerID: "u", WaitingSince: now,
			Request: Request{ConversationID: "c1", CustomerID: "u", WaitingSince: now}}, ci, "the request is kept across the transfer")
		assert.Empty(t, f.info(t, from.AgentID).Conversations)
		ev := f.rec.takeCapacity()
		require.Len(t, ev, 1)
		assert.Equal(t, from.AgentID, ev[0].AgentID)
		assert.Equal(t, CapacityReleased, ev[0].Reason)

		require.NoError(t, f.AssignManual(Request{ConversationID: "c2"}, "b", true))
		require.NoError(t, f.AssignManual(Request{ConversationID: "c3"}, "a", false))
		if to == "a" {
			assert.ErrorIs(t, f.Transfer("c1", "b"), ErrAtCapacity)
		} else {
			assert.ErrorIs(t, f.Transfer("c3", "b"), ErrAtCapacity)
		}

		o, err := f.Offer(Request{ConversationID: "c9"})
		require.NoError(t, err)
		assert.ErrorIs(t, f.Transfer("c9", "a"), ErrNotAssigned, "offered, not assigned")
		_, err = f.Decline(o.ID)
		require.NoError(t, err)
	})
}

// TestCapacityEventsExactlyOnce walks through every kind of capacity gain
// and checks each produces exactly one event, and that non-gains produce none.
func TestCapacityEventsExactlyOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{OfferTimeout: time.Minute})
		step := func(name string, op func() error, want ...CapacityEvent) {
			t.Helper()
			require.NoError(t, op(), name)
			got := f.rec.takeCapacity()
			if len(want) == 0 {
				assert.Empty(t, got, name)
				return
			}
			assert.Equal(t, want, got, name)
		}
		assign := func(conv string) func() error {
			return func() error { _, err := f.Assign(Request{ConversationID: conv}); return err }
		}
		step("added offline", func() error { return f.UpsertAgent(Agent{ID: "a", Capacity: 2}) })
		step("comes online", func() error { return f.SetPresence("a", Online) }, CapacityEvent{"a", 2, CapacityOnline})
		step("online again", func() error { return f.SetPresence("a", Online) })
		step("assign", assign("c1"))
		step("assign", assign("c2"))
		step("release", func() error { return f.Release("c1") }, CapacityEvent{"a", 1, CapacityReleased})
		step("raise", func() error { return f.SetCapacity("a", 4) }, CapacityEvent{"a", 3, CapacityRaised})
		step("lower", func() error { return f.SetCapacity("a", 1) })
		step("raise to still full", func() error { return f.SetCapacity("a", 1) })
		step("busy", func() error { return f.SetPresence("a", Busy) })
		step("release while busy", func() error { return f.Release("c2") })
		step("back online", func() error { return f.SetPresence("a", Online) }, CapacityEvent{"a", 1, CapacityOnline})
		step("upsert unchanged", func() error { return f.UpsertAgent(Agent{ID: "a", Presence: Online, Capacity: 1}) })
		step("upsert online→busy + raise", func() error { return f.UpsertAgent(Agent{ID: "a", Presence: Busy, Capacity: 5}) })
		step("upsert busy→online + raise", func() error { return f.UpsertAgent(Agent{ID: "a", Presence: Online, Capacity: 6}) },
			CapacityEvent{"a", 6, CapacityOnline})
		step("new agent online", func() error { return f.UpsertAgent(online("b", 0)) }, CapacityEvent{"b", -1, CapacityOnline})
		step("unlimited→limited", func() error { return f.SetCapacity("b", 3) })
		step("limited→unlimited", func() error { return f.SetCapacity("b", 0) }, CapacityEvent{"b", -1, CapacityRaised})

		var o Offer
		step("offer", func() (err error) {
			o, err = f.Offer(Request{ConversationID: "c3", Exclude: []string{"b"}})
			return err
		})
		step("decline", func() error { _, err := f.Decline(o.ID); return err }, CapacityEvent{"a", 6, CapacityOfferEnded})
		step("offer", func() (err error) {
			o, err = f.Offer(Request{ConversationID: "c4", Exclude: []string{"b"}})
			return err
		})
		step("accept", func() error { return f.Accept(o.ID) })
		step("offer", func() (err error) {
			o, err = f.Offer(Request{ConversationID: "c5", Exclude: []string{"b"}})
			return err
		})
		step("expire", func() error { f.clock.Advance(time.Minute); return nil }, CapacityEvent{"a", 5, CapacityOfferEnded})
		step("remove", func() error { _, err := f.RemoveAgent("b"); return err })
		step("offline", func() error { return f.SetPresence("a", Offline) })
		assert.Len(t, f.rec.takeOffline(), 1)
	})
}

func TestAgentOfflineReportsConversations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 5), online("b", 5))
		require.NoError(t, f.AssignManual(Request{ConversationID: "c1"}, "a", false))
		require.NoError(t, f.AssignManual(Request{ConversationID: "c2"}, "a", false))
		require.NoError(t, f.AssignManual(Request{ConversationID: "c3"}, "b", false))
		o, err := f.Offer(Request{ConversationID: "c4", Exclude: []string{"b"}})
		require.NoError(t, err)

		require.NoError(t, f.SetPresence("a", Offline))
		off := f.rec.takeOffline()
		require.Len(t, off, 1)
		assert.Equal(t, []offlineIDs{{AgentID: "a", Conversations: []string{"c1", "c2"}, Since: f.clock.Now()}}, offlineReports(off))
		exp := f.rec.takeExpired()
		require.Len(t, exp, 1)
		assert.Equal(t, OfferAgentOffline, exp[0].Reason)
		assert.Equal(t, o.ID, exp[0].Offer.ID)
		assert.Equal(t, []string{"b", "a"}, exp[0].Retry.Exclude)
		assert.Empty(t, f.rec.takeCapacity())

		inf := f.info(t, "a")
		assert.Zero(t, inf.Active)
		assert.Zero(t, inf.Reserved)
		assert.Zero(t, inf.MissedOffers, "a cancel is not a miss")
		assert.Equal(t, f.clock.Now(), inf.OfflineSince)
		for _, c := range []string{"c1", "c2", "c4"} {
			_, ok := f.Conversation(c)
			assert.False(t, ok, c)
		}
		// The host requeues them; they can be assigned again.
		id, err := f.Assign(Request{ConversationID: "c1"})
		require.NoError(t, err)
		assert.Equal(t, "b", id)

		require.NoError(t, f.SetPresence("b", Offline))
		assert.Equal(t, []offlineIDs{{AgentID: "b", Conversations: []string{"c1", "c3"}, Since: f.clock.Now()}}, offlineReports(f.rec.takeOffline()))
		require.NoError(t, f.SetPresence("a", Online))
		require.NoError(t, f.SetPresence("a", Offline))
		assert.Empty(t, f.rec.takeOffline(), "no conversations, no report")
	})
}

func TestAgentOfflineGracePeriod(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{OfflineGrace: 2 * time.Minute}, online("a", 5))
		require.NoError(t, f.AssignManual(Request{ConversationID: "c1"}, "a", false))

		// Back within the grace period: nothing reported, conversations kept.
		require.NoError(t, f.SetPresence("a", Offline))
		f.clock.Advance(time.Minute)
		require.NoError(t, f.SetPresence("a", Online))
		f.clock.Advance(5 * time.Minute)
		assert.Empty(t, f.rec.takeOffline())
		assert.Equal(t, []string{"c1"}, f.info(t, "a").Conversations)
		assert.Zero(t, f.pendingTimers())

		// Offline past the grace period: reported once, at its end.
		require.NoError(t, f.SetPresence("a", Offline))
		since := f.clock.Now()
		require.NoError(t, f.AssignManual(Request{ConversationID: "c2"}, "a", true), "a supervisor assignment during grace is handed back too")
		f.clock.Advance(2*time.Minute - time.Nanosecond)
		assert.Empty(t, f.rec.takeOffline())
		f.clock.Advance(time.Nanosecond)
		assert.Equal(t, []offlineIDs{{AgentID: "a", Conversations: []string{"c1", "c2"}, Since: since}}, offlineReports(f.rec.takeOffline()))
		f.clock.Advance(time.Hour)
		assert.Empty(t, f.rec.takeOffline())
		assert.Empty(t, f.info(t, "a").Conversations)

		// Busy and away keep conversations.
		require.NoError(t, f.SetPresence("a", Online))
		require.NoError(t, f.AssignManual(Request{ConversationID: "c3"}, "a", false))
		require.NoError(t, f.SetPresence("a", Away))
		require.NoError(t, f.SetPresence("a", Busy))
		f.clock.Advance(time.Hour)
		assert.Empty(t, f.rec.takeOffline())

		// Removing during grace cancels the report.
		require.NoError(t, f.SetPresence("a", Offline))
		convs, err := f.RemoveAgent("a")
		require.NoError(t, err)
		assert.Equal(t, []string{"c3"}, convIDs(convs))
		f.clock.Advance(time.Hour)
		assert.Empty(t, f.rec.takeOffline())
	})
}

func TestRemoveAgent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 5), online("b", 5, "x"))
		require.NoError(t, f.AssignManual(Request{ConversationID: "c1"}, "a", false))
		o, err := f.Offer(Request{ConversationID: "c2", Exclude: []string{"b"}})
		require.NoError(t, err)
		convs, err := f.RemoveAgent("a")
		require.NoError(t, err)
		assert.Equal(t, []string{"c1"}, convIDs(convs))
		exp := f.rec.takeExpired()
		require.Len(t, exp, 1)
		assert.Equal(t, ExpiredOffer{Offer: o, Reason: OfferAgentRemoved, Retry: Request{ConversationID: "c2", Exclude: []string{"b", "a"}, WaitingSince: f.clock.Now()}}, exp[0])
		_, ok := f.Agent("a")
		assert.False(t, ok)
		assert.ErrorIs(t, f.Accept(o.ID), ErrOfferExpired)
		for range 3 {
			id, err := f.Assign(Request{ConversationID: "n"})
			require.NoError(t, err)
			assert.Equal(t, "b", id, "removed agents leave every index")
			require.NoError(t, f.Release("n"))
		}
		// Re-adding starts a fresh record.
		require.NoError(t, f.UpsertAgent(online("a", 1)))
		assert.Zero(t, f.info(t, "a").Active)
		assert.Len(t, f.Agents(), 2)
		assert.Equal(t, "a", f.Agents()[0].ID)
	})
}

func TestAssignerClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{OfflineGrace: time.Minute}, online("a", 5))
		o, err := f.Offer(Request{ConversationID: "c1"})
		require.NoError(t, err)
		require.NoError(t, f.AssignManual(Request{ConversationID: "c2"}, "a", false))
		require.NoError(t, f.SetPresence("a", Offline))
		require.NoError(t, f.Close())
		require.NoError(t, f.Close(), "idempotent")
		f.clock.Advance(time.Hour)
		assert.Empty(t, f.rec.takeOffline())
		assert.Zero(t, f.pendingTimers())
		_, err = f.Assign(Request{ConversationID: "x"})
		assert.ErrorIs(t, err, ErrAssignerClosed)
		_, err = f.Offer(Request{ConversationID: "x"})
		assert.ErrorIs(t, err, ErrAssignerClosed)
		for _, err := range []error{
			f.Accept(o.ID), f.Release("c2"), f.AssignManual(Request{ConversationID: "x"}, "a", true), f.Transfer("c2", "a"),
			f.UpsertAgent(online("b", 1)), f.SetPresence("a", Online), f.SetCapacity("a", 1),
		} {
			assert.ErrorIs(t, err, ErrAssignerClosed)
		}
		_, err = f.RemoveAgent("a")
		assert.ErrorIs(t, err, ErrAssignerClosed)
		_, err = f.Decline(o.ID)
		assert.ErrorIs(t, err, ErrAssignerClosed)
		assert.Equal(t, 1, f.Stats().Agents, "reads still work")
	})
}

// TestAssignMatchesBruteForce drives random operations and checks after each
// that the indexed pick equals a linear scan over all agents by the same
// strategy, with random skills, teams and exclusions.
func TestAssignMatchesBruteForce(t *testing.T) {
	for _, strat := range []Strategy{LeastLoaded(), RoundRobin(), LoadRotation()} {
		t.Run(strat.Name(), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			f := newAssignFixture(t, AssignerConfig{Strategy: strat, MaxSkillViews: 6})
			skills := []string{"a", "b", "c", "d"}
			teams := []string{"t1", "t2"}
			subset := func(from []string, p float64) []string {
				var out []string
				for _, s := range from {
					if rng.Float64() < p {
						out = append(out, s)
					}
				}
				return out
			}
			const nAgents = 40
			agentID := func(i int) string { return fmt.Sprintf("ag%02d", i) }
			for i := range nAgents {
				require.NoError(t, f.UpsertAgent(Agent{ID: agentID(i), Presence: Presence(rng.IntN(4)),
					Capacity: rng.IntN(4), Skills: subset(skills, 0.5), Teams: subset(teams, 0.5)}))
			}
			var held []string
			nextConv := 0
			for step := range 4000 {
				switch op := rng.IntN(10); {
				case op < 5:
					req := Request{ConversationID: fmt.Sprint("c", nextConv), RequiredSkills: subset(skills, 0.3)}
					if rng.IntN(3) == 0 {
						req.Team = teams[rng.IntN(2)]
					}
					for range rng.IntN(4) {
						req.Exclude = append(req.Exclude, agentID(rng.IntN(nAgents)))
					}
					want := assignBruteForce(f.Assigner, strat, &req)
					require.Equal(t, want != "", f.CanServe(req), "CanServe agrees with the pick, step %d", step)
					got, err := f.Assign(req)
					if want == "" {
						require.ErrorIs(t, err, ErrNoAgent, "step %d", step)
						continue
					}
					require.NoError(t, err, "step %d", step)
					require.Equal(t, want, got, "step %d %+v", step, req)
					held = append(held, req.ConversationID)
					nextConv++
				case op < 8 && len(held) > 0:
					i := rng.IntN(len(held))
					_ = f.Release(held[i]) // may have been handed back by an offline agent
					held = slices.Delete(held, i, i+1)
				case op < 9:
					require.NoError(t, f.SetPresence(agentID(rng.IntN(nAgents)), Presence(rng.IntN(4))))
				default:
					id := agentID(rng.IntN(nAgents))
					if rng.IntN(2) == 0 {
						require.NoError(t, f.SetCapacity(id, rng.IntN(4)))
					} else {
						require.NoError(t, f.SetSkills(id, subset(skills, 0.5)))
					}
				}
			}
			assert.LessOrEqual(t, f.ix.nviews, 6, "views are bounded")
			assert.Greater(t, f.ix.created, uint64(6), "views were evicted and rebuilt")
		})
	}
}

// assignBruteForce is the reference: scan every agent.
func assignBruteForce(a *Assigner, strat Strategy, req *Request) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var best *agentState
	for _, g := range a.agents {
		if !g.available() || !g.inTeam(req.Team) || !g.hasSkills(req.RequiredSkills) || slices.Contains(req.Exclude, g.load.ID) {
			continue
		}
		if best == nil || strat.Less(&g.load, &best.load) {
			best = g
		}
	}
	if best == nil {
		return ""
	}
	return best.load.ID
}

func TestAssignMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		o, err := observe.New(observe.Config{Registerer: reg, DisableRuntimeCollectors: true})
		require.NoError(t, err)
		f := newAssignFixture(t, AssignerConfig{Observer: o, Strategy: Sticky(StickyConfig{}), OfferTimeout: time.Second},
			online("a", 3), online("b", 3), Agent{ID: "c", Presence: Away})
		_, err = f.Assign(Request{ConversationID: "c1", CustomerID: "u1"})
		require.NoError(t, err)
		require.NoError(t, f.Release("c1"))
		_, err = f.Assign(Request{ConversationID: "c2", CustomerID: "u1"})
		require.NoError(t, err)
		require.NoError(t, f.AssignManual(Request{ConversationID: "c3"}, "c", true))
		require.NoError(t, f.Transfer("c3", "a"))
		_, err = f.Assign(Request{ConversationID: "c4", RequiredSkills: []string{"zz"}})
		require.ErrorIs(t, err, ErrNoAgent)
		o1, err := f.Offer(Request{ConversationID: "c5"})
		require.NoError(t, err)
		require.NoError(t, f.Accept(o1.ID))
		o2, err := f.Offer(Request{ConversationID: "c6"})
		require.NoError(t, err)
		_, err = f.Decline(o2.ID)
		require.NoError(t, err)
		_, err = f.Offer(Request{ConversationID: "c7"})
		require.NoError(t, err)
		f.clock.Advance(time.Second)
		_, err = f.Offer(Request{ConversationID: "c8"})
		require.NoError(t, err)
		require.NoError(t, f.Release("c8"))

		metric := func(name string, label ...string) float64 {
			t.Helper()
			mfs, err := reg.Gather()
			require.NoError(t, err)
			for _, mf := range mfs {
				if mf.GetName() != "switchboard_router_"+name {
					continue
				}
				for _, m := range mf.GetMetric() {
					if len(label) > 0 && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label[0]) {
						continue
					}
					switch {
					case m.Counter != nil:
						return m.GetCounter().GetValue()
					case m.Gauge != nil:
						return m.GetGauge().GetValue()
					}
				}
			}
			t.Fatalf("metric %s%v not found", name, label)
			return 0
		}
		assert.Equal(t, 2.0, metric("assign_total", "least_loaded"), "c1 and the accepted offer c5")
		assert.Equal(t, 1.0, metric("assign_total", "sticky"))
		assert.Equal(t, 1.0, metric("assign_total", "manual"))
		assert.Equal(t, 1.0, metric("assign_total", "transfer"))
		assert.Equal(t, 1.0, metric("assign_no_agent_total"))
		for ev, want := range map[string]float64{"made": 4, "accepted": 1, "declined": 1, "expired": 1, "canceled": 1} {
			assert.Equal(t, want, metric("offers_total", ev), ev)
		}
		assert.Equal(t, 2.0, metric("agents_by_presence", "online"))
		assert.Equal(t, 1.0, metric("agents_by_presence", "away"))
		assert.Equal(t, 3.0, metric("agents_capacity_in_use"), "c2, c3, c5")
		assert.Equal(t, 6.0, metric("agents_capacity_online"))
		require.NoError(t, f.SetPresence("b", Offline))
		require.NoError(t, f.SetPresence("a", Offline))
		assert.Equal(t, 0.0, metric("agents_capacity_in_use"))
		assert.Equal(t, 0.0, metric("agents_capacity_online"))
		assert.Equal(t, 3.0, metric("agents_offline_conversations_total"))
		assert.Equal(t, 2.0, metric("agents_by_presence", "offline"))
		_, err = f.RemoveAgent("c")
		require.NoError(t, err)
		assert.Equal(t, 0.0, metric("agents_by_presence", "away"))
		assert.Positive(t, metric("agents_capacity_events_total"))

		mfs, err := reg.Gather()
		require.NoError(t, err)
		var names []string
		for _, mf := range mfs {
			names = append(names, mf.GetName())
		}
		assert.Contains(t, names, "switchboard_router_assign_duration_seconds")
		for _, n := range names {
			assert.True(t, strings.HasPrefix(n, "switchboard_router_assign_") || strings.HasPrefix(n, "switchboard_router_agents_") ||
				strings.HasPrefix(n, "switchboard_router_offers_") || strings.HasPrefix(n, "switchboard_log_"), n)
		}
	})
}

// CanServe answers "would Assign find an agent now" without claiming
// anything; with only skills and team it answers for a whole class.
func TestCanServe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
		require.NoError(t, err)
		f := newAssignFixture(t, AssignerConfig{Observer: o},
			online("ana", 1, "billing"), online("bo", 2, "billing", "french"),
			Agent{ID: "cy", Presence: Busy, Capacity: 3, Skills: []string{"japanese"}})
		billing := Request{RequiredSkills: []string{"billing"}}
		for _, tc := range []struct {
			req  Request
			want bool
		}{
			{Request{}, true},
			{billing, true},
			{Request{RequiredSkills: []string{"french", "billing"}}, true},
			{Request{RequiredSkills: []string{"japanese"}}, false}, // cy is busy
			{Request{RequiredSkills: []string{"billing"}, Exclude: []string{"ana", "bo"}}, false},
			{Request{RequiredSkills: []string{"billing"}, Team: "emea"}, false},
			{Request{RequiredSkills: []string{"billing"}, OptionalSkills: []string{"german"}, RelaxAfter: -1}, false},
			{Request{RequiredSkills: []string{"billing"}, OptionalSkills: []string{"german"},
				WaitingSince: time.Now().Add(-time.Hour)}, true}, // relaxed
		} {
			assert.Equal(t, tc.want, f.CanServe(tc.req), "%+v", tc.req)
		}
		before := f.Stats()
		assert.True(t, f.CanServe(billing))
		assert.Equal(t, before, f.Stats(), "CanServe claims nothing")

		// Fill every billing slot: the class is now unservable.
		for i := range 3 {
			_, err := f.Assign(Request{ConversationID: fmt.Sprint("c", i), RequiredSkills: []string{"billing"}})
			require.NoError(t, err)
		}
		assert.False(t, f.CanServe(billing))
		assert.False(t, f.CanServe(Request{RequiredSkills: []string{"japanese"}}))
		require.NoError(t, f.SetPresence("cy", Online))
		assert.True(t, f.CanServe(Request{RequiredSkills: []string{"japanese"}}))
		assert.Equal(t, 0.0, assignCounterValue(t, o, "switchboard_router_assign_no_agent_total"),
			"CanServe is not a failed assignment")
		require.NoError(t, f.Close())
		assert.False(t, f.CanServe(Request{}))
	})
}

func assignCounterValue(t *testing.T, o *observe.Observer, name string) float64 {
	t.Helper()
	mfs, err := o.Gatherer().Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}

func TestRequestClass(t *testing.T) {
	for _, tc := range []struct {
		req  Request
		want string
	}{
		{Request{}, ""},
		{Request{RequiredSkills: []string{"billing"}}, "billing"},
		{Request{RequiredSkills: []string{"french", "", "billing", "french"}}, "billing,french"},
		{Request{RequiredSkills: []string{"billing"}, Team: "emea"}, "billing@emea"},
		{Request{Team: "emea"}, "@emea"},
		// Optional skills, exclusions and the customer do not change the class.
		{Request{RequiredSkills: []string{"b", "a"}, OptionalSkills: []string{"c"}, Exclude: []string{"x"}, CustomerID: "u"}, "a,b"},
	} {
		assert.Equal(t, tc.want, tc.req.Class(), "%+v", tc.req)
	}
}
