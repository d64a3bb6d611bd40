// Package bench holds Switchboard's side-by-side benchmarks against peer
// libraries and the multi-process connection harness (cmd/wsbench). It is its
// own Go module so that peers never enter the SDK's dependency graph.
package bench
