// Package queuebench compares Switchboard's queue.Pool with the naive design
// (one Go channel per tier drained by a prioritised select) and with
// panjf2000/ants v2 running the same no-op tasks, and measures per-tier wait
// times while P2 is flooded.
package queuebench
