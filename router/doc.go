// Package router decides who handles what: which node owns a user or a
// conversation when gateways and workers are sharded across machines, and
// which agent takes a conversation.
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
// table, and publishes it with one atomic store. Lookup and LookupBytes hash the key, pick a bucket in a prefix
// table over the sorted points (about one point per bucket) and scan it:
// no lock, no allocation, about 10 ns. LookupN and AppendLookupN return the
// key's distinct nodes in ring order, which is its failover order.
//
// Service discovery drives the ring through the Membership interface:
// SetMembers takes the full list of live nodes and applies the difference;
// Follow does so for every list arriving on a channel. RingConfig.OnChange
// then receives a RingChange naming the nodes that joined, left or changed,
// the share of the key space each node gained or lost, and Moved(key) to
// tell whether a given user must be handed over.
//
// Acquire implements consistent hashing with bounded loads (Mirrokni,
// Thorup and Zadimoghaddam, 2018): callers acquire a unit of load per key
// and release it when done; a node already holding ⌈c · m · w / W⌉ units
// (m the total including the new one, w its weight, W the total weight, c =
// RingConfig.LoadFactor, default 1.25) is skipped and the key overflows to
// the next node clockwise. With equal weights no node ever exceeds
// ⌈c · average⌉ when it is given a key.
//
// Errors: ErrInvalidRingConfig, ErrInvalidNode, ErrNodeExists,
// ErrUnknownNode, ErrEmptyRing, ErrRingClosed.
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
// The Assigner hands conversations to support agents; its model, errors and
// metrics are described below.
package router
