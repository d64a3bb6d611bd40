//go:build unix

package routerbench

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
	"github.com/golang/groupcache/consistenthash"

	"github.com/switchboard-go/switchboard/router"
)

// The lookup benchmarks use 64 nodes and 24-byte keys, cycling through 1024
// distinct keys so the ring, not one cached path, is measured.
const (
	ringBenchNodes  = 64
	ringBenchKeys   = 1024
	ringBuildNodes  = 1000
	groupcacheVNode = router.DefaultVirtualNodes // same ring size as ours
)

var (
	ringBenchKeyStrings = func() []string {
		keys := make([]string, ringBenchKeys)
		for i := range keys {
			keys[i] = fmt.Sprintf("user:%019d", i*7919) // 24 bytes
		}
		return keys
	}()
	ringBenchKeyBytes = func() [][]byte {
		keys := make([][]byte, ringBenchKeys)
		for i, k := range ringBenchKeyStrings {
			keys[i] = []byte(k)
		}
		return keys
	}()
	ringSink router.Node
	strSink  string
	memSink  consistent.Member
)

// cpuTime is the process's user+system CPU time. The machine these
// benchmarks run on is shared, so besides wall-clock ns/op every benchmark
// reports cpu-ns/op: CPU time spent by the process per operation, which
// time spent descheduled does not inflate.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCPU resets the timer and returns a function that reports cpu-ns/op.
func startCPU(b *testing.B) func() {
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	return func() {
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	}
}

func nodeIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "gateway-" + strconv.Itoa(i) + ".chat.svc:7000"
	}
	return ids
}

// --- switchboard router.Ring ---

func newSwitchboardRing(tb testing.TB, n int) *router.Ring {
	ids := nodeIDs(n)
	nodes := make([]router.Node, n)
	for i, id := range ids {
		nodes[i] = router.Node{ID: id}
	}
	r, err := router.NewRing(router.RingConfig{Nodes: nodes})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// --- buraksezer/consistent v0.10.0 ---

type bsMember string

func (m bsMember) String() string { return string(m) }

type bsHasher struct{}

func (bsHasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// bsConfig is the library's documented setup (xxhash, 20 replicas, load
// 1.25) with a prime partition count of about 16 partitions per node.
func bsConfig(nodes int) consistent.Config {
	pc := 1021
	if nodes > 64 {
		pc = 16381
	}
	return consistent.Config{PartitionCount: pc, ReplicationFactor: 20, Load: 1.25, Hasher: bsHasher{}}
}

func newBuraksezer(n int) *consistent.Consistent {
	ids := nodeIDs(n)
	members := make([]consistent.Member, n)
	for i, id := range ids {
		members[i] = bsMember(id)
	}
	return consistent.New(members, bsConfig(n))
}

// --- groupcache consistenthash (default CRC-32 hash) ---

func newGroupcache(n int) *consistenthash.Map {
	m := consistenthash.New(groupcacheVNode, nil)
	m.Add(nodeIDs(n)...)
	return m
}

func BenchmarkRingLookup(b *testing.B) {
	b.Run("lib=switchboard", func(b *testing.B) {
		r := newSwitchboardRing(b, ringBenchNodes)
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			ringSink, _ = r.Lookup(ringBenchKeyStrings[i&(ringBenchKeys-1)])
		}
	})
	b.Run("lib=switchboard-bytes", func(b *testing.B) {
		r := newSwitchboardRing(b, ringBenchNodes)
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			ringSink, _ = r.LookupBytes(ringBenchKeyBytes[i&(ringBenchKeys-1)])
		}
	})
	b.Run("lib=buraksezer", func(b *testing.B) {
		c := newBuraksezer(ringBenchNodes)
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			memSink = c.LocateKey(ringBenchKeyBytes[i&(ringBenchKeys-1)])
		}
	})
	b.Run("lib=groupcache", func(b *testing.B) {
		m := newGroupcache(ringBenchNodes)
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			strSink = m.Get(ringBenchKeyStrings[i&(ringBenchKeys-1)])
		}
	})
}

func BenchmarkRingLookupParallel(b *testing.B) {
	b.Run("lib=switchboard", func(b *testing.B) {
		r := newSwitchboardRing(b, ringBenchNodes)
		defer startCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			var n router.Node
			for i := 0; pb.Next(); i++ {
				n, _ = r.Lookup(ringBenchKeyStrings[i&(ringBenchKeys-1)])
			}
			_ = n
		})
	})
	b.Run("lib=buraksezer", func(b *testing.B) {
		c := newBuraksezer(ringBenchNodes)
		defer startCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			var m consistent.Member
			for i := 0; pb.Next(); i++ {
				m = c.LocateKey(ringBenchKeyBytes[i&(ringBenchKeys-1)])
			}
			_ = m
		})
	})
	b.Run("lib=groupcache", func(b *testing.B) {
		m := newGroupcache(ringBenchNodes)
		defer startCPU(b)()
		b.RunParallel(func(pb *testing.PB) {
			var s string
			for i := 0; pb.Next(); i++ {
				s = m.Get(ringBenchKeyStrings[i&(ringBenchKeys-1)])
			}
			_ = s
		})
	})
}

// BenchmarkRingBuild builds a ring of 1,000 nodes from scratch.
func BenchmarkRingBuild(b *testing.B) {
	b.Run("lib=switchboard", func(b *testing.B) {
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			newSwitchboardRing(b, ringBuildNodes)
		}
	})
	b.Run("lib=buraksezer", func(b *testing.B) {
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			newBuraksezer(ringBuildNodes)
		}
	})
	b.Run("lib=groupcache", func(b *testing.B) {
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			newGroupcache(ringBuildNodes)
		}
	})
}

// BenchmarkRingChange adds one node to a 1,000-node ring and removes it
// again (two membership changes per op). groupcache cannot remove nodes.
func BenchmarkRingChange(b *testing.B) {
	b.Run("lib=switchboard", func(b *testing.B) {
		r := newSwitchboardRing(b, ringBuildNodes)
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			if err := r.Add(router.Node{ID: "extra"}); err != nil {
				b.Fatal(err)
			}
			if err := r.Remove("extra"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lib=buraksezer", func(b *testing.B) {
		c := newBuraksezer(ringBuildNodes)
		defer startCPU(b)()
		for i := 0; i < b.N; i++ {
			c.Add(bsMember("extra"))
			c.Remove("extra")
		}
	})
}
