package repotest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/session"
)

func testFencing(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "fencing")
	fence := func(p string, token uint64) session.Fence { return session.Fence{Partition: p, Token: token} }

	cur := minimalRecord("a", "p1", "cust", at(0))
	require.NoError(t, repo.Create(ctx, fence("p1", 5), cur, entry(1, "owner5", session.Offer, 0, session.Queued)))

	// unchanged checks that the record and its audit trail are as stored.
	unchanged := func() {
		t.Helper()
		got, err := repo.Get(ctx, cur.ID)
		require.NoError(t, err)
		requireRecord(t, cur, got)
		audit, err := repo.Audit(ctx, cur.ID)
		require.NoError(t, err)
		require.Equal(t, cur.Conversation.Version, audit[len(audit)-1].Version)
	}
	update := func(f session.Fence) error {
		t.Helper()
		r := next(cur, func(r *session.Record) { r.Tier++ })
		err := repo.Update(ctx, f, cur.Conversation.Version, r, entry(r.Conversation.Version, "w", session.AgentReply, session.Active, session.Active))
		if err == nil {
			cur = r
		}
		return err
	}

	// A lower token is fenced and changes nothing.
	require.ErrorIs(t, update(fence("p1", 3)), session.ErrFenced)
	unchanged()
	err := repo.Create(ctx, fence("p1", 4), minimalRecord("b", "p1", "cust", at(0)))
	require.ErrorIs(t, err, session.ErrFenced)
	_, err = repo.Get(ctx, "b")
	require.ErrorIs(t, err, session.ErrRecordNotFound, "a fenced Create stores nothing")

	// Equal and higher tokens pass; the highest seen becomes the bar.
	require.NoError(t, update(fence("p1", 5)))
	require.NoError(t, update(fence("p1", 9)))
	require.ErrorIs(t, update(fence("p1", 5)), session.ErrFenced)
	require.ErrorIs(t, update(fence("p1", 8)), session.ErrFenced)
	unchanged()
	// Token 0 is never checked.
	require.NoError(t, update(session.Fence{}))
	require.NoError(t, update(fence("p1", 0)))
	// The fence is the writer's partition, not the record's.
	require.NoError(t, update(fence("p2", 1)), "partitions are independent")
	require.NoError(t, repo.Create(ctx, fence("p2", 1), minimalRecord("c", "p2", "cust", at(0))))

	// A write that fails for another reason leaves the highest token as it
	// was.
	err = repo.Update(ctx, fence("p1", 20), 1, next(minimalRecord("missing", "p1", "cust", at(0)), nil))
	require.ErrorIs(t, err, session.ErrRecordNotFound)
	stale := next(cur, nil)
	err = repo.Update(ctx, fence("p1", 30), cur.Conversation.Version-1, stale)
	require.ErrorIs(t, err, session.ErrVersionConflict)
	err = repo.Create(ctx, fence("p1", 40), minimalRecord("a", "p1", "cust", at(0)))
	require.ErrorIs(t, err, session.ErrRecordExists)
	require.NoError(t, update(fence("p1", 10)), "failed writes must not raise the fence")
	unchanged()

	// Tokens are unsigned: values past MaxInt64 order correctly.
	require.NoError(t, repo.Create(ctx, fence("p3", 1<<63+5), minimalRecord("d", "p3", "cust", at(0))))
	err = repo.Create(ctx, fence("p3", 1<<62), minimalRecord("e", "p3", "cust", at(0)))
	require.ErrorIs(t, err, session.ErrFenced)
	require.NoError(t, repo.Create(ctx, fence("p3", 1<<63+6), minimalRecord("f", "p3", "cust", at(0))))
	require.NoError(t, repo.Create(ctx, fence("p3", ^uint64(0)), minimalRecord("g", "p3", "cust", at(0))))
	err = repo.Create(ctx, fence("p3", 1<<63+6), minimalRecord("h", "p3", "cust", at(0)))
	require.ErrorIs(t, err, session.ErrFenced)

	// Fences survive a reopen.
	require.NoError(t, repo.Close())
	repo = open(t, "fencing")
	err = repo.Update(ctx, fence("p1", 9), cur.Conversation.Version, next(cur, nil))
	require.ErrorIs(t, err, session.ErrFenced)
	unchanged()
	require.NoError(t, update(fence("p1", 10)))
}
