package session

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Repository errors. Implementations wrap them (errors.Is works) and add the
// conversation or partition they concern.
var (
	// ErrRecordNotFound: no conversation record with that ID.
	ErrRecordNotFound = errors.New("session: conversation record not found")
	// ErrRecordExists: Create found a record with the same ID.
	ErrRecordExists = errors.New("session: conversation record already exists")
	// ErrVersionConflict: Update's expected version is not the stored one —
	// another writer changed the record first (compare-and-set lost).
	ErrVersionConflict = errors.New("session: conversation record version conflict")
	// ErrFenced: the write carried a fencing token older than one already
	// seen for its partition; the writer has lost ownership and must stop.
	ErrFenced = errors.New("session: stale fencing token")
	// ErrUnavailable: the store cannot be reached or refused the write for a
	// reason that may pass (connection lost, disk full, database restarting).
	// Nothing was written. Callers answer "unavailable" and may retry.
	ErrUnavailable = errors.New("session: store unavailable")
	// ErrRepositoryClosed: the repository was closed.
	ErrRepositoryClosed = errors.New("session: repository closed")
	// ErrSchemaTooNew: the store's schema was written by a newer release;
	// this binary refuses to touch it.
	ErrSchemaTooNew = errors.New("session: store schema is newer than this binary")
)

// Fence is the fencing token a partition owner carries on its writes. A
// repository remembers, per partition, the highest Token it has seen; a write
// carrying a lower Token fails with ErrFenced and changes nothing, and a
// higher Token becomes the new highest. The zero Fence (Token 0) disables the
// check, for a single node that owns everything.
//
// A write is checked against the Fence's Partition, not the record's, so an
// owner moving a conversation to another partition writes with its own
// fence. The token is remembered only when the write succeeds: a write that
// fails for any reason (ErrFenced, ErrVersionConflict, …) changes nothing,
// the highest token included. Tokens are compared as unsigned integers.
type Fence struct {
	Partition string
	Token     uint64
}

// QueueEntry is a conversation's place in the waiting room: enough to rebuild
// the queue exactly after a restart.
type QueueEntry struct {
	// Rank orders entries within a tier: lower is served first. Hosts give
	// new entries increasing ranks and a conversation put back at the front
	// of its tier a rank below the lowest.
	Rank int64 `json:"rank"`
	// Enqueued is when the conversation first entered the queue (kept when
	// it is put back), the start of its wait clock.
	Enqueued time.Time `json:"enqueued"`
	// Deadline is when the tier's waiting-room deadline action fires.
	Deadline time.Time `json:"deadline"`
	// Retried and Escalated record which deadline action was already taken.
	Retried   bool `json:"retried,omitempty"`
	Escalated bool `json:"escalated,omitempty"`
}

// OfferRecord is a pending offer of a conversation to one agent.
type OfferRecord struct {
	ID      string    `json:"id"`
	Agent   string    `json:"agent"`
	Expires time.Time `json:"expires"`
}

// Record is the durable form of one conversation: who it is for, what
// routing needs, where it waits or who holds it, its SLA due times and its
// lifecycle state. It is the one source of truth the host derives its
// caches from.
type Record struct {
	// ID is the conversation ID.
	ID string `json:"id"`
	// Partition is the waiting room that owns the conversation (the host's
	// queue, team or inbox); fenced writes are checked against it.
	Partition string `json:"partition"`
	// Customer and CustomerName identify the customer.
	Customer     string `json:"customer"`
	CustomerName string `json:"customer_name,omitempty"`
	// Tier is the customer's priority tier (0 = most important).
	Tier int `json:"tier"`
	// Entry is the topic the customer chose (e.g. "billing"); Skills are the
	// agent skills the conversation requires.
	Entry  string   `json:"entry,omitempty"`
	Skills []string `json:"skills,omitempty"`
	// Epoch identifies the conversation's message numbering; it never
	// changes for a durable transcript.
	Epoch string `json:"epoch,omitempty"`

	// State is the lifecycle state; Version is bumped by every update and
	// is what Update compares. Assignee, OfferedTo, Missed and the SLA
	// timestamps are the Conversation's (see Conversation).
	Conversation Conversation `json:"conversation"`

	// Queue is set while the conversation waits in the queue.
	Queue *QueueEntry `json:"queue,omitempty"`
	// Offer is set while the conversation is offered to an agent.
	Offer *OfferRecord `json:"offer,omitempty"`
	// AssignedAt is when the current agent took the conversation.
	AssignedAt time.Time `json:"assigned_at,omitzero"`
	// Watchers are supervisors who receive the conversation's messages.
	Watchers []string `json:"watchers,omitempty"`
	// FirstResponseDue and NextResponseDue are the running SLA due times
	// (zero: none running). WarnedFirst/WarnedNext record that the
	// about-to-breach warning was already sent, so a restart does not send
	// it twice.
	FirstResponseDue time.Time `json:"first_response_due,omitzero"`
	NextResponseDue  time.Time `json:"next_response_due,omitzero"`
	WarnedFirst      bool      `json:"warned_first,omitempty"`
	WarnedNext       bool      `json:"warned_next,omitempty"`
}

// Open reports whether the record's conversation is not finished (neither
// Resolved nor Closed).
func (r *Record) Open() bool {
	s := r.Conversation.State
	return s != Resolved && s != Closed
}

// Clone returns a deep copy of r (History is not copied: the audit trail is
// kept by the repository, not in the record).
func (r *Record) Clone() *Record {
	c := *r
	c.Skills = append([]string(nil), r.Skills...)
	c.Watchers = append([]string(nil), r.Watchers...)
	c.Conversation = *r.Conversation.Clone()
	c.Conversation.History = nil
	if r.Queue != nil {
		q := *r.Queue
		c.Queue = &q
	}
	if r.Offer != nil {
		o := *r.Offer
		c.Offer = &o
	}
	return &c
}

// Message is one stored transcript entry.
type Message struct {
	// Conversation is the conversation ID.
	Conversation string `json:"conv"`
	// Offset is the message's position in the transcript, assigned by
	// Append: 1 for the first message, then +1 without gaps.
	Offset uint64 `json:"offset"`
	// Sender is the sender's user ID; SenderName and SenderRole describe
	// them as they were when the message was sent.
	Sender     string `json:"from"`
	SenderName string `json:"name,omitempty"`
	SenderRole string `json:"role,omitempty"`
	// ClientID is the sender's client message ID. (Conversation, Sender,
	// ClientID) is unique: a retried Append returns the stored message.
	// An empty ClientID is never deduplicated.
	ClientID string `json:"id"`
	// Body is the message text.
	Body string `json:"text"`
	// At is when the message was stored (set by Append when zero).
	At time.Time `json:"ts"`
	// Trace holds optional W3C trace context ("traceparent" and
	// "tracestate" values), stored as given.
	Traceparent string `json:"traceparent,omitempty"`
	Tracestate  string `json:"tracestate,omitempty"`
}

// AppendResult is what Append stored.
type AppendResult struct {
	// Message is the stored message, with its Offset and At.
	Message Message
	// Duplicate reports that (Conversation, Sender, ClientID) was already
	// stored: Message is the earlier one and nothing new was written.
	Duplicate bool
}

// Repository keeps conversation records, their audit trails, transcripts and
// read markers durably. It is the source of truth of a support backend;
// process memory is a cache rebuilt from it after a restart or a takeover.
//
// Every method is safe for concurrent use and takes a context that bounds it.
// A method returns only after its write is durable (fsync'd or committed), or
// with an error, in which case nothing was written. Store failures that may
// pass wrap ErrUnavailable. A context that ends before the write was handed to
// the store returns the context's error (errors.Is(err, context.Canceled) or
// context.DeadlineExceeded) and writes nothing; once the write is being
// committed its outcome is awaited, so the context never turns a stored
// write into an error. (One case stays ambiguous with a networked store: a
// connection lost while the commit is in flight gives ErrUnavailable without
// knowing whether it committed. Retrying is safe: Append deduplicates, a
// retried Create gets ErrRecordExists and a retried Update
// ErrVersionConflict; re-read to tell.)
//
// Limits: a limit ≤ 0 returns nothing. IDs, partitions, customers, senders
// and participants are opaque strings compared byte-wise.
//
// The conformance suite in package session/repotest pins this contract down;
// every implementation runs it.
type Repository interface {
	// Create stores a new record with Version r.Conversation.Version (which
	// must be ≥ 1) and audit entries (typically the creation). It fails with
	// ErrRecordExists when the ID is taken, and ErrFenced for a stale fence.
	Create(ctx context.Context, f Fence, r *Record, audit ...AuditEntry) error
	// Get returns the record with that ID, or ErrRecordNotFound.
	Get(ctx context.Context, id string) (*Record, error)
	// Update replaces the stored record with r if the stored Version equals
	// prev (compare-and-set), and appends the audit entries, atomically.
	// r.Conversation.Version must be greater than prev. Of two writers that
	// read the same version, exactly one succeeds; the other gets
	// ErrVersionConflict. A stale fence gets ErrFenced; a missing record
	// ErrRecordNotFound.
	Update(ctx context.Context, f Fence, prev uint64, r *Record, audit ...AuditEntry) error
	// Audit returns the conversation's audit trail in order: the entries
	// passed to Create, then those of each successful Update. It fails with
	// ErrRecordNotFound when no record has that ID.
	Audit(ctx context.Context, id string) ([]AuditEntry, error)
	// OpenConversations returns every record of the partition that is not
	// Resolved or Closed (partition "" means every partition), ordered by
	// ID. It is what a new owner rebuilds from.
	OpenConversations(ctx context.Context, partition string) ([]*Record, error)
	// CustomerConversations returns up to limit of the customer's records,
	// newest first (by creation time), open or finished.
	CustomerConversations(ctx context.Context, customer string, limit int) ([]*Record, error)

	// Append stores a message at the next offset of its conversation, once
	// per (Conversation, Sender, ClientID). Implementations batch concurrent
	// appends into one durable commit (group commit); Append returns when
	// its message is durable.
	Append(ctx context.Context, m Message) (AppendResult, error)
	// Messages returns up to limit messages of the conversation with
	// offsets greater than after, in offset order.
	Messages(ctx context.Context, conv string, after uint64, limit int) ([]Message, error)
	// LastOffset returns the conversation's highest stored offset (0: none).
	LastOffset(ctx context.Context, conv string) (uint64, error)
	// SetRead moves a participant's read marker forward to offset and
	// reports whether it moved (it never moves back).
	SetRead(ctx context.Context, conv, participant string, offset uint64) (bool, error)
	// ReadMarkers returns every participant's read marker of conv (an empty
	// map when there is none). A participant who never moved theirs past 0
	// has none.
	ReadMarkers(ctx context.Context, conv string) (map[string]uint64, error)

	// NextFence raises the partition's highest fencing token by one and
	// returns it, durably: what a new partition owner carries on its writes
	// (after it acquired the partition's lease), so that every write of a
	// former owner, with a lower token, fails with ErrFenced.
	NextFence(ctx context.Context, partition string) (uint64, error)

	// Ping checks that the store is reachable and writable (for readiness).
	Ping(ctx context.Context) error
	// Close releases the repository; pending appends fail with
	// ErrRepositoryClosed, and so does every method called afterwards.
	// Calling Close again returns nil.
	Close() error
}

// StoreError is returned by repositories for failures tied to a place on
// disk or a server: it names Path (a file or directory, or the server
// address) and wraps the cause (ErrUnavailable, ErrSchemaTooNew, …).
type StoreError struct {
	Op   string
	Path string
	Err  error
}

// Error implements error.
func (e *StoreError) Error() string {
	return fmt.Sprintf("session store %s %s: %v", e.Op, e.Path, e.Err)
}

// Unwrap returns the cause.
func (e *StoreError) Unwrap() error { return e.Err }
