// Package routerbench compares package router with peer libraries, side by
// side in one `go test -bench` run: the consistent-hash ring against
// github.com/buraksezer/consistent and github.com/golang/groupcache's
// consistenthash (ring_test.go), and the agent Assigner (assign_test.go).
// Results and commands are recorded in bench/results/router-*.md.
package routerbench
