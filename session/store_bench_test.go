package session

import (
	"strconv"
	"sync/atomic"
	"testing"
)

func benchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "conversation:" + strconv.Itoa(i)
	}
	return keys
}

func BenchmarkGet(b *testing.B) {
	keys := benchKeys(1 << 16)
	s, err := New(Config[string, int]{Capacity: 1 << 16, JanitorInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i, k := range keys {
		s.Set(k, i)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.Get(keys[i&(len(keys)-1)])
			i += 7
		}
	})
}

func BenchmarkSetEvict(b *testing.B) {
	keys := benchKeys(1 << 17)
	s, err := New(Config[string, int]{Capacity: 1 << 15, JanitorInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.Set(keys[i&(len(keys)-1)], i)
			i += 7
		}
	})
}

func BenchmarkIntGet(b *testing.B) {
	s, err := New(Config[uint64, int]{Capacity: 1 << 16, JanitorInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := range uint64(1 << 16) {
		s.Set(i, int(i))
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var i uint64
		for pb.Next() {
			s.Get(i & (1<<16 - 1))
			i += 7
		}
	})
}

// BenchmarkSetEvictOnEvict is BenchmarkSetEvict with an OnEvict callback:
// every Set evicts, so it measures the cost of reporting an eviction.
func BenchmarkSetEvictOnEvict(b *testing.B) { benchSetEvictOnEvict(b, 0) }

// BenchmarkSetEvictOnEvictBacklog adds back-pressure (OnEvictBacklog).
func BenchmarkSetEvictOnEvictBacklog(b *testing.B) { benchSetEvictOnEvict(b, 1024) }

func benchSetEvictOnEvict(b *testing.B, backlog int) {
	keys := benchKeys(1 << 17)
	var evicted atomic.Int64
	s, err := New(Config[string, int]{Capacity: 1 << 15, JanitorInterval: -1, OnEvictBacklog: backlog,
		OnEvict: func(string, int, Reason) { evicted.Add(1) }})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			s.Set(keys[i&(len(keys)-1)], i)
			i += 7
		}
	})
}
