package router

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOfferAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 1))
		o, err := f.Offer(Request{ConversationID: "c1", CustomerID: "u"})
		require.NoError(t, err)
		assert.Equal(t, "a", o.AgentID)
		assert.Equal(t, "c1", o.ConversationID)
		assert.Equal(t, f.clock.Now(), o.Created)
		assert.Equal(t, f.clock.Now().Add(DefaultOfferTimeout), o.ExpiresAt)
		assert.NotEmpty(t, o.ID)

		inf := f.info(t, "a")
		assert.Equal(t, 1, inf.Reserved)
		assert.Zero(t, inf.Active)
		assert.Empty(t, inf.Conversations)
		ci, ok := f.Conversation("c1")
		require.True(t, ok)
		assert.Equal(t, o.ID, ci.OfferID)
		assert.Equal(t, 1, f.Stats().PendingOffers)

		_, err = f.Assign(Request{ConversationID: "c2"})
		assert.ErrorIs(t, err, ErrNoAgent, "the offer reserves the only slot")
		_, err = f.Offer(Request{ConversationID: "c1"})
		assert.ErrorIs(t, err, ErrAlreadyAssigned)

		require.NoError(t, f.Accept(o.ID))
		inf = f.info(t, "a")
		assert.Equal(t, 1, inf.Active)
		assert.Zero(t, inf.Reserved)
		assert.Equal(t, []string{"c1"}, inf.Conversations)
		assert.ErrorIs(t, f.Accept(o.ID), ErrOfferExpired, "accepting twice")
		assert.ErrorIs(t, f.Accept("nonsense"), ErrUnknownOffer)
		assert.ErrorIs(t, f.Accept(f.prefix+"-999"), ErrUnknownOffer, "never issued")
		f.clock.Advance(time.Hour)
		assert.Empty(t, f.rec.takeExpired(), "the accepted offer's timer was stopped")
		assert.Zero(t, f.pendingTimers())
	})
}

func TestOfferExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{OfferTimeout: 15 * time.Second}, online("a", 1), online("b", 1))
		req := Request{ConversationID: "c1", RequiredSkills: []string{}, Exclude: []string{"z"}, CustomerID: "u"}
		o, err := f.Offer(req)
		require.NoError(t, err)
		require.Equal(t, "a", o.AgentID)

		f.clock.Advance(15*time.Second - time.Nanosecond)
		assert.Empty(t, f.rec.takeExpired())
		f.clock.Advance(time.Nanosecond)
		exp := f.rec.takeExpired()
		require.Len(t, exp, 1)
		assert.Equal(t, o, exp[0].Offer)
		assert.Equal(t, OfferTimedOut, exp[0].Reason)
		assert.Equal(t, []string{"z", "a"}, exp[0].Retry.Exclude)
		assert.Equal(t, []string{"z"}, req.Exclude, "the caller's slice is untouched")
		assert.Equal(t, "c1", exp[0].Retry.ConversationID)
		assert.Equal(t, []CapacityEvent{{AgentID: "a", Free: 1, Reason: CapacityOfferEnded}}, f.rec.takeCapacity())

		inf := f.info(t, "a")
		assert.Zero(t, inf.Reserved)
		assert.Equal(t, 1, inf.MissedOffers)
		assert.Equal(t, 1, inf.ConsecutiveMisses)
		assert.ErrorIs(t, f.Accept(o.ID), ErrOfferExpired)
		_, ok := f.Conversation("c1")
		assert.False(t, ok)

		// The host offers to the next agent, excluding the one who missed it.
		o2, err := f.Offer(exp[0].Retry)
		require.NoError(t, err)
		assert.Equal(t, "b", o2.AgentID)
		f.clock.Advance(15 * time.Second)
		exp = f.rec.takeExpired()
		require.Len(t, exp, 1)
		assert.Equal(t, []string{"z", "a", "b"}, exp[0].Retry.Exclude)
		_, err = f.Offer(exp[0].Retry)
		assert.ErrorIs(t, err, ErrNoAgent, "everyone missed it")

		// Accepting resets the consecutive count, not the total.
		o3, err := f.Offer(Request{ConversationID: "c2", Exclude: []string{"b"}})
		require.NoError(t, err)
		require.NoError(t, f.Accept(o3.ID))
		inf = f.info(t, "a")
		assert.Equal(t, 1, inf.MissedOffers)
		assert.Zero(t, inf.ConsecutiveMisses)
	})
}

func TestOfferDecline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 1), online("b", 1))
		o, err := f.Offer(Request{ConversationID: "c1", OptionalSkills: []string{"x"}, RelaxAfter: time.Nanosecond,
			WaitingSince: f.clock.Now().Add(-time.Second)})
		require.NoError(t, err)
		retry, err := f.Decline(o.ID)
		require.NoError(t, err)
		assert.Equal(t, []string{"a"}, retry.Exclude)
		assert.Equal(t, []string{"x"}, retry.OptionalSkills)
		assert.Equal(t, 1, f.info(t, "a").DeclinedOffers)
		assert.Zero(t, f.info(t, "a").MissedOffers)
		assert.Equal(t, []CapacityEvent{{AgentID: "a", Free: 1, Reason: CapacityOfferEnded}}, f.rec.takeCapacity())
		_, err = f.Decline(o.ID)
		assert.ErrorIs(t, err, ErrOfferExpired)
		o2, err := f.Offer(retry)
		require.NoError(t, err)
		assert.Equal(t, "b", o2.AgentID)
		f.clock.Advance(time.Hour)
		assert.Len(t, f.rec.takeExpired(), 1, "only the second offer expired; the declined one reported nothing")
	})
}

func TestOfferReleaseAndManualCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{}, online("a", 2), online("b", 2))
		o, err := f.Offer(Request{ConversationID: "c1"})
		require.NoError(t, err)
		require.NoError(t, f.Release("c1"), "the customer left while offered")
		assert.ErrorIs(t, f.Accept(o.ID), ErrOfferExpired)
		assert.Zero(t, f.info(t, "a").Reserved)

		o, err = f.Offer(Request{ConversationID: "c2"})
		require.NoError(t, err)
		other := "a"
		if o.AgentID == "a" {
			other = "b"
		}
		f.rec.takeCapacity()
		require.NoError(t, f.AssignManual(Request{ConversationID: "c2"}, other, false), "a supervisor overrides the offer")
		assert.Equal(t, []CapacityEvent{{AgentID: o.AgentID, Free: 2, Reason: CapacityOfferEnded}}, f.rec.takeCapacity())
		assert.Empty(t, f.rec.takeExpired(), "the host made the change: no expiry callback")
		assert.ErrorIs(t, f.Accept(o.ID), ErrOfferExpired)
		assert.Zero(t, f.info(t, o.AgentID).Reserved)
		assert.Equal(t, []string{"c2"}, f.info(t, other).Conversations)

		o, err = f.Offer(Request{ConversationID: "c3"})
		require.NoError(t, err)
		require.NoError(t, f.AssignManual(Request{ConversationID: "c3"}, o.AgentID, false), "assigning to the offered agent accepts")
		assert.Equal(t, 0, f.info(t, o.AgentID).Reserved)
		assert.Contains(t, f.info(t, o.AgentID).Conversations, "c3")
		f.clock.Advance(time.Hour)
		assert.Empty(t, f.rec.takeExpired())
	})
}

func TestOfferAwayAfterMisses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newAssignFixture(t, AssignerConfig{AwayAfterMisses: 2, OfferTimeout: time.Second}, online("a", 3))
		for i, conv := range []string{"c1", "c2"} {
			_, err := f.Offer(Request{ConversationID: conv})
			require.NoError(t, err)
			f.clock.Advance(time.Second)
			if i == 0 {
				assert.Equal(t, Online, f.info(t, "a").Presence)
				assert.Len(t, f.rec.takeCapacity(), 1)
			}
		}
		assert.Equal(t, Away, f.info(t, "a").Presence, "two misses in a row")
		assert.Empty(t, f.rec.takeCapacity(), "an away agent gains no assignable capacity")
		_, err := f.Offer(Request{ConversationID: "c3"})
		assert.ErrorIs(t, err, ErrNoAgent)
	})
}

// TestOfferExpiryRealTimers uses the system clock with a short timeout.
func TestOfferExpiryRealTimers(t *testing.T) {
	expired := make(chan ExpiredOffer, 1)
	a, err := NewAssigner(AssignerConfig{OfferTimeout: 20 * time.Millisecond, OnOfferExpired: func(e ExpiredOffer) { expired <- e }})
	require.NoError(t, err)
	defer a.Close()
	require.NoError(t, a.UpsertAgent(online("a", 1)))
	o, err := a.Offer(Request{ConversationID: "c1"})
	require.NoError(t, err)
	select {
	case e := <-expired:
		assert.Equal(t, o.ID, e.Offer.ID)
	case <-time.After(10 * time.Second):
		t.Fatal("offer did not expire")
	}
	inf, _ := a.Agent("a")
	assert.Equal(t, 1, inf.MissedOffers)
	assert.Zero(t, inf.Reserved)
}

// TestOfferAcceptRacesExpiry runs Accept against the expiry timer many times:
// exactly one of them wins each time and the books stay balanced.
func TestOfferAcceptRacesExpiry(t *testing.T) {
	var mu sync.Mutex
	expiredN := 0
	a, err := NewAssigner(AssignerConfig{OfferTimeout: time.Millisecond, OnOfferExpired: func(ExpiredOffer) {
		mu.Lock()
		expiredN++
		mu.Unlock()
	}})
	require.NoError(t, err)
	require.NoError(t, a.UpsertAgent(online("a", 1)))
	accepted := 0
	for i := range 200 {
		o, err := a.Offer(Request{ConversationID: "c"})
		require.NoError(t, err)
		time.Sleep(time.Duration(i%4) * 400 * time.Microsecond) // jitter around the 1 ms timeout, not a wait for an event
		if err := a.Accept(o.ID); err == nil {
			accepted++
			require.NoError(t, a.Release("c"))
		} else {
			require.ErrorIs(t, err, ErrOfferExpired)
			require.Eventually(t, func() bool { _, ok := a.Conversation("c"); return !ok }, 5*time.Second, time.Millisecond)
		}
	}
	require.NoError(t, a.Shutdown(context.Background()), "delivers every expiry already queued (Close would drop them)")
	inf, _ := a.Agent("a")
	assert.Zero(t, inf.Reserved)
	assert.Zero(t, inf.Active)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 200, accepted+expiredN)
	assert.Equal(t, expiredN, inf.MissedOffers)
}
