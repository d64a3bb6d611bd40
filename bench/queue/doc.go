// Package queuebench compares Switchboard's queue.Pool with the naive design
// (one Go channel per tier drained by a prioritised select) and with
// panjf2000/ants v2 running the same no-op tasks, measures per-tier wait
// times while P2 is flooded, and measures the waiting room's matching step
// (queue.Queue.Match with router.Assigner as the claim) against the
// pop-and-requeue glue it replaces (match_test.go).
package queuebench
