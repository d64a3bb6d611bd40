// Package queue is Switchboard's in-process priority queue and worker pool:
// the whitepaper's replacement for RabbitMQ, and the waiting room in which
// conversations wait for an agent.
//
// # Model
//
// A Queue has N priority tiers (default three: P0 VIP, P1 premium, P2
// standard). Each tier has a capacity — Push never blocks and returns ErrFull
// beyond it, PushWait waits for room — and a maximum wait: an item's deadline
// is its push time plus the tier's MaxWait (whitepaper defaults 50 ms,
// 300 ms, 1.5 s; a waiting room uses minutes).
//
// Within a tier items leave earliest deadline first. Across tiers a stride
// scheduler shares the pops by Quota (default 40/40/20) whenever several
// tiers have work, hands everything to whichever tiers have work when others
// are empty, and never starves a tier: under saturation each tier gets its
// quota share. A tier that was idle restarts at the current virtual time, so a
// new P0 item is handed out next even while P2 is flooded.
//
// Deadline actions are decided before an item is handed out (lazily at Pop,
// or by a timer at the deadline with Config.EagerDeadlines): Escalate calls
// OnEscalate and keeps the item (handed out with Item.Escalated, for a
// degraded reply); RetryOnce gives one fresh deadline; Drop removes the item
// and calls OnDrop. Each action is counted per tier.
//
// Position(id) reports how many items will be handed out before an item —
// overall, taking the quotas into account, and within its tier — in O(tiers)
// time; EstimatedWait(id) turns that into a duration from a moving average of
// service times and the number of workers. OnPosition delivers the changed
// positions of all identified items, debounced (default 1 s), so a waiting
// room can tell customers "you are #3, about 2 minutes".
//
// A support server pops the best waiting conversation with TryPop when an
// agent frees up and, if nobody can take it, or the agent disconnects, puts it
// back with Requeue: it keeps its enqueue time and deadline and regains its
// original place at the front of its tier.
//
// Pool runs a Queue's items on a fixed set of workers. Each task receives a
// context carrying its deadline; panics are recovered and counted;
// Shutdown(ctx) stops intake, drains, or reports what was abandoned. Steady
// state Push, Pop and a Pool task allocate nothing.
//
// # Errors
//
//   - ErrFull: the tier is at capacity (Push).
//   - ErrClosed: the queue is closed (Push, PushWait, Requeue), or closed and
//     empty (Pop).
//   - ErrDuplicateID: an item with that ID is already waiting.
//   - ErrInvalidTier: tier index out of range.
//   - ErrInvalidConfig: wrapped by New and NewPool, naming the bad field.
//
// # Metrics
//
// With Config.Observer / PoolConfig.Observer set (nil costs nothing):
//
//   - switchboard_queue_depth{queue,tier}: items waiting.
//   - switchboard_queue_wait_seconds{queue,tier}: push to hand-out.
//   - switchboard_queue_deadline_actions_total{queue,tier,action}: action is
//     escalate, retry or drop.
//   - switchboard_queue_tasks_run_total{queue,result}: result ok, error, panic.
//   - switchboard_queue_panics_total{queue}: panics recovered in Run.
//   - switchboard_queue_workers_busy{queue}: workers running a task.
package queue
