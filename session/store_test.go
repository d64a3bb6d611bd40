package session

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
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
	assert.Equal(t, int64(10_000-100), evictions.Load())
}

func TestFixedTTL(t *testing.T) {
	clk := newFakeClock()
	var log evictLog[string, string]
	s := newStore(t, Config[string, string]{TTL: 10 * time.Second, Clock: clk, OnEvict: log.fn})
	s.Set("k", "v")
	clk.Advance(9 * time.Second)
	v, ok := s.Get("k")
	require.True(t, ok)
	assert.Equal(t, "v", v)
	clk.Advance(time.Second) // 10 s after the write: Get does not extend a fixed TTL
	_, ok = s.Get("k")
	assert.False(t, ok)
	assert.Equal(t, []evictRec[string, string]{{"k", "v", Expired}}, log.all())
	assert.Equal(t, 0, s.Len())
}

func TestSlidingTTL(t *testing.T) {
	clk := newFakeClock()
	s := newStore(t, Config[string, int]{TTL: 10 * time.Second, Sliding: true, Clock: clk})
	s.Set("k", 1)
	for range 5 { // each Get restarts the TTL
		clk.Advance(6 * time.Second)
		_, ok := s.Get("k")
		require.True(t, ok)
	}
	clk.Advance(6 * time.Second)
	_, ok := s.Peek("k") // Peek does not restart it
	require.True(t, ok)
	clk.Advance(4 * time.Second)
	_, ok = s.Get("k")
	assert.False(t, ok)
}

func TestTouchRestartsFixedTTL(t *testing.T) {
	clk := newFakeClock()
	s := newStore(t, Config[string, int]{TTL: 10 * time.Second, Clock: clk})
	s.Set("k", 1)
	clk.Advance(8 * time.Second)
	require.True(t, s.Touch("k"))
	clk.Advance(8 * time.Second)
	_, ok := s.Get("k")
	require.True(t, ok)
	clk.Advance(2 * time.Second)
	assert.False(t, s.Touch("k"))
	assert.False(t, s.Touch("missing"))
}

func TestSetWithTTL(t *testing.T) {
	clk := newFakeClock()
	s := newStore(t, Config[string, int]{TTL: time.Minute, Clock: clk})
	s.SetWithTTL("short", 1, time.Second)
	s.SetWithTTL("forever", 2, 0)
	s.Set("default", 3)
	clk.Advance(2 * time.Second)
	_, ok := s.Get("short")
	assert.False(t, ok)
	clk.Advance(time.Hour)
	_, ok = s.Get("default")
	assert.False(t, ok)
	v, ok := s.Get("forever")
	assert.True(t, ok)
	assert.Equal(t, 2, v)
}

func TestExpiredReasons(t *testing.T) {
	clk := newFakeClock()
	var log evictLog[string, int]
	s := newStore(t, Config[string, int]{Shards: 1, Capacity: 2, TTL: time.Second, Clock: clk, OnEvict: log.fn, JanitorInterval: -1})
	s.Set("a", 1)
	s.Set("b", 2)
	clk.Advance(2 * time.Second)
	s.Set("a", 10)               // replaces an expired value
	s.Set("c", 3)                // evicts the expired LRU entry b
	clk.Advance(2 * time.Second) // a and c expire
	assert.False(t, s.Delete("a"))
	_, ok := s.Update("c", func(old int, ok bool) (int, bool) {
		assert.False(t, ok)
		return 0, false
	})
	assert.False(t, ok)
	assert.Equal(t, []evictRec[string, int]{
		{"a", 1, Expired}, {"b", 2, Expired}, {"a", 10, Expired}, {"c", 3, Expired},
	}, log.all())
}

func TestJanitorSweepsInBatches(t *testing.T) {
	clk := newFakeClock()
	var expired atomic.Int64
	s, err := New(Config[int, int]{Shards: 2, TTL: time.Second, Clock: clk, JanitorBatch: 8,
		OnEvict: func(_ int, _ int, r Reason) {
			if r == Expired {
				expired.Add(1)
			}
		}})
	require.NoError(t, err)
	defer s.Close()
	for i := range 100 {
		s.Set(i, i)
	}
	s.SetWithTTL(-1, -1, 0) // never expires
	clk.Advance(2 * time.Second)
	clk.Tick()
	clk.Tick() // returns once the first sweep is over and the second has begun
	n := expired.Load()
	assert.GreaterOrEqual(t, n, int64(8), "first sweep examined at least one shard batch")
	assert.LessOrEqual(t, n, int64(32), "two sweeps examine at most 2×2×8 slots")
	require.Eventually(t, func() bool {
		clk.Tick()
		return expired.Load() == 100
	}, 5*time.Second, time.Millisecond)
	assert.Equal(t, 1, s.Len())
	_, ok := s.Peek(-1)
	assert.True(t, ok)
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
	assert.Equal(t, []evictRec[string, int]{
		{"a", 1, Replaced}, {"a", 2, Deleted}, {"b", 3, Capacity}, {"c", 4, Deleted},
	}, log.all())
}

// TestCallbackRunsOutsideLock: OnEvict calls back into the store (same shard,
// since there is only one) for every reason; holding the shard lock would
// deadlock.
func TestCallbackRunsOutsideLock(t *testing.T) {
	clk := newFakeClock()
	var s *Store[string, int]
	var calls atomic.Int64
	s = newStore(t, Config[string, int]{Shards: 1, Capacity: 2, TTL: time.Second, Clock: clk,
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
		clk.Advance(2 * time.Second)
		_, _ = s.Get("audit:replaced") // Expired
		clk.Tick()                     // janitor sweep with callbacks
		clk.Tick()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("deadlock: OnEvict calling the store blocked")
	}
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
	clk := newFakeClock()
	s := newStore(t, Config[int, int]{Shards: 4, Clock: clk, JanitorInterval: -1})
	for i := range 50 {
		s.Set(i, i*i)
	}
	s.SetWithTTL(100, 0, time.Second)
	clk.Advance(time.Minute)
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
	clk := newFakeClock()
	var evicted atomic.Int64
	s := newStore(t, Config[int, int]{Shards: 4, Capacity: 64, TTL: time.Second, Sliding: true, Clock: clk,
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
						clk.Advance(100 * time.Millisecond)
					}
				default:
					s.Get(k)
				}
			}
		})
	}
	wg.Wait()
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
}

func TestHugeTTLDoesNotOverflow(t *testing.T) {
	clk := newFakeClock()
	s := newStore(t, Config[string, int]{TTL: time.Duration(1<<63 - 1), Sliding: true, Clock: clk})
	s.Set("k", 1)
	clk.Advance(time.Hour)
	_, ok := s.Get("k")
	assert.True(t, ok)
	_, ok = s.Get("k")
	assert.True(t, ok)
}
