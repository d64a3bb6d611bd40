package desk

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
)

// These tests pin the core's timers to the instant (see bubble_test.go):
// the default 30s, 60s and minutes-long targets cost no real time. "Nothing
// happened" means nothing was published by the time every goroutine of the
// bubble was blocked, not "nothing within a few hundred milliseconds".

// ms is the resolution the tests step in (the protocol's timestamps are
// Unix milliseconds).
const ms = time.Millisecond

// An offer expires exactly OfferTimeout after it was made, not a
// millisecond earlier; it then goes to another agent, and never back to an
// agent who let it expire — even when that agent is the only one free. The
// expired offer cannot be accepted; an offer accepted in its last
// millisecond holds.
func TestOfferExpiresExactlyAtOfferTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{})
		timeout := r.cfg.OfferTimeout
		r.agent("a1", 1)
		r.customer("c", auth.TierStandard)
		conv := r.start("c", "anyone?")
		t0 := time.Now()
		o1 := r.takeOne("a1", protocol.TypeOffer)
		assert.Equal(t, conv, o1.Conv)
		assert.Equal(t, t0.Add(timeout).UnixMilli(), o1.Expires, "the offer says when it expires")
		// Two more agents come online while a1 holds the offer.
		r.agent("a2", 1)
		r.agent("a3", 1)
		agents := []string{"a1", "a2", "a3"}
		r.quiet(agents...)

		r.at(t0, timeout-ms)
		r.quiet(agents...)
		r.at(t0, timeout)
		ex := r.takeOne("a1", protocol.TypeOfferExpired)
		assert.Equal(t, conv, ex.Conv)
		assert.Equal(t, o1.Offer, ex.Offer)
		holder, o := r.onlyOffer(agents...)
		assert.NotEqual(t, "a1", holder)
		assert.NotEqual(t, o1.Offer, o.Offer)
		assert.Equal(t, conv, o.Conv)
		assert.Equal(t, time.Now().Add(timeout).UnixMilli(), o.Expires)
		r.quiet(agents...)

		// The expired offer can no longer be accepted.
		r.send("a1", protocol.Envelope{Type: protocol.TypeAccept, Conv: conv, Offer: o1.Offer})
		e := r.takeOne("a1", protocol.TypeError)
		assert.Equal(t, protocol.ErrCodeOfferGone, e.Code)
		r.quiet(agents...)

		// The second agent lets it expire too: it goes to the third, exactly
		// at its own timeout.
		t1 := time.Now()
		r.at(t1, timeout-ms)
		r.quiet(agents...)
		r.at(t1, timeout)
		assert.Equal(t, o.Offer, r.takeOne(holder, protocol.TypeOfferExpired).Offer)
		last, o3 := r.onlyOffer(agents...)
		assert.NotContains(t, []string{"a1", holder}, last)
		r.quiet(agents...)

		// The third lets it expire: every online agent has missed it, so it
		// waits — a1 and the others are free, and are never offered it
		// again, however long it waits.
		t2 := time.Now()
		r.at(t2, timeout-ms)
		r.quiet(agents...)
		r.at(t2, timeout)
		assert.Equal(t, o3.Offer, r.takeOne(last, protocol.TypeOfferExpired).Offer)
		r.quiet(agents...)
		for range 10 {
			r.advance(timeout)
			r.quiet(agents...)
		}
		assert.Empty(t, r.take("c", protocol.TypeAssigned, protocol.TypeResolved), "still waiting")

		// A new agent gets it and accepts in the offer's last millisecond:
		// the acceptance holds, nothing expires at the deadline.
		r.agent("a4", 1)
		o4 := r.takeOne("a4", protocol.TypeOffer)
		assert.Equal(t, conv, o4.Conv)
		t3 := time.Now()
		r.at(t3, timeout-ms)
		r.accept("a4", o4)
		as := r.takeOne("c", protocol.TypeAssigned)
		assert.Equal(t, "a4", as.Agent)
		r.at(t3, timeout)
		r.quiet(append(agents, "a4")...)
		r.advance(10 * timeout)
		r.quiet(append(agents, "a4")...)
	})
}

// slaConfig has warnings at 3/4 of each target, so that the warning time
// is exact in nanoseconds (with the default 0.8, 1-0.8 is not exact in
// binary floating point and the warning lands a nanosecond after 80%). VIP
// conversations may wait all day: no queue deadline event meanwhile.
func slaConfig() Config {
	cfg := Config{SLAWarnAt: 0.75}
	cfg.Tiers[0].MaxWait = 24 * time.Hour
	cfg.Tiers[0].FirstResponse = 40 * time.Second // vip: warning at 30s, breach at 40s
	cfg.Tiers[1].NextResponse = 80 * time.Second  // premium: warning at 60s, breach at 80s
	return cfg
}

// The first-response clock of a VIP conversation starts when it is opened:
// the warning reaches the supervisors exactly at 3/4 of the target, the
// breach exactly at the target, each once, whether the conversation waits
// in the queue or an agent holds it. The agent's reply before either
// cancels what has not fired yet: nothing at or after its time.
func TestFirstResponseSLAFiresAtDueTimes(t *testing.T) {
	const warn, due = 30 * time.Second, 40 * time.Second
	checkpoints := []time.Duration{warn - ms, warn, due - ms, due, due + time.Hour}
	for _, tc := range []struct {
		name    string
		agent   string        // who accepted it ("": it waits in the queue)
		replyAt time.Duration // the agent replies after the check at this time; 0: never
		want    []string      // the SLA state published at each checkpoint
	}{
		{"waiting", "", 0, []string{"", "warning", "", "breached", ""}},
		{"unanswered", "a", 0, []string{"", "warning", "", "breached", ""}},
		{"answered before the warning", "a", warn - ms, []string{"", "", "", "", ""}},
		{"answered before the breach", "a", due - ms, []string{"", "warning", "", "", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRig(t, slaConfig())
				if tc.agent != "" {
					r.agent(tc.agent, 1)
				}
				r.customer("v", auth.TierVIP)
				conv := r.start("v", "urgent")
				t0 := time.Now()
				if tc.agent != "" {
					r.accept(tc.agent, r.takeOne(tc.agent, protocol.TypeOffer))
				}
				for i, cp := range checkpoints {
					r.at(t0, cp)
					var got []string
					for _, e := range r.take(topicSup) {
						got = append(got, e.State)
						assert.Equal(t, protocol.Envelope{Type: protocol.TypeSLA, Conv: conv, Tier: "vip", Kind: "first_response", State: e.State,
							Due: t0.Add(due).UnixMilli(), Agent: tc.agent, Customer: "v", Name: "v", TS: time.Now().UnixMilli()}, e)
					}
					if tc.want[i] == "" {
						assert.Empty(t, got, "at %v", cp)
					} else {
						assert.Equal(t, []string{tc.want[i]}, got, "at %v", cp)
					}
					if cp == tc.replyAt {
						r.say(tc.agent, conv, "on it")
						r.quiet(topicSup)
					}
				}
			})
		})
	}
}

// The next-response clock starts with the customer's first message after
// an agent's reply (later messages do not move it) and fires its warning
// and breach at their exact times; the first-response clock stopped with
// the first reply. A reply in time stops the next clock, and the customer's
// next message starts a fresh one.
func TestNextResponseSLAFiresAtDueTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const warn, due = 60 * time.Second, 80 * time.Second
		r := newRig(t, slaConfig())
		r.agent("a", 1)
		r.customer("p", auth.TierPremium)
		conv := r.start("p", "q1")
		t0 := time.Now()
		r.accept("a", r.takeOne("a", protocol.TypeOffer))
		r.at(t0, 10*time.Second)
		r.say("a", conv, "answer 1") // the first response: its clock stops

		r.at(t0, 20*time.Second)
		t1 := time.Now()
		r.say("p", conv, "follow-up") // the next-response clock starts
		r.at(t1, 30*time.Second)
		r.say("p", conv, "hello?") // and does not restart
		r.at(t0, time.Minute)
		r.quiet(topicSup) // no first-response event: answered in time

		r.at(t1, warn-ms)
		r.quiet(topicSup)
		r.at(t1, warn)
		evs := r.take(topicSup)
		require.Len(t, evs, 1)
		assert.Equal(t, protocol.Envelope{Type: protocol.TypeSLA, Conv: conv, Tier: "premium", Kind: "next_response", State: "warning",
			Due: t1.Add(due).UnixMilli(), Agent: "a", Customer: "p", Name: "p", TS: time.Now().UnixMilli()}, evs[0])
		r.at(t1, due-ms)
		r.quiet(topicSup)
		r.at(t1, due)
		evs = r.take(topicSup)
		require.Len(t, evs, 1)
		assert.Equal(t, protocol.Envelope{Type: protocol.TypeSLA, Conv: conv, Tier: "premium", Kind: "next_response", State: "breached",
			Due: t1.Add(due).UnixMilli(), Agent: "a", Customer: "p", Name: "p", TS: time.Now().UnixMilli()}, evs[0])
		r.advance(time.Hour)
		r.quiet(topicSup)

		// Answered late: the clock stops. The next customer message starts a
		// new one, answered a millisecond before its warning: nothing fires.
		r.say("a", conv, "answer 2")
		r.advance(time.Minute)
		t2 := time.Now()
		r.say("p", conv, "one more")
		r.at(t2, warn-ms)
		r.say("a", conv, "answer 3")
		r.at(t2, warn)
		r.at(t2, due)
		r.advance(time.Hour)
		r.quiet(topicSup)
	})
}

// An agent who disconnects and comes back within AgentGrace keeps the
// conversation (however long after the deadline one looks); one who does
// not come back loses it exactly at the grace deadline: it goes back to the
// front of its tier, ahead of a conversation that arrived later.
func TestAgentGraceKeepsOrRequeuesAtDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, Config{})
		grace := r.cfg.AgentGrace
		r.customer("c", auth.TierStandard)
		conv := r.start("c", "help")
		r.agent("a1", 1)
		r.accept("a1", r.takeOne("a1", protocol.TypeOffer))
		assert.Equal(t, "a1", r.takeOne("c", protocol.TypeAssigned).Agent)
		r.take("c") // the ack of its message, its positions

		// Back a millisecond before the deadline: a1 keeps it.
		r.disconnect("a1")
		t1 := time.Now()
		r.at(t1, grace-ms)
		r.quiet("a1", "c")
		hello := r.connect("a1", auth.RoleAgent, "", 1)
		require.Len(t, hello.Convs, 1)
		assert.Equal(t, conv, hello.Convs[0].Conv)
		assert.Equal(t, "active", hello.Convs[0].State)
		assert.Equal(t, "a1", hello.Convs[0].Agent)
		r.at(t1, grace)
		r.advance(10 * grace)
		r.quiet("a1", "c")

		// Another customer waits (a1 is at capacity); then a1 leaves for good.
		r.customer("l", auth.TierStandard)
		lateConv := r.start("l", "me too")
		r.disconnect("a1")
		t2 := time.Now()
		r.at(t2, grace-ms)
		r.quiet("a1", "c")
		r.at(t2, grace)
		for _, u := range []string{"a1", "c"} {
			tr := r.takeOne(u, protocol.TypeTransferred)
			assert.Equal(t, conv, tr.Conv)
			assert.Equal(t, "queued", tr.State)
			assert.Equal(t, "a1", tr.From)
		}

		// At the front of its tier, ahead of the one that arrived later.
		r.agent("a2", 1)
		o := r.takeOne("a2", protocol.TypeOffer)
		assert.Equal(t, conv, o.Conv)
		r.accept("a2", o)
		r.send("a2", protocol.Envelope{Type: protocol.TypeResolve, Conv: conv})
		assert.Equal(t, lateConv, r.takeOne("a2", protocol.TypeOffer).Conv)
	})
}

// An agent at capacity is offered nothing more, however long the backlog
// waits; finishing one conversation offers exactly the next one, in arrival
// order.
func TestCapacityHoldsWhileBacklogWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := Config{}
		cfg.Tiers[2].MaxWait = 24 * time.Hour // the backlog waits; no deadline action meanwhile
		r := newRig(t, cfg)
		var convs []string
		for _, c := range []string{"q0", "q1", "q2", "q3", "q4"} {
			r.customer(c, auth.TierStandard)
			convs = append(convs, r.start(c, "help"))
		}
		r.agent("ag", 0) // 0: the default capacity, 3
		var offered []string
		for _, o := range r.take("ag", protocol.TypeOffer) {
			offered = append(offered, o.Conv)
			r.accept("ag", o)
		}
		assert.Equal(t, convs[:3], offered, "up to capacity, in arrival order")
		r.quiet("ag")
		for range 10 {
			r.advance(r.cfg.OfferTimeout)
			r.noneOf(protocol.TypeOffer, "ag")
		}
		r.send("ag", protocol.Envelope{Type: protocol.TypeResolve, Conv: convs[0]})
		o := r.takeOne("ag", protocol.TypeOffer)
		assert.Equal(t, convs[3], o.Conv)
		r.accept("ag", o)
		r.advance(10 * r.cfg.OfferTimeout)
		r.noneOf(protocol.TypeOffer, "ag")
	})
}
