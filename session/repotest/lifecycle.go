package repotest

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/session"
)

// testReopen: everything written survives Close and reopen, and numbering,
// deduplication and read markers carry on where they were.
func testReopen(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "reopen")
	full := fullRecord("c1", "p1", "ada", at(0))
	e1 := entry(3, "router", session.Offer, session.Queued, session.Offered)
	require.NoError(t, repo.Create(ctx, session.Fence{Partition: "p1", Token: 4}, full, e1))
	upd := next(full, func(r *session.Record) { r.Conversation.State = session.Queued })
	e2 := entry(4, "agent", session.Requeue, session.Offered, session.Queued)
	require.NoError(t, repo.Update(ctx, session.Fence{Partition: "p1", Token: 4}, 3, upd, e2))
	other := withState(minimalRecord("c2", "p1", "ada", at(1)), session.Closed)
	require.NoError(t, repo.Create(ctx, session.Fence{}, other))
	var stored []session.Message
	for i := range 3 {
		res, err := repo.Append(ctx, msg("c1", "ada", fmt.Sprint("m", i), fmt.Sprint("body", i)))
		require.NoError(t, err)
		stored = append(stored, res.Message)
	}
	_, err := repo.SetRead(ctx, "c1", "agent", 2)
	require.NoError(t, err)
	require.NoError(t, repo.Close())

	repo = open(t, "reopen")
	got, err := repo.Get(ctx, "c1")
	require.NoError(t, err)
	requireRecord(t, upd, got)
	audit, err := repo.Audit(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, normAudit([]session.AuditEntry{e1, e2}), normAudit(audit))
	open1, err := repo.OpenConversations(ctx, "p1")
	require.NoError(t, err)
	requireRecords(t, []*session.Record{upd}, open1)
	cust, err := repo.CustomerConversations(ctx, "ada", 10)
	require.NoError(t, err)
	require.Equal(t, []string{"c2", "c1"}, ids(cust))
	msgs, err := repo.Messages(ctx, "c1", 0, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	for i := range msgs {
		require.Equal(t, normMessage(stored[i]), normMessage(msgs[i]))
	}
	last, err := repo.LastOffset(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, uint64(3), last)
	marks, err := repo.ReadMarkers(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"agent": 2}, marks)

	dup, err := repo.Append(ctx, msg("c1", "ada", "m1", "retry after restart"))
	require.NoError(t, err)
	require.True(t, dup.Duplicate)
	require.Equal(t, uint64(2), dup.Message.Offset)
	res, err := repo.Append(ctx, msg("c1", "ada", "m3", "new"))
	require.NoError(t, err)
	require.Equal(t, uint64(4), res.Message.Offset)
	moved, err := repo.SetRead(ctx, "c1", "agent", 1)
	require.NoError(t, err)
	require.False(t, moved)
	err = repo.Update(ctx, session.Fence{Partition: "p1", Token: 3}, 4, next(upd, nil))
	require.ErrorIs(t, err, session.ErrFenced)
	require.NoError(t, repo.Close())
}

func testPing(t *testing.T, open Opener) {
	ctx := testContext(t)
	repo := open(t, "ping")
	require.NoError(t, repo.Ping(ctx))
	require.NoError(t, repo.Ping(ctx))
}

// calls invokes every Repository method once, reporting each error by name.
func calls(ctx context.Context, repo session.Repository) map[string]error {
	r := minimalRecord("new", "p", "cust", at(0))
	errs := map[string]error{}
	errs["Create"] = repo.Create(ctx, session.Fence{}, r)
	_, errs["Get"] = repo.Get(ctx, "existing")
	errs["Update"] = repo.Update(ctx, session.Fence{}, 1, next(minimalRecord("existing", "p", "cust", at(0)), nil))
	_, errs["Audit"] = repo.Audit(ctx, "existing")
	_, errs["OpenConversations"] = repo.OpenConversations(ctx, "p")
	_, errs["CustomerConversations"] = repo.CustomerConversations(ctx, "cust", 10)
	_, errs["Append"] = repo.Append(ctx, msg("existing", "s", "new-msg", "x"))
	_, errs["Messages"] = repo.Messages(ctx, "existing", 0, 10)
	_, errs["LastOffset"] = repo.LastOffset(ctx, "existing")
	_, errs["SetRead"] = repo.SetRead(ctx, "existing", "ada", 5)
	_, errs["ReadMarkers"] = repo.ReadMarkers(ctx, "existing")
	errs["Ping"] = repo.Ping(ctx)
	return errs
}

// seed stores a record "existing" with one message.
func seed(t *testing.T, repo session.Repository) {
	t.Helper()
	ctx := testContext(t)
	require.NoError(t, repo.Create(ctx, session.Fence{}, minimalRecord("existing", "p", "cust", at(0))))
	_, err := repo.Append(ctx, msg("existing", "s", "old-msg", "x"))
	require.NoError(t, err)
}

func testClosed(t *testing.T, open Opener) {
	repo := open(t, "closed")
	seed(t, repo)
	require.NoError(t, repo.Close())
	for name, err := range calls(testContext(t), repo) {
		require.ErrorIs(t, err, session.ErrRepositoryClosed, name)
	}
	require.NoError(t, repo.Close(), "a second Close returns nil")
}

func testContextCanceled(t *testing.T, open Opener) {
	repo := open(t, "canceled")
	seed(t, repo)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for name, err := range calls(ctx, repo) {
		require.ErrorIs(t, err, context.Canceled, name)
	}
	// Nothing was written.
	ctx = testContext(t)
	_, err := repo.Get(ctx, "new")
	require.ErrorIs(t, err, session.ErrRecordNotFound)
	got, err := repo.Get(ctx, "existing")
	require.NoError(t, err)
	require.Equal(t, uint64(1), got.Conversation.Version)
	last, err := repo.LastOffset(ctx, "existing")
	require.NoError(t, err)
	require.Equal(t, uint64(1), last)
	marks, err := repo.ReadMarkers(ctx, "existing")
	require.NoError(t, err)
	require.Empty(t, marks)
}
