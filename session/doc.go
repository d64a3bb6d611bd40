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
// bounded batch per shard per tick. String and integer keys (also named
// types of those kinds) are hashed with hash/maphash or a seeded integer
// mix, without allocation; Get never allocates.
//
// Every entry that leaves the store, and every value Set replaces, is
// reported to Config.OnEvict with a Reason (Capacity, Expired, Deleted,
// Replaced). As with the callbacks of router and queue, the store never
// calls back while the caller is inside it: each eviction is queued under
// the lock of the shard it left — so evictions queue in the order they
// happen — and delivered on a goroutine the store owns, one at a time, in
// that order. A host may therefore hold its own mutex around Set or Delete
// and take it in OnEvict, and OnEvict may close a connection or call the
// store. Queueing reuses a ring buffer (no allocation in the steady state);
// without OnEvict there is no goroutine and no queue. By default no call
// waits for OnEvict, so the queue grows while the host's calls evict faster
// than OnEvict returns; Config.OnEvictBacklog bounds it by back-pressure
// instead — past the bound the evicting call waits, with no lock of the
// store held, until OnEvict catches up — for hosts that do not call the
// store while holding a lock OnEvict takes. The janitor never sweeps ahead
// of OnEvict by more than a batch.
//
// The store's TTLs and janitor read time only through package time, so
// tests run under testing/synctest; there is no Clock to inject.
//
// Lifecycle, as for every long-lived component of the SDK: Shutdown(ctx)
// stops the janitor, waits for it and delivers the evictions still queued,
// bounded by ctx (when ctx ends first the rest are dropped); Close stops
// the janitor and drops them; both wait for the OnEvict call in progress
// and must not be called from OnEvict. Ready reports ErrClosed once either
// began. The store remains usable as a map afterwards, without reporting
// evictions.
//
// # Conversations
//
// A Conversation moves between the states Queued, Offered, Active, Pending,
// Snoozed, Resolved and Closed by events (Offer, Assign, Accept, Decline,
// Expire, CustomerReply, AgentReply, WaitOnCustomer, Snooze, Wake, Transfer,
// OfferTransfer, Requeue, Resolve, Reopen, Close) according to one declared
// table (Transitions). An illegal event returns a *TransitionError naming
// the state and event.
//
// The words follow the glossary shared with packages router and queue:
//
//   - assign: give the conversation to an agent at once (Assign: Queued or
//     Offered → Active, Change.Agent the assignee), as router.Assign and
//     AssignManual do.
//   - offer: propose it to an agent, who must accept (Offer, then Accept,
//     Decline or Expire), as router.Offer.
//   - transfer: move a held conversation to another agent at once
//     (Transfer: Active or Pending → Active, Change.Agent the new
//     assignee), as router.Transfer. OfferTransfer is the transfer the new
//     agent must accept; the current assignee keeps the conversation until
//     then.
//
// Event values are persisted in audit entries and never change; the event
// named Transfer before 2026-12 (an offer) is OfferTransfer, with the same
// value. Each transition is recorded in History (who, when, why) and
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
//     not legal in the state, or wraps ErrNotOfferee, ErrTransferTarget (a
//     transfer needs another agent) or ErrAssignTarget (an assign needs an
//     agent).
//   - ErrClosed: wrapped by Store.Ready after Shutdown or Close.
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
