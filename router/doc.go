// Package router decides who handles what: which node owns a user or a
// conversation when gateways and workers are sharded across machines (the
// Ring), and which agent takes a conversation (the Assigner). The two
// halves share no state; see "Two halves, one package" below for why they
// stay in one package and which names belong to which.
//
// # Consistent-hash ring
//
// A Ring maps keys (user IDs, conversation IDs) to Nodes. Every node places
// Weight × VirtualNodes points on a 48-bit circle, at the top 48 bits of
// xxhash64(ID + "#" + i); a key belongs to the first point clockwise from
// the top 48 bits of xxhash64(key). Placement depends only on the members'
// IDs and weights and on VirtualNodes, so every process with the same
// members agrees on every key, whatever order it learnt them in. Adding a
// node moves keys only to it, removing one moves only its keys, and a weight
// change moves keys only to or from that node. The default of
// DefaultVirtualNodes (400) points per unit of weight keeps ten equal nodes
// within ±10% of the mean load.
//
// Reads are lock-free: each membership change (Add, Remove, SetWeight,
// SetMembers) builds a new immutable snapshot in O(points), reusing the
// unchanged nodes' points and sorting with a counting sort on the prefix
// table, and publishes it with one atomic store. Lookup and LookupBytes hash
// the key and read one 16-byte entry of a per-bucket table (the bucket's first
// point, the span to its last point and the next owner); only keys between two
// points of the same bucket, about 7%, scan the sorted points. No lock, no
// allocation, about 13 ns (5.3 ns per op with two goroutines); the table costs
// about 34 bytes per point. LookupN and AppendLookupN return the
// key's distinct nodes in ring order, which is its failover order.
//
// Service discovery drives the ring through the Membership interface:
// SetMembers takes the full list of live nodes and applies the difference;
// Follow does so for every list arriving on a channel. RingConfig.OnChange
// then receives a RingChange naming the nodes that joined, left or changed,
// the share of the key space each node gained or lost, and Moved(key) to
// tell whether a given user must be handed over. OnChange runs on the
// Ring's own goroutine, in Version order, never inside a Ring method.
//
// Acquire implements consistent hashing with bounded loads (Mirrokni,
// Thorup and Zadimoghaddam, 2018): callers acquire a unit of load per key
// and release it when done; a node already holding ⌈c · m · w / W⌉ units
// (m the total including the new one, w its weight, W the total weight, c =
// RingConfig.LoadFactor, default 1.25) is skipped and the key overflows to
// the next node clockwise. With equal weights no node ever exceeds
// ⌈c · average⌉ when it is given a key.
//
// Errors: ErrInvalidConfig (a RingConfig field; for a bad initial node it
// also wraps ErrInvalidNode), ErrInvalidNode, ErrNodeExists, ErrUnknownNode,
// ErrEmptyRing, ErrRingClosed.
//
// Metrics (subsystem "router", label ring = RingConfig.Name), registered
// only when RingConfig.Observer is set:
//
//	switchboard_router_ring_lookups_total            counter (one atomic add on 1 of 64 striped counters per lookup)
//	switchboard_router_ring_changes_total{op}        counter, op = add | remove | weight | members
//	switchboard_router_ring_nodes                    gauge
//	switchboard_router_ring_points                   gauge, virtual nodes
//	switchboard_router_ring_rebuild_seconds          histogram, snapshot build time
//	switchboard_router_ring_moved_ratio              histogram, key-space share that changed owner per change
//	switchboard_router_ring_bounded_acquires_total   counter
//	switchboard_router_ring_bounded_overflows_total  counter, acquisitions placed past a full owner
//	switchboard_router_ring_bounded_held             gauge, units acquired and not released
//	switchboard_router_ring_membership_errors_total  counter, lists rejected by Follow
//
// # Agent assignment
//
// An Assigner routes waiting conversations to agents. Agents have a presence
// (Online gets new work; Busy and Away keep their conversations but get
// nothing new; Offline hands its conversations back), a capacity (maximum
// concurrent conversations, active plus offered; 0 = unlimited), skills and
// teams. Assign picks an eligible agent (online, free capacity, all required
// skills, the team if asked, not excluded) by a Strategy — LeastLoaded (fewest
// active; ties to the agent waiting longest since their last assignment),
// RoundRobin (turns in rotation, newcomers last), LoadRotation (oldest last
// assignment first), or Sticky (the customer's last agent if eligible,
// otherwise a fallback) — and claims a slot atomically under one mutex, so
// capacity is never exceeded and no conversation is held twice. Optional
// skills are required until AssignerConfig.OptionalSkillWait has passed since
// Request.WaitingSince, then only rank agents that have them first. Eligible
// agents are kept in heaps per requested (skill set, team), so an assignment
// is O(log n), not a scan, and does not allocate.
//
// Offer reserves a slot on one agent until Accept; after OfferTimeout (30 s)
// the offer expires, the miss is recorded, the slot is freed and
// OnOfferExpired gets a Retry request excluding that agent. Every increase of
// an agent's assignable slots (came online, released, capacity raised, offer
// ended, skills gained) produces exactly one OnCapacity event so the host
// drains its queue at once; an agent going offline hands its conversations to
// OnAgentOffline, after OfflineGrace. AssignManual may exceed capacity with
// force.
//
// Request.Value carries the host's own data for a conversation (typically
// the queue.Item it was matched from). The Assigner keeps it, with the
// original request, for as long as it tracks the conversation, and hands
// both back wherever the conversation comes back to the host:
// ConversationInfo (Conversation, AgentOffline.Conversations, RemoveAgent)
// and the retry request of ExpiredOffer and Decline. A host that assigns
// inside queue.Match's claim with the item as Value puts a conversation
// whose agent was lost back at its place, wait clock included, with
// q.Requeue(info.Value.(queue.Item[T])).
//
// # Callbacks
//
// OnCapacity, OnOfferExpired and OnAgentOffline (and the Ring's OnChange)
// run on a goroutine the component owns, one at a time, in the order of the
// state changes that caused them. They never run on the goroutine of a
// caller that is inside a method of the component and never under its
// lock: a host may hold its own mutex around Release, UpsertAgent or any
// other call and take the same mutex in a callback, and a callback may call
// the component. The goroutine exists only while callbacks are pending. A
// callback therefore sees the world a little after the change it reports:
// a CapacityEvent's Free may already be used up, which a drain loop
// handles by trying until ErrNoAgent. A panic in a callback is not
// recovered.
//
// # Lifecycle
//
// Assigner and Ring follow the SDK's convention for long-lived components:
//
//   - Shutdown(ctx) stops intake (mutating calls return ErrAssignerClosed or
//     ErrRingClosed), stops the Assigner's timers, delivers the callbacks
//     queued before it — an OnAgentOffline handing back conversations to
//     requeue is not lost — and returns when they are delivered or ctx is
//     done (then the rest are dropped and it returns ctx.Err() once the
//     running callback has returned). Afterwards no goroutine of the
//     component runs and no callback fires. Idempotent.
//   - Close() is Shutdown with a context that is already done: queued
//     callbacks are dropped. Idempotent; returns nil.
//   - Ready() is nil while the component serves, else an error wrapping
//     ErrAssignerClosed or ErrRingClosed.
//
// Reads (Agent, Agents, Conversation, Stats, Lookup…) keep answering after
// Shutdown. Shutdown and Close wait for a running callback, so they must
// not be called from a callback or under a lock a callback takes.
//
// # Matching a waiting queue
//
// On a capacity event the host must find the first waiting conversation, in
// queue order, that some free agent can take — not just try the head, which
// blocks everyone behind a conversation nobody free has the skills for.
// CanServe(req) answers "would Assign(req) find an agent now" without
// claiming anything, from the same index (O(1) without exclusions, no
// allocation); asked with only RequiredSkills and Team it answers for a
// whole class of conversations, whose key is Request.Class (the canonical
// required-skill set and team). The claim itself must be Offer or Assign,
// which pick and reserve under one lock: a CanServe answer may be stale by
// the time the host acts on it, a claim never is. package queue's
// Queue.Match walks the waiting room in order with a callback doing exactly
// this (see its documentation for the glue).
//
// # Glossary
//
// The same words mean the same in router, queue and session:
//
//   - assign: give a conversation to an agent at once, taking one of its
//     slots (Assign, AssignManual; Accept turns an offer into an
//     assignment). session's Assign event.
//   - offer: propose a conversation to an agent, reserving one of its slots,
//     until the agent accepts, declines or the offer expires (Offer, Accept,
//     Decline). session's Offer, Accept, Decline and Expire events.
//   - transfer: move an assigned conversation to another agent at once
//     (Transfer). session's Transfer event; session's OfferTransfer is the
//     variant the new agent must accept first.
//   - claim: take a slot atomically — what Assign and Offer do after picking
//     the agent, under the Assigner's lock. Only a claim guarantees the slot;
//     CanServe does not claim.
//   - class: Request.Class, the agents a request can go to before optional
//     skills and exclusions.
//
// Errors: ErrNoAgent (no eligible agent is free; possibly as
// *NoAgentError{RelaxAt}; not session.ErrTransferTarget), ErrAtCapacity,
// ErrUnknownAgent, ErrAgentOffline, ErrInvalidAgent, ErrInvalidRequest,
// ErrAlreadyAssigned, ErrNotAssigned, ErrOfferExpired, ErrUnknownOffer,
// ErrAssignerClosed; NewAssigner returns an error wrapping ErrInvalidConfig
// that names the bad field.
//
// Metrics (switchboard_router_…): assign_total{strategy} (built-in strategy
// name, "sticky", "manual", "transfer"), assign_no_agent_total (failed Assign
// and Offer calls; CanServe is not counted),
// assign_duration_seconds{op="assign"|"offer"},
// offers_total{event="made"|"accepted"|"declined"|"expired"|"canceled"},
// agents_by_presence{presence}, agents_capacity_in_use (active plus offered),
// agents_capacity_online (sum of finite capacities of online agents),
// agents_offline_conversations_total, agents_capacity_events_total.
//
// # Testing
//
// The Assigner reads time only through package time (time.Now and
// time.AfterFunc for offer expiry and offline grace), so its tests run under
// testing/synctest, whose fake clock drives the timers; there is no Clock to
// inject.
//
// # Two halves, one package
//
// The ring and the assigner are independent subsystems: neither type
// refers to the other and they share only the package's error prefix and
// metric subsystem. Splitting them into two packages (router/ring and
// router/assign, say) was considered and rejected for now: every host and
// the reference server import router for both (a node's ring and its
// agents), so the split would break every import and every qualified name
// (router.Node, router.Agent…) for no change in behaviour, dependency
// footprint or binary size; and one "router" matches the whitepaper's
// vocabulary that the documentation uses. The cost of keeping them
// together is a long identifier list, which this map sorts. A future split
// can follow it line by line, with type aliases for one release.
//
// Ring (key → node placement):
//
//   - Ring, NewRing, RingConfig, Node, RingChange, NodeShare, NodeLoad,
//     Membership; methods Lookup, LookupBytes, LookupN, AppendLookupN,
//     Nodes, Member, Len, Version, Add, Remove, SetWeight, SetMembers,
//     Follow, Acquire, Loads, Shutdown, Close, Ready.
//   - DefaultVirtualNodes, DefaultLoadFactor, MaxNodes, MaxPointsPerNode.
//   - ErrInvalidNode, ErrNodeExists, ErrUnknownNode, ErrEmptyRing,
//     ErrRingClosed.
//   - Files: ring.go, ring_table.go, bounded.go, membership.go,
//     ring_metrics.go.
//
// Assigner (conversation → agent):
//
//   - Assigner, NewAssigner, AssignerConfig, AssignerStats, Request,
//     ConversationInfo, Agent, AgentInfo, AgentLoad, Presence (Offline,
//     Online, Busy, Away), Offer, ExpiredOffer, OfferEndReason,
//     CapacityEvent, CapacityReason, AgentOffline, NoAgentError.
//   - Strategy, Preferrer, LeastLoaded, RoundRobin, LoadRotation, Sticky,
//     StickyConfig, DefaultStickyMaxCustomers.
//   - DefaultOfferTimeout, DefaultOptionalSkillWait, DefaultMaxSkillViews.
//   - ErrNoAgent, ErrAtCapacity, ErrUnknownAgent, ErrAgentOffline,
//     ErrInvalidAgent, ErrInvalidRequest, ErrAlreadyAssigned,
//     ErrNotAssigned, ErrOfferExpired, ErrUnknownOffer, ErrAssignerClosed.
//   - Files: assign.go, assign_index.go, assign_metrics.go, agent.go,
//     offer.go, strategy.go.
//
// Shared: ErrInvalidConfig (wrapped by NewRing and NewAssigner) and
// notify.go, the owned callback goroutine both use.
package router
