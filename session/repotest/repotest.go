package repotest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/session"
)

// Opener opens the repository called name for test t. The same name opens
// the same data again (after the previous one was closed), so the suite can
// check durability across Close and reopen; different names open
// independent, initially empty stores. The Opener should register the
// repository's Close with t.Cleanup: the suite closes repositories itself
// too, and Close is idempotent.
type Opener func(t *testing.T, name string) session.Repository

// Run runs the conformance suite against the repositories open returns, as
// subtests of t. The subtests run one after the other; each uses stores of
// its own (names are unique within one Run).
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"RecordRoundTrip", testRecordRoundTrip},
		{"CreateExisting", testCreateExisting},
		{"NotFound", testNotFound},
		{"InvalidVersions", testInvalidVersions},
		{"UpdateCompareAndSet", testUpdateCompareAndSet},
		{"UpdateRace", testUpdateRace},
		{"AuditOrder", testAuditOrder},
		{"Fencing", testFencing},
		{"OpenConversations", testOpenConversations},
		{"CustomerConversations", testCustomerConversations},
		{"AppendSequential", testAppendSequential},
		{"AppendDuplicates", testAppendDuplicates},
		{"AppendConcurrent", testAppendConcurrent},
		{"AppendConcurrentDuplicates", testAppendConcurrentDuplicates},
		{"MessagesPaging", testMessagesPaging},
		{"MessagesWhileAppending", testMessagesWhileAppending},
		{"ReadMarkers", testReadMarkers},
		{"Reopen", testReopen},
		{"Ping", testPing},
		{"Closed", testClosed},
		{"ContextCanceled", testContextCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// timeout bounds every subtest's calls.
const timeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// base is a fixed instant with sub-millisecond digits, so that stores are
// checked to keep at least millisecond precision.
var base = time.Date(2026, 11, 30, 14, 5, 6, 123456789, time.FixedZone("CET", 3600))

func at(minutes int) time.Time { return base.Add(time.Duration(minutes) * time.Minute) }

// fullRecord returns a record with every field set.
func fullRecord(id, partition, customer string, created time.Time) *session.Record {
	c := session.NewConversation(id, created)
	c.State = session.Active
	c.Version = 3
	c.Assignee = "agent-7"
	c.OfferedTo = "agent-9"
	c.OfferedAt = created.Add(2 * time.Second)
	c.Missed = []string{"agent-1", "agent-2"}
	c.SnoozedUntil = created.Add(time.Hour)
	c.FirstAgentResponse = created.Add(90 * time.Second)
	c.OldestUnansweredCustomerMessage = created.Add(3 * time.Minute)
	c.LastNextResponseTime = 42*time.Second + 7*time.Millisecond
	c.Resolved = created.Add(4 * time.Hour)
	c.QueuedAt = created.Add(time.Second)
	c.LastActivity = created.Add(5 * time.Minute)
	c.History = []session.AuditEntry{{At: created, Actor: "history-is-not-stored", Event: session.Offer}}
	return &session.Record{
		ID:           id,
		Partition:    partition,
		Customer:     customer,
		CustomerName: "Ada Lovelace",
		Tier:         2,
		Entry:        "billing",
		Skills:       []string{"billing", "de"},
		Epoch:        "epoch-" + id,
		Conversation: *c,
		Queue: &session.QueueEntry{
			Rank: -17, Enqueued: created.Add(time.Millisecond), Deadline: created.Add(10 * time.Minute),
			Retried: true, Escalated: true,
		},
		Offer:            &session.OfferRecord{ID: "offer-1", Agent: "agent-9", Expires: created.Add(30 * time.Second)},
		AssignedAt:       created.Add(time.Minute),
		Watchers:         []string{"sup-1", "sup-2"},
		FirstResponseDue: created.Add(2 * time.Minute),
		NextResponseDue:  created.Add(7 * time.Minute),
		WarnedFirst:      true,
		WarnedNext:       true,
	}
}

// minimalRecord returns a queued record with only what a new conversation has.
func minimalRecord(id, partition, customer string, created time.Time) *session.Record {
	return &session.Record{
		ID: id, Partition: partition, Customer: customer,
		Conversation: *session.NewConversation(id, created),
	}
}

func withState(r *session.Record, s session.State) *session.Record {
	r.Conversation.State = s
	return r
}

// normTime makes times comparable across stores: UTC, millisecond precision
// (stores may keep more), zero stays zero.
func normTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Millisecond)
}

func normStrings(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return s
}

// norm returns a normalized deep copy of r for comparison.
func norm(r *session.Record) *session.Record {
	if r == nil {
		return nil
	}
	c := r.Clone()
	c.Skills = normStrings(c.Skills)
	c.Watchers = normStrings(c.Watchers)
	c.AssignedAt = normTime(c.AssignedAt)
	c.FirstResponseDue = normTime(c.FirstResponseDue)
	c.NextResponseDue = normTime(c.NextResponseDue)
	if c.Queue != nil {
		c.Queue.Enqueued = normTime(c.Queue.Enqueued)
		c.Queue.Deadline = normTime(c.Queue.Deadline)
	}
	if c.Offer != nil {
		c.Offer.Expires = normTime(c.Offer.Expires)
	}
	v := &c.Conversation
	v.History = nil
	v.Missed = normStrings(v.Missed)
	for _, p := range []*time.Time{&v.OfferedAt, &v.SnoozedUntil, &v.Created, &v.FirstQueued, &v.QueuedAt,
		&v.FirstAgentResponse, &v.OldestUnansweredCustomerMessage, &v.Resolved, &v.LastActivity} {
		*p = normTime(*p)
	}
	return c
}

func normAudit(es []session.AuditEntry) []session.AuditEntry {
	out := make([]session.AuditEntry, len(es))
	for i, e := range es {
		e.At = normTime(e.At)
		out[i] = e
	}
	return out
}

func normMessage(m session.Message) session.Message {
	m.At = normTime(m.At)
	return m
}

func requireRecord(t *testing.T, want, got *session.Record) {
	t.Helper()
	require.NotNil(t, got)
	require.Empty(t, got.Conversation.History, "History is not stored in the record")
	require.Equal(t, norm(want), norm(got))
}

func requireRecords(t *testing.T, want, got []*session.Record) {
	t.Helper()
	w := make([]*session.Record, len(want))
	for i, r := range want {
		w[i] = norm(r)
	}
	g := make([]*session.Record, len(got))
	for i, r := range got {
		g[i] = norm(r)
	}
	require.Equal(t, w, g)
}

// ids returns the records' IDs (an empty, non-nil slice for none).
func ids(rs []*session.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// next returns a copy of r at the next version with a change applied.
func next(r *session.Record, change func(*session.Record)) *session.Record {
	c := r.Clone()
	c.Conversation.Version++
	if change != nil {
		change(c)
	}
	return c
}

func entry(version uint64, actor string, ev session.Event, from, to session.State) session.AuditEntry {
	return session.AuditEntry{At: at(int(version)), Actor: actor, Reason: fmt.Sprintf("reason %d", version),
		Event: ev, From: from, To: to, Agent: "agent-" + actor, Version: version}
}
