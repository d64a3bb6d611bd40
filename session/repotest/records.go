package repotest

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/session"
)

func testRecordRoundTrip(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "roundtrip")

	full := fullRecord("conv-full", "team-a", "cust-1", at(0))
	require.NoError(t, repo.Create(ctx, session.Fence{}, full))
	minimal := minimalRecord("conv-min", "team-a", "cust-1", at(1))
	require.NoError(t, repo.Create(ctx, session.Fence{}, minimal))

	// The caller's record is not aliased by the store.
	sent := norm(full)
	full.Skills[0] = "changed"
	full.Queue.Rank = 99
	full.Conversation.Assignee = "changed"

	got, err := repo.Get(ctx, "conv-full")
	require.NoError(t, err)
	requireRecord(t, sent, got)
	got.Skills[0] = "mutated by caller"
	again, err := repo.Get(ctx, "conv-full")
	require.NoError(t, err)
	requireRecord(t, sent, again)

	got, err = repo.Get(ctx, "conv-min")
	require.NoError(t, err)
	requireRecord(t, minimal, got)
	assert.Nil(t, got.Queue)
	assert.Nil(t, got.Offer)
	assert.True(t, got.AssignedAt.IsZero())

	// Update replaces every field, including clearing pointers and slices.
	upd := next(sent, func(r *session.Record) {
		r.Partition = "team-b"
		r.Queue, r.Offer = nil, nil
		r.Skills, r.Watchers = nil, nil
		r.WarnedFirst, r.WarnedNext = false, false
		r.Tier = 0
		r.Conversation.Missed = nil
		r.Conversation.State = session.Pending
		r.CustomerName = "Ada King"
	})
	require.NoError(t, repo.Update(ctx, session.Fence{}, sent.Conversation.Version, upd))
	got, err = repo.Get(ctx, "conv-full")
	require.NoError(t, err)
	requireRecord(t, upd, got)
	assert.Equal(t, upd.Conversation.Version, got.Conversation.Version)
}

func testCreateExisting(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "exists")
	r := fullRecord("c1", "p", "cust", at(0))
	require.NoError(t, repo.Create(ctx, session.Fence{}, r, entry(3, "a", session.Offer, session.Queued, session.Offered)))

	other := minimalRecord("c1", "q", "someone-else", at(5))
	err := repo.Create(ctx, session.Fence{}, other, entry(1, "b", session.Offer, session.Queued, session.Offered))
	require.ErrorIs(t, err, session.ErrRecordExists)

	got, err := repo.Get(ctx, "c1")
	require.NoError(t, err)
	requireRecord(t, r, got)
	audit, err := repo.Audit(ctx, "c1")
	require.NoError(t, err)
	require.Len(t, audit, 1, "a failed Create appends no audit entry")
	assert.Equal(t, "a", audit[0].Actor)
}

func testNotFound(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "notfound")
	_, err := repo.Get(ctx, "nope")
	require.ErrorIs(t, err, session.ErrRecordNotFound)
	r := minimalRecord("nope", "p", "cust", at(0))
	err = repo.Update(ctx, session.Fence{}, 1, next(r, nil))
	require.ErrorIs(t, err, session.ErrRecordNotFound)
	_, err = repo.Audit(ctx, "nope")
	require.ErrorIs(t, err, session.ErrRecordNotFound)
	_, err = repo.Get(ctx, "nope")
	require.ErrorIs(t, err, session.ErrRecordNotFound, "a failed Update creates nothing")
}

func testInvalidVersions(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "versions")
	r := minimalRecord("c1", "p", "cust", at(0))
	r.Conversation.Version = 0
	require.Error(t, repo.Create(ctx, session.Fence{}, r), "Create needs Version >= 1")
	_, err := repo.Get(ctx, "c1")
	require.ErrorIs(t, err, session.ErrRecordNotFound)

	r.Conversation.Version = 1
	require.NoError(t, repo.Create(ctx, session.Fence{}, r))
	same := r.Clone()
	same.Tier = 5
	err = repo.Update(ctx, session.Fence{}, 1, same)
	require.Error(t, err, "Update needs a Version greater than prev")
	require.NotErrorIs(t, err, session.ErrVersionConflict)
	got, err := repo.Get(ctx, "c1")
	require.NoError(t, err)
	requireRecord(t, r, got)
}

func testUpdateCompareAndSet(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "cas")
	r := minimalRecord("c1", "p", "cust", at(0))
	require.NoError(t, repo.Create(ctx, session.Fence{}, r))

	v2 := next(r, func(r *session.Record) { r.Conversation.State = session.Offered })
	require.NoError(t, repo.Update(ctx, session.Fence{}, 1, v2, entry(2, "router", session.Offer, session.Queued, session.Offered)))

	// A writer that read version 1 lost.
	stale := next(r, func(r *session.Record) { r.Tier = 9 })
	err := repo.Update(ctx, session.Fence{}, 1, stale, entry(2, "stale", session.Offer, session.Queued, session.Offered))
	require.ErrorIs(t, err, session.ErrVersionConflict)
	// So did one that guessed a future version.
	err = repo.Update(ctx, session.Fence{}, 5, next(next(next(next(v2, nil), nil), nil), nil))
	require.ErrorIs(t, err, session.ErrVersionConflict)

	got, err := repo.Get(ctx, "c1")
	require.NoError(t, err)
	requireRecord(t, v2, got)
	audit, err := repo.Audit(ctx, "c1")
	require.NoError(t, err)
	require.Len(t, audit, 1)
	assert.Equal(t, "router", audit[0].Actor)

	// Versions may jump by more than one.
	v7 := v2.Clone()
	v7.Conversation.Version = 7
	require.NoError(t, repo.Update(ctx, session.Fence{}, 2, v7))
	got, err = repo.Get(ctx, "c1")
	require.NoError(t, err)
	assert.Equal(t, uint64(7), got.Conversation.Version)
}

// testUpdateRace: writers that read the same version race; exactly one wins
// each round.
func testUpdateRace(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "race")
	const writers, rounds = 8, 20
	cur := minimalRecord("c1", "p", "cust", at(0))
	require.NoError(t, repo.Create(ctx, session.Fence{}, cur))
	for round := range rounds {
		start := make(chan struct{})
		errs := make([]error, writers)
		recs := make([]*session.Record, writers)
		var wg sync.WaitGroup
		for w := range writers {
			recs[w] = next(cur, func(r *session.Record) { r.Conversation.Assignee = fmt.Sprintf("agent-%d-%d", round, w) })
			wg.Go(func() {
				<-start
				errs[w] = repo.Update(ctx, session.Fence{}, cur.Conversation.Version, recs[w],
					entry(recs[w].Conversation.Version, fmt.Sprintf("w%d", w), session.AgentReply, session.Active, session.Active))
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for w, err := range errs {
			if err == nil {
				require.Equal(t, -1, winner, "round %d: two writers won (%d and %d)", round, winner, w)
				winner = w
				continue
			}
			require.ErrorIs(t, err, session.ErrVersionConflict, "round %d writer %d", round, w)
		}
		require.NotEqual(t, -1, winner, "round %d: nobody won", round)
		got, err := repo.Get(ctx, "c1")
		require.NoError(t, err)
		requireRecord(t, recs[winner], got)
		audit, err := repo.Audit(ctx, "c1")
		require.NoError(t, err)
		require.Len(t, audit, round+1, "only the winner's audit entry is stored")
		require.Equal(t, fmt.Sprintf("w%d", winner), audit[round].Actor)
		cur = recs[winner]
	}
}

func testAuditOrder(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "audit")
	r := minimalRecord("c1", "p", "cust", at(0))
	var want []session.AuditEntry
	e := entry(1, "customer", session.CustomerReply, 0, session.Queued)
	want = append(want, e)
	require.NoError(t, repo.Create(ctx, session.Fence{}, r, e))

	empty := minimalRecord("c2", "p", "cust", at(0))
	require.NoError(t, repo.Create(ctx, session.Fence{}, empty))
	audit, err := repo.Audit(ctx, "c2")
	require.NoError(t, err)
	require.Empty(t, audit)

	for i := range 5 {
		prev := r.Conversation.Version
		r = next(r, nil)
		r.Conversation.Version++ // two entries, two versions
		e1 := entry(prev+1, fmt.Sprintf("a%d", i), session.Offer, session.Queued, session.Offered)
		e2 := entry(prev+2, fmt.Sprintf("b%d", i), session.Decline, session.Offered, session.Queued)
		e2.Reason = "" // empty fields survive too
		e2.Agent = ""
		want = append(want, e1, e2)
		require.NoError(t, repo.Update(ctx, session.Fence{}, prev, r, e1, e2))
		// An update without entries is fine.
		prev = r.Conversation.Version
		r = next(r, nil)
		require.NoError(t, repo.Update(ctx, session.Fence{}, prev, r))
	}
	audit, err = repo.Audit(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, normAudit(want), normAudit(audit))
	audit, err = repo.Audit(ctx, "c2")
	require.NoError(t, err)
	require.Empty(t, audit, "audit trails are per conversation")
}

func testOpenConversations(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "open")
	recs := map[string]*session.Record{}
	create := func(r *session.Record) {
		t.Helper()
		recs[r.ID] = r
		require.NoError(t, repo.Create(ctx, session.Fence{}, r))
	}
	// IDs chosen so byte order differs from a case-insensitive collation.
	create(withState(minimalRecord("a_3", "p1", "c", at(0)), session.Queued))
	create(withState(fullRecord("B-2", "p1", "c", at(1)), session.Active))
	create(withState(minimalRecord("a-1", "p1", "c", at(2)), session.Resolved))
	create(withState(minimalRecord("a-9", "p1", "c", at(3)), session.Closed))
	create(withState(minimalRecord("b", "p1", "c", at(4)), session.Pending))
	create(withState(minimalRecord("a-0", "p2", "c", at(5)), session.Queued))
	create(withState(minimalRecord("z", "p2", "c", at(6)), session.Snoozed))
	create(withState(minimalRecord("c", "p2", "c", at(7)), session.Offered))

	check := func(partition string, want ...string) {
		t.Helper()
		if want == nil {
			want = []string{}
		}
		got, err := repo.OpenConversations(ctx, partition)
		require.NoError(t, err)
		require.Equal(t, want, ids(got), "partition %q", partition)
		for _, r := range got {
			requireRecord(t, recs[r.ID], r)
		}
	}
	check("p1", "B-2", "a_3", "b")
	check("p2", "a-0", "c", "z")
	check("", "B-2", "a-0", "a_3", "b", "c", "z")
	check("nobody")

	update := func(id string, change func(*session.Record)) {
		t.Helper()
		old := recs[id]
		r := next(old, change)
		require.NoError(t, repo.Update(ctx, session.Fence{}, old.Conversation.Version, r))
		recs[id] = r
	}
	update("a_3", func(r *session.Record) { r.Conversation.State = session.Resolved })
	update("b", func(r *session.Record) { r.Partition = "p2" })
	update("a-1", func(r *session.Record) { r.Conversation.State = session.Active }) // reopened
	check("p1", "B-2", "a-1")
	check("p2", "a-0", "b", "c", "z")
	check("", "B-2", "a-0", "a-1", "b", "c", "z")
}

func testCustomerConversations(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "customer")
	recs := map[string]*session.Record{}
	for i, minute := range []int{3, 1, 4, 0, 2} {
		r := minimalRecord(fmt.Sprintf("c%d", i), "p", "ada", at(minute))
		if minute == 1 {
			r.Conversation.State = session.Closed
		}
		if minute == 0 {
			r = fullRecord(r.ID, "p2", "ada", at(minute))
		}
		recs[r.ID] = r
		require.NoError(t, repo.Create(ctx, session.Fence{}, r))
	}
	require.NoError(t, repo.Create(ctx, session.Fence{}, minimalRecord("x", "p", "bob", at(10))))

	got, err := repo.CustomerConversations(ctx, "ada", 10)
	require.NoError(t, err)
	require.Equal(t, []string{"c2", "c0", "c4", "c1", "c3"}, ids(got), "newest first")
	for _, r := range got {
		requireRecord(t, recs[r.ID], r)
	}
	got, err = repo.CustomerConversations(ctx, "ada", 3)
	require.NoError(t, err)
	require.Equal(t, []string{"c2", "c0", "c4"}, ids(got))
	got, err = repo.CustomerConversations(ctx, "ada", 0)
	require.NoError(t, err)
	require.Empty(t, got)
	got, err = repo.CustomerConversations(ctx, "bob", 5)
	require.NoError(t, err)
	require.Equal(t, []string{"x"}, ids(got))
	got, err = repo.CustomerConversations(ctx, "carol", 5)
	require.NoError(t, err)
	require.Empty(t, got)
}
