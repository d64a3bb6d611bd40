// Package session holds per-conversation and per-connection state for a
// support backend: a sharded, bounded key-value Store with LRU eviction and
// TTLs, and the Conversation state machine that enforces a conversation's
// lifecycle.
//
// # Store
//
// A Store[K, V] splits its keys over a power-of-two number of shards, each
// with its own mutex, map and LRU list. Capacity is divided exactly among the
// shards; a full shard evicts its least recently used entry. Entries may
// carry a TTL, fixed (from the last write) or sliding (restarted by Get,
// Update and Touch); expired entries are invisible immediately and removed
// lazily by whoever finds them and by a janitor goroutine that examines a
// bounded batch per shard per tick. Every entry that leaves the store is
// reported to Config.OnEvict with a Reason (Capacity, Expired, Deleted,
// Replaced) after the shard lock is released, so the callback may close a
// connection or call back into the store. String and integer keys (also
// named types of those kinds) are hashed with hash/maphash or a seeded
// integer mix, without allocation; Get never allocates.
//
// # Conversations
//
// A Conversation moves between the states Queued, Offered, Active, Pending,
// Snoozed, Resolved and Closed by events (Offer, Accept, Decline, Expire,
// CustomerReply, AgentReply, WaitOnCustomer, Snooze, Wake, Transfer,
// Requeue, Resolve, Reopen, Close) according to one declared table
// (Transitions). An illegal event returns a *TransitionError naming the state
// and event. Each transition is recorded in History (who, when, why) and
// bumps Version. The SLA timestamps (Created, FirstQueued,
// FirstAgentResponse, OldestUnansweredCustomerMessage, Resolved) feed
// FirstResponseTime, NextResponseTime and ResolutionTime.
//
// Conversations kept in a Store[K, *Conversation] are immutable snapshots;
// Transition applies a change to a clone inside Store.Update, so concurrent
// transitions on one conversation are serialised and exactly one of two
// racing accepts wins. Change.IfVersion adds an optimistic check against a
// version read earlier. WakeDue wakes the conversations whose snooze ended.
//
// # Errors
//
//   - ErrInvalidConfig: New rejected a Config field (the message names it).
//   - *TransitionError (errors.Is(err, ErrIllegalTransition)): the event is
//     not legal in the state, or wraps ErrNotOfferee / ErrNoAgent.
//   - ErrConflict: Change.IfVersion is stale.
//   - ErrNotFound: Transition found no conversation under the key.
//
// # Metrics
//
// With Config.Observer set, each store exports (label store=Config.Name):
//
//   - switchboard_session_hits_total, switchboard_session_misses_total: Get results.
//   - switchboard_session_evictions_total{reason}: entries that left or were
//     replaced, by reason (capacity, expired, deleted, replaced).
//   - switchboard_session_entries: entries held.
//
// The hot paths only bump per-shard counters under the shard lock; sums are
// taken at scrape time. With a nil Observer no counting happens.
package session
