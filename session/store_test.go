package session

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/observe"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// evictLog records OnEvict calls.
type evictLog[K comparable, V any] struct {
	mu  sync.Mutex
	got []evictRec[K, V]
}

type evictRec[K comparable, V any] struct {
	Key    K
	Value  V
	Reason Reason
}

func (l *evictLog[K, V]) fn(k K, v V, r Reason) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, evictRec[K, V]{k, v, r})
}

func (l *evictLog[K, V]) all() []evictRec[K, V] {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]evictRec[K, V](nil), l.got...)
}

// flushEvictions waits until OnEvict has returned for every eviction so far.
func (s *Store[K, V]) flushEvictions() {
	if s.notes != nil {
		s.notes.flush()
	}
}

func newStore[K comparable, V any](t *testing.T, cfg Config[K, V]) *Store[K, V] {
	t.Helper()
	s, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config[string, int]
		field string
	}{
		{"negative capacity", Config[string, int]{Capacity: -1}, "Capacity"},
		{"negative ttl", Config[string, int]{TTL: -time.Second}, "TTL"},
		{"negative batch", Config[string, int]{JanitorBatch: -1}, "JanitorBatch"},
		{"negative backlog", Config[string, int]{OnEvictBacklog: -1}, "OnEvictBacklog"},
		{"shards not power of two", Config[string, int]{Shards: 3}, "Shards"},
		{"negative shards", Config[string, int]{Shards: -4}, "Shards"},
		{"too many shards", Config[string, int]{Shards: 1 << 17}, "Shards"},
		{"shards above capacity", Config[string, int]{Shards: 16, Capacity: 8}, "Shards"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.cfg)
			require.Error(t, err)
			assert.Nil(t, s)
			assert.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.field)
		})
	}
}

func TestDefaultShards(t *testing.T) {
	for _, capacity := range []int{0, 1, 5, 100, 1_000_000} {
		s := newStore(t, Config[int, int]{Capacity: capacity, JanitorInterval: -1})
		n := s.Shards()
		assert.Equal(t, 0, n&(n-1), "power of two")
		if capacity > 0 {
			assert.LessOrEqual(t, n, capacity)
		} else {
			assert.GreaterOrEqual(t, n, 16)
		}
	}
}

func TestCapacityEvictionOrder(t *testing.T) {
	var log evictLog[string, int]
	s := newStore(t, Config[string, int]{Shards: 1, Capacity: 3, OnEvict: log.fn, JanitorInterval: -1})
	s.Set("a", 1)
	s.Set("b", 2)
	s.Set("c", 3)
	_, ok := s.Get("a") // order, most recent first: a c b
	require.True(t, ok)
	s.Set("d", 4) // evicts b
	require.True(t, s.Touch("c"))
	s.Set("e", 5) // order before: c d a → evicts a
	s.Set("d", 40)
	s.Set("f", 6) // order before: d e c → evicts c
	s.flushEvictions()
	assert.Equal(t, []evictRec[string, int]{
		{"b", 2, Capacity},
		{"a", 1, Capacity},
		{"d", 4, Replaced},
		{"c", 3, Capacity},
	}, log.all())
	assert.Equal(t, 3, s.Len())
	for k, want := range map[string]int{"d": 40, "e": 5, "f": 6} {
		v, ok := s.Peek(k)
		assert.True(t, ok, k)
		assert.Equal(t, want, v, k)
	}
}

func TestCapacityIsATotalBound(t *testing.T) {
	var evictions atomic.Int64
	s := newStore(t, Config[int, int]{Shards: 8, Capacity: 100, JanitorInterval: -1,
		OnEvict: func(int, int, Reason) { evictions.Add(1) }})
	for i := range 10_000 {
		s.Set(i, i)
		require.LessOrEqual(t, s.Len(), 100)
	}
	assert.Equal(t, 100, s.Len())
	s.flushEvictions()
	assert.Equal(t, int64(10_000-100), evictions.Load())
}

func TestFixedTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log evictLog[string, string]
		s := newStore(t, Config[string, string]{TTL: 10 * time.Second, OnEvict: log.fn})
		s.Set("k", "v")
		time.Sleep(9 * time.Second)
		v, ok := s.Get("k")
		require.True(t, ok)
		assert.Equal(t, "v", v)
		time.Sleep(time.Second) // 10 s after the write: Get does not extend a fixed TTL
		_, ok = s.Get("k")
		assert.False(t, ok)
		synctest.Wait() // the delivery goroutine is idle: OnEvict has run
		assert.Equal(t, []evictRec[string, string]{{"k", "v", Expired}}, log.all())
		assert.Equal(t, 0, s.Len())
	})
}

func TestSlidingTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, Config[string, int]{TTL: 10 * time.Second, Sliding: true})
		s.Set("k", 1)
		for range 5 { // each Get restarts the TTL
			time.Sleep(6 * time.Second)
			_, ok := s.Get("k")
			require.True(t, ok)
		}
		time.Sleep(6 * time.Second)
		_, ok := s.Peek("k") // Peek does not restart it
		require.True(t, ok)
		time.Sleep(4 * time.Second)
		_, ok = s.Get("k")
		assert.False(t, ok)
	})
}

func TestTouchRestartsFixedTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, Config[string, int]{TTL: 10 * time.Second})
		s.Set("k", 1)
		time.Sleep(8 * time.Second)
		require.True(t, s.Touch("k"))
		time.Sleep(8 * time.Second)
		_, ok := s.Get("k")
		require.True(t, ok)
		time.Sleep(2 * time.Second)
		assert.False(t, s.Touch("k"))
		assert.False(t, s.Touch("missing"))
	})
}

func TestSetWithTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, Config[string, int]{TTL: time.Minute})
		s.SetWithTTL("short", 1, time.Second)
		s.SetWithTTL("forever", 2, 0)
		s.Set("default", 3)
		time.Sleep(2 * time.Second)
		_, ok := s.Get("short")
		assert.False(t, ok)
		time.Sleep(time.Hour)
		_, ok = s.Get("default")
		assert.False(t, ok)
		v, ok := s.Get("forever")
		assert.True(t, ok)
		assert.Equal(t, 2, v)
	})
}

func TestExpiredReasons(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log evictLog[string, int]
		s := newStore(t, Config[string, int]{Shards: 1, Capacity: 2, TTL: time.Second, OnEvict: log.fn, JanitorInterval: -1})
		s.Set("a", 1)
		s.Set("b", 2)
		time.Sleep(2 * time.Second)
		s.Set("a", 10)              // replaces an expired value
		s.Set("c", 3)               // evicts the expired LRU entry b
		time.Sleep(2 * time.Second) // a and c expire
		assert.False(t, s.Delete("a"))
		_, ok := s.Update("c", func(old int, ok bool) (int, bool) {
			assert.False(t, ok)
			return 0, false
		})
		assert.False(t, ok)
		synctest.Wait()
		assert.Equal(t, []evictRec[string, int]{
			{"a", 1, Expired}, {"b", 2, Expired}, {"a", 10, Expired}, {"c", 3, Expired},
		}, log.all())
	})
}

func TestJanitorSweepsInBatches(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var expired atomic.Int64
		s := newStore(t, Config[int, int]{Shards: 2, TTL: time.Second, JanitorInterval: time.Second, JanitorBatch: 8,
			OnEvict: func(_ int, _ int, r Reason) {
				if r == Expired {
					expired.Add(1)
				}
			}})
		for i := range 100 {
			s.Set(i, i)
		}
		s.SetWithTTL(-1, -1, 0) // never expires
		time.Sleep(time.Second) // the first tick: everything has just expired
		synctest.Wait()         // and the first sweep is over
		n := expired.Load()
		assert.GreaterOrEqual(t, n, int64(8), "the first sweep examined at least one shard batch")
		assert.LessOrEqual(t, n, int64(16), "one sweep examines at most 2×8 slots")
		for range 20 {
			if expired.Load() == 100 {
				break
			}
			time.Sleep(time.Second)
			synctest.Wait()
		}
		assert.Equal(t, int64(100), expired.Load())
		assert.Equal(t, 1, s.Len())
		_, ok := s.Peek(-1)
		assert.True(t, ok)
	})
}

func TestOnEvictReasons(t *testing.T) {
	var log evictLog[string, int]
	s := newStore(t, Config[string, int]{Shards: 1, Capacity: 2, OnEvict: log.fn, JanitorInterval: -1})
	s.Set("a", 1)
	s.Set("a", 2)
	assert.True(t, s.Delete("a"))
	assert.False(t, s.Delete("a"))
	s.Set("b", 3)
	s.Set("c", 4)
	s.Set("d", 5)
	_, _ = s.Update("c", func(int, bool) (int, bool) { return 0, false })
	_, _ = s.Update("d", func(old int, ok bool) (int, bool) { return old + 1, true }) // modified: not reported
	s.flushEvictions()
	assert.Equal(t, []evictRec[string, int]{
		{"a", 1, Replaced}, {"a", 2, Deleted}, {"b", 3, Capacity}, {"c", 4, Deleted},
	}, log.all())
}

// TestCallbackRunsOutsideLock: OnEvict calls back into the store (same shard,
// since there is only one) for every reason, and its own evictions queue
// behind it; holding the shard lock would deadlock.
func TestCallbackRunsOutsideLock(t *testing.T) {
	var s *Store[string, int]
	var calls atomic.Int64
	// Real time (a mutex deadlock is not visible to testing/synctest), so
	// short TTL and janitor interval.
	s = newStore(t, Config[string, int]{Shards: 1, Capacity: 2, TTL: 20 * time.Millisecond, JanitorInterval: 5 * time.Millisecond,
		OnEvict: func(k string, v int, r Reason) {
			calls.Add(1)
			_, _ = s.Get(k)
			_ = s.Len()
			if len(k) == 1 {
				s.Set("audit:"+k, v) // may itself evict and re-enter
			}
			s.Range(func(string, int) bool { return true })
		}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Set("a", 1)
		s.Set("a", 2) // Replaced
		s.Set("b", 3) // evictions cascade through the callback
		s.Delete("b") // Deleted (if still there)
		time.Sleep(50 * time.Millisecond)
		_, _ = s.Get("audit:replaced")    // Expired
		time.Sleep(20 * time.Millisecond) // janitor sweeps with callbacks
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: OnEvict calling the store blocked")
	}
	s.flushEvictions()
	assert.Greater(t, calls.Load(), int64(3))
}

func TestUpdate(t *testing.T) {
	s := newStore(t, Config[string, int]{JanitorInterval: -1})
	v, ok := s.Update("n", func(old int, ok bool) (int, bool) {
		assert.False(t, ok)
		return old + 1, true
	})
	assert.True(t, ok)
	assert.Equal(t, 1, v)
	v, _ = s.Update("n", func(old int, ok bool) (int, bool) {
		assert.True(t, ok)
		return old * 10, true
	})
	assert.Equal(t, 10, v)
	_, ok = s.Update("missing", func(int, bool) (int, bool) { return 5, false })
	assert.False(t, ok)
	assert.Equal(t, 1, s.Len())

	// A panicking fn leaves the entry unchanged and the shard usable.
	require.Panics(t, func() {
		s.Update("n", func(int, bool) (int, bool) { panic("boom") })
	})
	v, ok = s.Get("n")
	assert.True(t, ok)
	assert.Equal(t, 10, v)
}

func TestUpdateIsAtomic(t *testing.T) {
	s := newStore(t, Config[string, int]{Shards: 4, JanitorInterval: -1})
	const workers, rounds = 8, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range rounds {
				s.Update("counter", func(old int, _ bool) (int, bool) { return old + 1, true })
				s.Set("other"+strconv.Itoa(i%7), i)
			}
		})
	}
	wg.Wait()
	v, _ := s.Get("counter")
	assert.Equal(t, workers*rounds, v)
}

func TestRange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, Config[int, int]{Shards: 4, JanitorInterval: -1})
		for i := range 50 {
			s.Set(i, i*i)
		}
		s.SetWithTTL(100, 0, time.Second)
		time.Sleep(time.Minute)
		seen := map[int]int{}
		s.Range(func(k, v int) bool {
			seen[k] = v
			s.Delete(k) // calling the store from fn is allowed
			return true
		})
		require.Len(t, seen, 50, "expired entry skipped")
		for k, v := range seen {
			assert.Equal(t, k*k, v)
		}
		assert.Equal(t, 1, s.Len(), "only the expired entry is left")

		for i := range 50 {
			s.Set(i, i)
		}
		n := 0
		s.Range(func(int, int) bool { n++; return n < 3 })
		assert.Equal(t, 3, n)
	})
}

type convID string

type pairKey struct {
	Tenant int
	ID     string
}

func TestKeyKinds(t *testing.T) {
	t.Run("named string", func(t *testing.T) { roundTrip(t, func(i int) convID { return convID("c" + strconv.Itoa(i)) }) })
	t.Run("int", func(t *testing.T) { roundTrip(t, func(i int) int { return i }) })
	t.Run("int32", func(t *testing.T) { roundTrip(t, func(i int) int32 { return int32(-i) }) })
	t.Run("uint16", func(t *testing.T) { roundTrip(t, func(i int) uint16 { return uint16(i) }) })
	t.Run("uint8", func(t *testing.T) { roundTrip(t, func(i int) uint8 { return uint8(i) }) })
	t.Run("struct", func(t *testing.T) { roundTrip(t, func(i int) pairKey { return pairKey{i % 3, strconv.Itoa(i)} }) })
}

func roundTrip[K comparable](t *testing.T, key func(int) K) {
	s := newStore(t, Config[K, int]{Shards: 16, JanitorInterval: -1})
	for i := range 200 {
		s.Set(key(i), i)
	}
	used := 0
	for i := range s.shards {
		if s.shards[i].n > 0 {
			used++
		}
	}
	assert.Greater(t, used, 8, "keys spread over the shards")
	for i := range 200 {
		v, ok := s.Get(key(i))
		require.True(t, ok)
		assert.Equal(t, i%256, v%256)
	}
}

func TestGetDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	reg := prometheus.NewRegistry()
	o, err := observe.New(observe.Config{Registerer: reg, DisableRuntimeCollectors: true})
	require.NoError(t, err)
	for _, withObserver := range []bool{false, true} {
		t.Run(fmt.Sprintf("observer=%v", withObserver), func(t *testing.T) {
			cfg := Config[string, int]{Capacity: 1000, TTL: time.Minute, Sliding: true, JanitorInterval: -1}
			icfg := Config[int, int]{Capacity: 1000}
			if withObserver {
				cfg.Observer, cfg.Name = o, "alloc-s"
				icfg.Observer, icfg.Name = o, "alloc-i"
			}
			s := newStore(t, cfg)
			is := newStore(t, icfg)
			keys := make([]string, 2000)
			for i := range keys {
				keys[i] = "k" + strconv.Itoa(i)
				s.Set(keys[i], i)
				is.Set(i, i)
			}
			assert.Zero(t, testing.AllocsPerRun(20, func() {
				for i, k := range keys {
					s.Get(k)
					is.Get(i)
				}
			}), "Get")
			assert.Zero(t, testing.AllocsPerRun(20, func() {
				for i, k := range keys {
					s.Set(k, i) // steady state: full shards reuse their slots
					is.Set(i+2000, i)
				}
			}), "Set")
		})
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	o, err := observe.New(observe.Config{Registerer: reg, DisableRuntimeCollectors: true})
	require.NoError(t, err)
	s, err := New(Config[string, int]{Shards: 1, Capacity: 2, Observer: o, Name: "conv", JanitorInterval: -1})
	require.NoError(t, err)
	_, err = New(Config[string, int]{Observer: o, Name: "conv"})
	require.ErrorIs(t, err, ErrInvalidConfig, "two live stores cannot share a name")

	s.Set("a", 1)
	s.Get("a")
	s.Get("a")
	s.Get("x")
	s.Set("a", 2) // replaced
	s.Set("b", 1) //
	s.Set("c", 1) // capacity
	s.Delete("b") // deleted
	got := gather(t, reg)
	assert.Equal(t, 2.0, got["switchboard_session_hits_total"])
	assert.Equal(t, 1.0, got["switchboard_session_misses_total"])
	assert.Equal(t, 1.0, got["switchboard_session_evictions_total/capacity"])
	assert.Equal(t, 1.0, got["switchboard_session_evictions_total/replaced"])
	assert.Equal(t, 1.0, got["switchboard_session_evictions_total/deleted"])
	assert.Equal(t, 0.0, got["switchboard_session_evictions_total/expired"])
	assert.Equal(t, 1.0, got["switchboard_session_entries"])

	require.NoError(t, s.Close())
	require.NoError(t, s.Close(), "idempotent")
	for name := range gather(t, reg) {
		assert.NotContains(t, name, "session", "Close unregisters")
	}
	s2, err := New(Config[string, int]{Observer: o, Name: "conv", JanitorInterval: -1})
	require.NoError(t, err, "the name is free again after Close")
	require.NoError(t, s2.Close())
}

// gather returns metric values keyed by name, or name/reason for evictions.
func gather(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					name += "/" + l.GetValue()
				}
			}
			out[name] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestConcurrentMix hammers one small store from many goroutines with every
// operation; run under -race it checks the locking, and the bound must hold.
func TestConcurrentMix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var evicted atomic.Int64
		s := newStore(t, Config[int, int]{Shards: 4, Capacity: 64, TTL: time.Second, Sliding: true,
			OnEvict: func(int, int, Reason) { evicted.Add(1) }})
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := range 2000 {
					k := (i*7 + w) % 200
					switch i % 7 {
					case 0:
						s.Set(k, i)
					case 1:
						s.Delete(k)
					case 2:
						s.Update(k, func(old int, _ bool) (int, bool) { return old + 1, k%2 == 0 })
					case 3:
						s.Touch(k)
					case 4:
						if i%100 == 4 {
							s.Range(func(int, int) bool { return true })
							time.Sleep(100 * time.Millisecond)
						}
					default:
						s.Get(k)
					}
				}
			})
		}
		wg.Wait()
		synctest.Wait()
		assert.LessOrEqual(t, s.Len(), 64)
		assert.Positive(t, evicted.Load())
		var errs []error
		s.Range(func(k, _ int) bool {
			if _, ok := s.Peek(k); !ok {
				errs = append(errs, errors.New("range returned a key Peek cannot see"))
			}
			return true
		})
		assert.Empty(t, errs)
	})
}

func TestHugeTTLDoesNotOverflow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, Config[string, int]{TTL: time.Duration(1<<63 - 1), Sliding: true})
		s.Set("k", 1)
		time.Sleep(time.Hour)
		_, ok := s.Get("k")
		assert.True(t, ok)
		_, ok = s.Get("k")
		assert.True(t, ok)
	})
}

// TestStoreShutdown covers the lifecycle convention: Ready, a janitor held
// back by a slow OnEvict, Shutdown delivering the pending evictions, and the
// store staying usable as a map without reporting evictions.
func TestStoreShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var log evictLog[int, int]
		s, err := New(Config[int, int]{Shards: 2, TTL: time.Second, JanitorInterval: time.Second, OnEvictBacklog: 4,
			OnEvict: func(k, v int, r Reason) {
				<-release // a slow host
				log.fn(k, v, r)
			}})
		require.NoError(t, err)
		require.NoError(t, s.Ready())
		for i := range 40 {
			s.Set(i, i)
		}
		time.Sleep(time.Second)
		synctest.Wait() // the janitor swept one shard and waits for OnEvict
		left := s.Len()
		assert.Positive(t, left, "the janitor waits before the next shard")
		assert.Less(t, left, 40)

		done := make(chan error, 1)
		go func() { done <- s.Shutdown(context.Background()) }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Shutdown returned before the pending evictions were delivered")
		default:
		}
		assert.ErrorIs(t, s.Ready(), ErrClosed)
		close(release)
		require.NoError(t, <-done)
		got := log.all()
		require.Len(t, got, 40-left, "every pending eviction delivered")
		for i := 1; i < len(got); i++ {
			assert.Less(t, got[i-1].Key, got[i].Key, "in the janitor's (slab) order")
			assert.Equal(t, Expired, got[i].Reason)
		}
		require.NoError(t, s.Shutdown(context.Background()), "idempotent")
		require.NoError(t, s.Close(), "idempotent")

		s.Set(100, 2)
		v, ok := s.Get(100)
		assert.True(t, ok, "still usable as a map")
		assert.Equal(t, 2, v)
		s.Delete(100)
		synctest.Wait()
		assert.Len(t, log.all(), 40-left, "no eviction reported after Shutdown")
	})
}

// TestShutdownBoundedByContext: when ctx ends first, Shutdown drops what is
// pending but still waits for the OnEvict call in progress.
func TestShutdownBoundedByContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int64
		s, err := New(Config[string, int]{JanitorInterval: -1, OnEvict: func(string, int, Reason) {
			calls.Add(1)
			<-release
		}})
		require.NoError(t, err)
		for i := range 5 {
			s.Set("k", i) // 4 replacements: one delivered and blocked, 3 pending
		}
		synctest.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- s.Shutdown(ctx) }()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Shutdown returned while OnEvict was running")
		default:
		}
		close(release)
		require.ErrorIs(t, <-done, context.DeadlineExceeded)
		assert.Equal(t, int64(1), calls.Load(), "the pending evictions were dropped")
		require.NoError(t, s.Shutdown(context.Background()), "nothing left to deliver")
		s.Set("k", 9)
		synctest.Wait()
		assert.Equal(t, int64(1), calls.Load(), "no eviction reported after Shutdown")
	})
}

// TestCloseDropsPending: Close delivers nothing more but waits for the
// OnEvict call in progress.
func TestCloseDropsPending(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int64
		s, err := New(Config[string, int]{TTL: time.Second, OnEvict: func(string, int, Reason) {
			calls.Add(1)
			<-release
		}})
		require.NoError(t, err)
		for i := range 5 {
			s.Set("k", i)
		}
		synctest.Wait()
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Close returned while OnEvict was running")
		default:
		}
		close(release)
		require.NoError(t, <-done)
		assert.Equal(t, int64(1), calls.Load(), "the pending evictions were dropped")
		assert.ErrorIs(t, s.Ready(), ErrClosed)
		require.NoError(t, s.Close(), "idempotent")
	})
}

// TestOnEvictOrder: evictions from several shards reach OnEvict in the
// order they happened, also when the backlog bound makes the caller wait.
func TestOnEvictOrder(t *testing.T) {
	for _, backlog := range []int{0, 3} {
		t.Run(fmt.Sprintf("backlog=%d", backlog), func(t *testing.T) {
			var log evictLog[int, int]
			s := newStore(t, Config[int, int]{Shards: 8, JanitorInterval: -1, OnEvictBacklog: backlog, OnEvict: log.fn})
			model := map[int]int{}
			var want []evictRec[int, int]
			r := rand.New(rand.NewPCG(1, uint64(backlog+10)))
			for i := range 5000 {
				k := r.IntN(50)
				old, had := model[k]
				if r.IntN(3) == 0 {
					assert.Equal(t, had, s.Delete(k))
					if had {
						want = append(want, evictRec[int, int]{k, old, Deleted})
						delete(model, k)
					}
					continue
				}
				s.Set(k, i)
				if had {
					want = append(want, evictRec[int, int]{k, old, Replaced})
				}
				model[k] = i
			}
			s.flushEvictions()
			assert.Equal(t, want, log.all())
		})
	}
}

// TestOnEvictOrderConcurrent: with one shard of capacity 1, every insert
// evicts the entry inserted before it, whose value fn drew from a counter
// under the shard lock; OnEvict must see the values in increasing order
// although many goroutines insert concurrently.
func TestOnEvictOrderConcurrent(t *testing.T) {
	var mu sync.Mutex
	last, n, disorder := 0, 0, 0
	s := newStore(t, Config[int, int]{Shards: 1, Capacity: 1, JanitorInterval: -1, OnEvictBacklog: 8,
		OnEvict: func(_, v int, r Reason) {
			mu.Lock()
			defer mu.Unlock()
			if v <= last || r != Capacity {
				disorder++
			}
			last = v
			n++
		}})
	var ctr atomic.Int64
	const workers, rounds = 8, 2000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				s.Update(w*rounds+i, func(int, bool) (int, bool) { return int(ctr.Add(1)), true })
			}
		})
	}
	wg.Wait()
	s.flushEvictions()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, workers*rounds-1, n)
	assert.Zero(t, disorder)
}

// TestOnEvictHostMutex: a host holding its own mutex around Set and Delete
// takes the same mutex in OnEvict. OnEvict runs on the store's goroutine,
// and without OnEvictBacklog no call waits for it, so this cannot deadlock
// however many evictions queue up behind the host's lock.
func TestOnEvictHostMutex(t *testing.T) {
	const ops = 20_000
	var mu sync.Mutex
	inCall := false
	var seen, wrong int
	s := newStore(t, Config[int, int]{Shards: 2, Capacity: 2, JanitorInterval: -1,
		OnEvict: func(int, int, Reason) {
			mu.Lock()
			defer mu.Unlock()
			if inCall {
				wrong++
			}
			seen++
		}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range ops {
			mu.Lock()
			inCall = true
			s.Set(i, i)
			if i%3 == 0 {
				s.Delete(i)
			}
			inCall = false
			mu.Unlock()
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: OnEvict waited for a lock held by the caller of Set or Delete")
	}
	s.flushEvictions()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, ops-s.Len(), seen)
	assert.Zero(t, wrong, "OnEvict ran while the host was inside a store call")
}

// TestJanitorWaitsForOnEvict: without OnEvictBacklog the janitor still
// stops sweeping while more than JanitorBatch evictions are undelivered.
func TestJanitorWaitsForOnEvict(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var log evictLog[int, int]
		s := newStore(t, Config[int, int]{Shards: 2, TTL: time.Second, JanitorInterval: time.Second, JanitorBatch: 8,
			OnEvict: func(k, v int, r Reason) {
				<-release
				log.fn(k, v, r)
			}})
		for i := range 100 {
			s.Set(i, i)
		}
		time.Sleep(time.Second)
		synctest.Wait() // one sweep: up to 8 per shard, 16 > 8 pending: the janitor waits
		left := s.Len()
		assert.GreaterOrEqual(t, left, 100-16)
		time.Sleep(time.Minute)
		synctest.Wait()
		assert.Equal(t, left, s.Len(), "no sweep while OnEvict lags")
		close(release)
		for range 20 {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		assert.Zero(t, s.Len())
		assert.Len(t, log.all(), 100)
	})
}

// TestBackPressure: once OnEvictBacklog evictions are undelivered the
// evicting caller waits, without holding its shard lock, until OnEvict
// catches up.
func TestBackPressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var calls atomic.Int64
		s := newStore(t, Config[int, int]{Shards: 1, JanitorInterval: -1, OnEvictBacklog: 2,
			OnEvict: func(int, int, Reason) {
				calls.Add(1)
				<-release
			}})
		for i := range 6 {
			s.Set(i, i)
		}
		var deleted atomic.Int64
		go func() {
			for i := range 6 {
				s.Delete(i)
				deleted.Add(1)
			}
		}()
		synctest.Wait()
		// Delete 0 is being delivered, 1 is pending, 2 makes three: it waits.
		assert.Equal(t, int64(2), deleted.Load())
		assert.Equal(t, int64(1), calls.Load())
		require.True(t, s.shards[0].mu.TryLock(), "the waiting caller holds no shard lock")
		s.shards[0].mu.Unlock()
		for want := int64(3); want <= 6; want++ {
			release <- struct{}{}
			synctest.Wait()
			assert.Equal(t, want, deleted.Load(), "one delivery lets one caller on")
		}
		close(release)
		synctest.Wait()
		assert.Equal(t, int64(6), calls.Load())
	})
}

// TestEvictionsFromOnEvictDoNotWait: OnEvict calls Set, which evicts while
// the backlog is over its bound of 1; waiting would wait for itself.
func TestEvictionsFromOnEvictDoNotWait(t *testing.T) {
	var s *Store[string, int]
	var log evictLog[string, int]
	var onGoroutine, offGoroutine atomic.Int64
	s = newStore(t, Config[string, int]{Shards: 1, Capacity: 1, JanitorInterval: -1, OnEvictBacklog: 1,
		OnEvict: func(k string, v int, r Reason) {
			log.fn(k, v, r)
			if onDeliveryGoroutine() {
				onGoroutine.Add(1)
			}
			if !strings.HasPrefix(k, "audit:") {
				s.Set("audit:"+k, v) // evicts the entry the host set meanwhile
			}
		}})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 200 {
			s.Set(strconv.Itoa(i), i)
			if onDeliveryGoroutine() {
				offGoroutine.Add(1)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: a Set from OnEvict waited for OnEvict")
	}
	s.flushEvictions()
	got := log.all()
	audits := 0
	for _, e := range got {
		if !strings.HasPrefix(e.Key, "audit:") {
			audits++ // each non-audit eviction inserted one audit entry
		}
	}
	assert.Equal(t, 200+audits-s.Len(), len(got), "every insert but the survivor was evicted and reported")
	assert.Equal(t, int64(len(got)), onGoroutine.Load())
	assert.Zero(t, offGoroutine.Load())
}

// TestEvictionGoroutine: no goroutine without OnEvict; with it, one that
// Close ends (goleak would also catch it at the end of the package).
func TestEvictionGoroutine(t *testing.T) {
	before := goleak.IgnoreCurrent()
	s := newStore(t, Config[int, int]{JanitorInterval: -1})
	assert.Nil(t, s.notes)
	goleak.VerifyNone(t, before)

	s2, err := New(Config[int, int]{Shards: 1, Capacity: 1, JanitorInterval: -1, OnEvict: func(int, int, Reason) {}})
	require.NoError(t, err)
	s2.Set(1, 1)
	s2.Set(2, 2)
	require.NoError(t, s2.Close())
	goleak.VerifyNone(t, before)
}

// TestSetWithOnEvictDoesNotAllocate: queueing an eviction reuses the ring.
func TestSetWithOnEvictDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	var n atomic.Int64
	s := newStore(t, Config[string, int]{Capacity: 1000, JanitorInterval: -1,
		OnEvict: func(string, int, Reason) { n.Add(1) }})
	keys := make([]string, 2000)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	for range 3 {
		for i, k := range keys {
			s.Set(k, i)
		}
	}
	s.flushEvictions()
	assert.Zero(t, testing.AllocsPerRun(20, func() {
		for i, k := range keys {
			s.Set(k, i) // every Set evicts
		}
	}))
	s.flushEvictions()
	assert.Equal(t, int64((3+1+20)*2000-s.Len()), n.Load(), "every Set replaced or evicted one entry, but for those left")
}
