// Package storebench measures the session.Repository backends side by side
// in one run, each labelled backend=embedded or backend=postgres:
//
//   - BenchmarkAppendThroughput: durable appends per second sustained by 64
//     and 256 concurrent writers, with group commit (the default) and with
//     one transaction and fsync per message (MaxBatch 1), reported as
//     appends/s with the P99 latency.
//   - BenchmarkAppendPaced: latency at a paced 5,000 appends/s (open loop:
//     latency counts from each append's scheduled time, so a stall delays
//     every append behind it), reported as p50-ms, p99-ms and p999-ms.
//   - BenchmarkRebuild: what a restarted owner does — open the store and
//     read its open conversations — over 10,000 assigned and 50,000 queued
//     records (60,000 records).
//
// PostgreSQL runs locally (internal/pgtest: fsync on, synchronous_commit
// on), on the same machine as the benchmark. run.sh rotates the order of
// the backends between rounds; compare.sh runs the append benchmarks of two
// builds of this package (before and after a change) the same way, in one
// run.
package storebench
