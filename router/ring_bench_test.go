package router

import (
	"fmt"
	"testing"
)

// Benchmarks for the ring's own hot paths; comparisons with other libraries
// live in bench/router.

var (
	ringBenchSink  Node
	ringBenchSinkN []Node
)

func ringBenchKeys() []string {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("user:%019d", i*7919) // 24 bytes
	}
	return keys
}

func newBenchRing(b *testing.B, nodes int, cfg RingConfig) *Ring {
	cfg.Nodes = ringNodesOf(ringIDs(0, nodes))
	return newTestRing(b, cfg)
}

func BenchmarkRingLookup(b *testing.B) {
	keys := ringBenchKeys()
	for _, n := range []int{8, 64, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			r := newBenchRing(b, n, RingConfig{})
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				ringBenchSink, _ = r.Lookup(keys[i&1023])
			}
		})
	}
}

func BenchmarkRingLookupParallel(b *testing.B) {
	keys := ringBenchKeys()
	for _, withObserver := range []bool{false, true} {
		b.Run(fmt.Sprintf("observer=%v", withObserver), func(b *testing.B) {
			cfg := RingConfig{}
			if withObserver {
				o, _ := newRingObserver(b)
				cfg.Observer = o
			}
			r := newBenchRing(b, 64, cfg)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var n Node
				for i := 0; pb.Next(); i++ {
					n, _ = r.Lookup(keys[i&1023])
				}
				_ = n
			})
		})
	}
}

func BenchmarkRingAppendLookupN(b *testing.B) {
	keys := ringBenchKeys()
	r := newBenchRing(b, 64, RingConfig{})
	dst := make([]Node, 0, 3)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		dst = r.AppendLookupN(dst[:0], keys[i&1023], 3)
	}
	ringBenchSinkN = dst
}

func BenchmarkRingAcquireRelease(b *testing.B) {
	keys := ringBenchKeys()
	r := newBenchRing(b, 64, RingConfig{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		n, release, err := r.Acquire(keys[i&1023])
		if err != nil {
			b.Fatal(err)
		}
		ringBenchSink = n
		release()
	}
}

// BenchmarkRingBuild builds a 1,000-node ring (400,000 points) from scratch.
func BenchmarkRingBuild(b *testing.B) {
	nodes := ringNodesOf(ringIDs(0, 1000))
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewRing(RingConfig{Nodes: nodes})
		if err != nil {
			b.Fatal(err)
		}
		ringBenchSink = r.Nodes()[0]
	}
}

// BenchmarkRingAddRemove adds and removes one node on a 1,000-node ring.
func BenchmarkRingAddRemove(b *testing.B) {
	for _, withChange := range []bool{false, true} {
		b.Run(fmt.Sprintf("onchange=%v", withChange), func(b *testing.B) {
			cfg := RingConfig{}
			if withChange {
				cfg.OnChange = func(RingChange) {}
			}
			r := newBenchRing(b, 1000, cfg)
			b.ReportAllocs()
			for b.Loop() {
				if err := r.Add(Node{ID: "extra"}); err != nil {
					b.Fatal(err)
				}
				if err := r.Remove("extra"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
