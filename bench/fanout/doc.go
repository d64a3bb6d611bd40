// Package fanoutbench compares switchboard/fanout with the naive design it
// replaces (one RWMutex-protected map, blocking channel sends) and measures
// the Redis broker's node-to-node latency against raw Redis pub/sub.
// Results are recorded in bench/results/fanout.md.
package fanoutbench
