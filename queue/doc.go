// Package queue is Switchboard's in-process priority queue and worker pool:
// the whitepaper's replacement for RabbitMQ, and the waiting room in which
// conversations wait for an agent.
//
// # Changed defaults (2026-12): nobody is dropped unless a tier asks for it
//
// The zero Config used to mean the whitepaper's task-queue tiers — 50 ms,
// 300 ms and 1.5 s of MaxWait with Drop on P2 and RetryOnce (then Drop) on
// P1 — so a waiting room built on the defaults silently dropped standard
// customers after 1.5 s. Now:
//
//   - DefaultTiers, used by the zero Config, is a waiting room: 2, 5 and 15
//     minutes, Escalate on every tier, quotas 40/40/20.
//   - The zero Action is Escalate (it was Drop), so a TierConfig that does
//     not set OnDeadline keeps its items and reports them late.
//   - WaitingRoom returns the recommended waiting-room Config: DefaultTiers
//     with EagerDeadlines on, so OnEscalate fires at the deadline even while
//     no agent is free (with lazy deadlines, escalations wait for a pop).
//   - TaskQueueTiers returns the old whitepaper tiers for queues of short
//     tasks that want them, Drop included.
//
// # Model
//
// A Queue has N priority tiers (three by default: P0 VIP, P1 premium, P2
// standard). Each tier has a capacity — Push never blocks and returns ErrFull
// beyond it, PushWait waits for room — and a maximum wait: an item's deadline
// is its push time plus the tier's MaxWait.
//
// Within a tier items leave earliest deadline first. Across tiers a stride
// scheduler shares the pops by Quota (default 40/40/20) whenever several
// tiers have work, hands everything to whichever tiers have work when others
// are empty, and never starves a tier: under saturation each tier gets its
// quota share. A tier that was idle restarts at the current virtual time, so a
// new P0 item is handed out next even while P2 is flooded.
//
// Deadline actions are decided before an item is handed out (lazily at Pop,
// TryPop or Match, or by a timer at the deadline with Config.EagerDeadlines):
// Escalate calls OnEscalate and keeps the item (handed out with
// Item.Escalated, for a degraded reply or a supervisor alert); RetryOnce
// gives one fresh deadline and calls OnRetry; Drop removes the item and calls
// OnDrop. Each action is counted per tier. The callbacks receive the typed
// Item[T]; see Callbacks for where they run.
//
// Position(id) reports how many items will be handed out before an item —
// overall, taking the quotas into account, and within its tier — in O(tiers)
// time; EstimatedWait(id) turns that into a duration from a moving average of
// service times and the number of workers. OnPosition delivers the changed
// positions of all identified items, debounced (default 1 s), so a waiting
// room can tell customers "you are #3, about 2 minutes". Positions count the
// order in which TryPop would hand items out; with Match an item of a class
// nobody can serve may be overtaken.
//
// # Matching
//
// A waiting room must not hand out the best waiting conversation but the
// first one, in queue order, that some free agent can take: popping the head
// and putting it back when nobody has its skills blocks everyone behind it
// (head-of-line blocking), and popping everything to find a fit costs
// O(queue) per freed agent and hides the popped items from Position and
// Cancel meanwhile. Match does it in place: items carry a Class (PushClass;
// typically router.Request.Class, the canonical required-skill set), each
// (tier, class) is indexed, and Match offers the host's claim callback the
// head of each class in the queue's own order (tiers by quota, deadlines
// within a tier). The callback claims what the item needs and answers Take,
// or Skip (this item only), SkipClass (the whole class, in every tier, for
// the rest of the call) or Stop. A Match therefore costs at most
// O(tiers × classes) callbacks plus one per skipped item, allocates nothing,
// and removes only the item that was taken; the others never leave the
// queue. The callback runs without the queue's lock and may call the queue
// (not Match); if the item was cancelled or dropped while it ran, Match
// returns ErrClaimLost with the item so the host can undo the claim.
//
// With package router the glue, run on every router.CapacityEvent, is below.
// CanServe(router.Request{}) — is any agent free at all — ends the loop
// without a walk once the freed capacity is used up:
//
//	for asg.CanServe(router.Request{}) {
//		it, err := room.Match(func(it queue.Item[Conv]) queue.Verdict {
//			c := it.Value
//			if !asg.CanServe(router.Request{RequiredSkills: c.Skills, Team: c.Team}) {
//				return queue.SkipClass // nobody free has these skills
//			}
//			req := c.Request()
//			req.Value = it // handed back if the agent is lost
//			if _, err := asg.Offer(req); err != nil {
//				return queue.Skip // e.g. its only agents are excluded for it
//			}
//			return queue.Take
//		})
//		if errors.Is(err, queue.ErrClaimLost) {
//			_ = asg.Release(it.Value.ID) // the customer left meanwhile
//			continue
//		}
//		if err != nil {
//			break // ErrNoMatch: nobody can take anything now
//		}
//		// it is offered; announce it
//	}
//
// A conversation whose offer is declined or expires, or whose agent is lost,
// goes back with Requeue: it keeps its enqueue time (the wait clock),
// deadline, flags and class and regains its original place in its tier,
// ahead of everything pushed after it. The item to requeue is the Value the
// host gave the assigner, handed back in router.ExpiredOffer.Retry.Value and
// in each router.ConversationInfo of router.AgentOffline:
//
//	OnAgentOffline: func(e router.AgentOffline) {
//		for _, c := range e.Conversations {
//			_ = room.Requeue(c.Value.(queue.Item[Conv]))
//		}
//	},
//
// Pool runs a Queue's items on a fixed set of workers. Each task receives a
// context carrying its deadline; panics are recovered and counted;
// Shutdown(ctx) stops intake and drains; what a Shutdown that gives up
// leaves behind stays in the closed queue. Steady state Push, Pop, Match
// and a Pool task allocate nothing.
//
// # Callbacks
//
// OnEscalate, OnDrop, OnRetry and OnPosition run on a goroutine the Queue
// owns, one at a time, in the order the queue decided them (a deadline
// action found by a Pop is queued, not run by the Pop). They never run on
// the goroutine of a caller inside a Queue method — Push, Pop, TryPop,
// Match, Cancel, Requeue, Shutdown… — and never under the queue's lock, so a
// host may hold its own lock around any call and take it in a callback,
// and a callback may call the Queue. The goroutine exists only while
// callbacks are pending; a panic in a callback is not recovered. Match's
// claim function is not a callback in this sense: it is the host's own
// code, called synchronously by Match by design.
//
// Pool's OnError and OnPanic run on the worker goroutine that ran the task,
// after Run returned and before the worker takes another item: a goroutine
// the Pool owns, never inside a host call.
//
// # Lifecycle
//
// Queue and Pool follow the SDK's convention for long-lived components:
//
//   - Shutdown(ctx): graceful and bounded by ctx. Queue.Shutdown stops
//     intake (Push, PushWait, Requeue return ErrClosed), stops the timers
//     and delivers the callbacks already queued; Pool.Shutdown stops
//     intake, lets the workers drain the queue, waits for them and shuts
//     the queue down. When ctx ends first the undelivered callbacks are
//     dropped, running tasks are canceled and waited for, items never
//     handed out stay in the queue, and ctx.Err() is returned. After
//     Shutdown returns no goroutine of the component runs and no callback
//     fires. Idempotent.
//   - Close(): Shutdown with a context that is already done. Idempotent;
//     returns nil.
//   - Ready(): nil while serving, else an error wrapping ErrClosed (or
//     ErrNotStarted for a Pool before Start).
//
// A closed Queue still hands out what is waiting (Pop returns ErrClosed
// once it is empty), so the items a Pool.Shutdown left behind can be taken
// with TryPop. Shutdown and Close wait for a running callback: do not call
// them from a callback or under a lock a callback takes.
//
// # Glossary
//
//   - hand out: an item leaves the queue for a consumer (Pop, TryPop, Match
//     or a Pool worker); counted in Stats.Popped.
//   - class: Item.Class, the key of what an item needs from whoever takes
//     it; items of one class are interchangeable for matching.
//   - claim: what Match's callback does before answering Take — secure the
//     item's taker (with router, an atomic Offer or Assign). The queue only
//     removes the item; undoing a claim whose item was lost is the host's.
//   - offer, assign: router's two ways to claim an agent for a conversation
//     (reserve a slot until the agent accepts, or take it at once). The
//     queue does not know them; see package router.
//   - abandoned: an item that left without being handed out (Cancel or a
//     Drop deadline action); Stats.Abandoned. Items a Pool.Shutdown gives
//     up on are not abandoned: they stay in the queue.
//   - transfer: router's move of an assigned conversation to another agent
//     at once; the words assign, offer and transfer mean the same in
//     router, queue and session (see router's glossary).
//
// # Errors
//
//   - ErrFull: the tier is at capacity (Push).
//   - ErrClosed: the queue is closed (Push, PushWait, Requeue), or closed and
//     empty (Pop); wrapped by Ready after Shutdown or Close.
//   - ErrNotStarted: Pool.Ready before Start.
//   - ErrDuplicateID: an item with that ID is already waiting.
//   - ErrInvalidTier: tier index out of range.
//   - ErrNoMatch: Match took nothing.
//   - ErrClaimLost: Match's claim took an item that left the queue
//     meanwhile; undo the claim.
//   - ErrInvalidConfig: wrapped by New and NewPool, naming the bad field.
//
// # Metrics
//
// With Config.Observer / PoolConfig.Observer set (nil costs nothing):
//
//   - switchboard_queue_depth{queue,tier}: items waiting.
//   - switchboard_queue_wait_seconds{queue,tier}: push to hand-out (Pop,
//     TryPop, Match, Pool).
//   - switchboard_queue_deadline_actions_total{queue,tier,action}: action is
//     escalate, retry or drop.
//   - switchboard_queue_tasks_run_total{queue,result}: result ok, error, panic.
//   - switchboard_queue_panics_total{queue}: panics recovered in Run.
//   - switchboard_queue_workers_busy{queue}: workers running a task.
//
// # Testing
//
// The Queue reads time only through package time (monotonic readings and
// time.AfterFunc), so tests of deadlines, the position debounce and Pool
// service times run under testing/synctest: a bubble's fake clock drives
// them, with no Clock to inject.
package queue
