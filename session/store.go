package session

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-go/switchboard/internal/lifetime"
	"github.com/switchboard-go/switchboard/observe"
)

// Reason says why an entry left the store; it is passed to Config.OnEvict.
type Reason uint8

const (
	// Capacity: the entry was the least recently used of a full shard.
	Capacity Reason = iota + 1
	// Expired: the entry's TTL passed (found by Get, Set, the janitor, …).
	Expired
	// Deleted: Delete removed it, or Update returned keep == false.
	Deleted
	// Replaced: Set stored a new value under the same key.
	Replaced

	numReasons = int(Replaced) + 1
)

// String returns the lower-case name used in logs and metric labels.
func (r Reason) String() string {
	switch r {
	case Capacity:
		return "capacity"
	case Expired:
		return "expired"
	case Deleted:
		return "deleted"
	case Replaced:
		return "replaced"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Defaults applied by New to zero Config fields.
const (
	DefaultJanitorInterval = time.Second
	DefaultJanitorBatch    = 1024
	DefaultName            = "default"
	maxShards              = 1 << 16
)

var (
	// ErrInvalidConfig is wrapped by New's errors; the message names the field.
	ErrInvalidConfig = errors.New("session: invalid config")
	// ErrClosed is wrapped by Store.Ready once Shutdown or Close has begun.
	ErrClosed = errors.New("session: store closed")
)

// Config configures a Store. Every zero value means the documented default.
type Config[K comparable, V any] struct {
	// Shards is the number of independently locked shards; it must be a
	// power of two. Default: the next power of two ≥ 32×GOMAXPROCS (at least
	// 16, at most 4096), lowered to at most Capacity when Capacity is small.
	Shards int
	// Capacity bounds the total number of entries. It is split exactly
	// across the shards (their limits sum to Capacity) and each shard evicts
	// its least recently used entry when full, which approximates a global
	// LRU closely when keys hash evenly. Default 0: unbounded (only TTLs
	// remove entries).
	Capacity int
	// TTL is the lifetime given by Set and by Update when it inserts.
	// Default 0: entries do not expire unless set with SetWithTTL.
	TTL time.Duration
	// Sliding makes Get (and Update) restart an entry's TTL, so only idle
	// entries expire. Touch restarts it regardless. Default false: the TTL
	// runs from the last write.
	Sliding bool
	// JanitorInterval is how often the background janitor removes expired
	// entries. Each tick examines at most JanitorBatch slots per shard,
	// taking one shard lock at a time, so it never scans everything at once.
	// Expired entries are invisible to readers before the janitor reaches
	// them. Default DefaultJanitorInterval; negative disables the janitor.
	JanitorInterval time.Duration
	// JanitorBatch is the number of slots examined per shard per tick.
	// Default DefaultJanitorBatch.
	JanitorBatch int
	// OnEvict, if set, is called once for every entry that leaves the store
	// and for every value Set replaces, with the reason. Like the callbacks
	// of router and queue it runs on a goroutine the store owns (started by
	// New, ended by Shutdown or Close), one call at a time, in the order the
	// removals happened — per key, and per store since each eviction is
	// queued under the lock of the shard it left. It never runs on the
	// goroutine of a caller that is inside the store, nor under a lock of
	// the store: a host may hold its own mutex around Set or Delete and take
	// the same mutex in OnEvict, and OnEvict may call the store (except
	// Shutdown and Close, which wait for it). It sees the removal a little
	// later: the key may have been set again meanwhile. A panic in OnEvict is
	// not recovered. Evictions after Shutdown or Close are not reported.
	// Default nil: no goroutine, no queue, nothing on the hot paths.
	OnEvict func(key K, value V, reason Reason)
	// OnEvictBacklog bounds the evictions that calls into the store may
	// leave waiting for OnEvict. Default 0: no bound for calls — Set,
	// Update, Delete, Get and Touch never wait for OnEvict, so a host may
	// hold a lock around them that OnEvict takes — and the backlog (one key
	// and value per eviction, in a ring the store reuses) grows while the
	// host's calls evict faster than OnEvict returns.
	//
	// A positive bound adds back-pressure: once more than OnEvictBacklog
	// evictions are undelivered, the call that evicted waits before
	// returning, holding no lock of the store, until its evictions are
	// within OnEvictBacklog of delivery. The backlog can exceed the bound by
	// the evictions of the calls in progress, each of which then waits.
	// Calls made from inside OnEvict never wait (they would wait for
	// themselves). With a bound, a host must not call the store while
	// holding a lock that OnEvict takes: a caller waiting with the lock
	// held and OnEvict waiting for the lock would wait for each other.
	//
	// The janitor waits in either case, before sweeping the next shard,
	// while more than OnEvictBacklog (when 0: JanitorBatch) evictions are
	// undelivered, so that expiry alone never builds a backlog.
	OnEvictBacklog int
	// Observer receives metrics (see the package doc). Default nil: off,
	// at no cost on the hot paths.
	Observer *observe.Observer
	// Name labels this store's metrics (label "store") so that several
	// stores can share an Observer. Default DefaultName.
	Name string
}

// Store is a sharded, bounded map with LRU eviction and per-entry TTL. All
// methods are safe for concurrent use. Get is allocation free; Set, Update,
// Delete and Touch do not allocate in steady state (a shard's slab and index
// grow until the shard is full, then slots are reused), nor does queueing
// their evictions for Config.OnEvict. They wait for OnEvict only when
// Config.OnEvictBacklog sets a bound, and never while holding a lock of
// the store.
//
// Values are returned by copy: when V is a pointer, the store does not
// protect what it points to, so treat stored pointees as immutable and
// replace them through Update (copy on write), as Transition does for
// conversations.
type Store[K comparable, V any] struct {
	shards  []shard[K, V]
	shift   uint // 64 - log2(shards): h>>shift is the shard index
	kind    hashKind
	seed    maphash.Seed
	iseed   uint64
	ttl     int64
	sliding bool
	notes   *evictQueue[K, V] // nil without OnEvict
	epoch   time.Time
	batch   int
	metrics *storeMetrics

	closeOnce sync.Once
	closed    atomic.Bool
	stop      chan struct{}
	done      chan struct{}
	sweepBuf  []evicted[K, V] // janitor-owned
}

// New validates cfg, fills defaults and returns a Store. It starts one
// goroutine for the janitor when it is enabled and one to deliver OnEvict
// when that is set; Shutdown or Close stops them. The error wraps
// ErrInvalidConfig and names the offending field.
func New[K comparable, V any](cfg Config[K, V]) (*Store[K, V], error) {
	if cfg.Capacity < 0 {
		return nil, fmt.Errorf("%w: Capacity %d is negative", ErrInvalidConfig, cfg.Capacity)
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("%w: TTL %v is negative", ErrInvalidConfig, cfg.TTL)
	}
	if cfg.JanitorBatch < 0 {
		return nil, fmt.Errorf("%w: JanitorBatch %d is negative", ErrInvalidConfig, cfg.JanitorBatch)
	}
	if cfg.OnEvictBacklog < 0 {
		return nil, fmt.Errorf("%w: OnEvictBacklog %d is negative", ErrInvalidConfig, cfg.OnEvictBacklog)
	}
	n := cfg.Shards
	switch {
	case n < 0 || n > maxShards || (n > 0 && n&(n-1) != 0):
		return nil, fmt.Errorf("%w: Shards %d is not a power of two in [1, %d]", ErrInvalidConfig, n, maxShards)
	case n > 0 && cfg.Capacity > 0 && n > cfg.Capacity:
		return nil, fmt.Errorf("%w: Shards %d exceeds Capacity %d", ErrInvalidConfig, n, cfg.Capacity)
	case n == 0:
		n = defaultShards(cfg.Capacity)
	}
	s := &Store[K, V]{
		shards:  make([]shard[K, V], n),
		shift:   uint(64 - bits.Len(uint(n-1))),
		kind:    hashKindOf[K](),
		seed:    maphash.MakeSeed(),
		ttl:     int64(cfg.TTL),
		sliding: cfg.Sliding,
		batch:   cfg.JanitorBatch,
		epoch:   time.Now(),
	}
	s.iseed = maphash.Comparable(s.seed, uint64(0x9e3779b97f4a7c15))
	if s.batch == 0 {
		s.batch = DefaultJanitorBatch
	}
	for i := range s.shards {
		limit := 0
		if cfg.Capacity > 0 {
			limit = cfg.Capacity / n
			if i < cfg.Capacity%n {
				limit++
			}
		}
		hint := limit
		if hint == 0 || hint > 4096 {
			hint = 64
		}
		s.shards[i].init(limit, hint)
	}
	if cfg.Observer != nil {
		name := cfg.Name
		if name == "" {
			name = DefaultName
		}
		m, err := newStoreMetrics(cfg.Observer, name, s)
		if err != nil {
			return nil, fmt.Errorf("%w: Name %q: %w", ErrInvalidConfig, name, err)
		}
		s.metrics = m
	}
	if cfg.OnEvict != nil {
		sweepLimit := cfg.OnEvictBacklog
		if sweepLimit == 0 {
			sweepLimit = s.batch
		}
		s.notes = newEvictQueue(cfg.OnEvict, cfg.OnEvictBacklog, sweepLimit)
	}
	interval := cfg.JanitorInterval
	if interval == 0 {
		interval = DefaultJanitorInterval
	}
	if interval > 0 {
		s.stop = make(chan struct{})
		s.done = make(chan struct{})
		go s.janitor(time.NewTicker(interval))
	}
	return s, nil
}

func defaultShards(capacity int) int {
	n := 1 << bits.Len(uint(32*runtime.GOMAXPROCS(0)-1))
	n = max(16, min(n, 4096))
	if capacity > 0 {
		for n > capacity {
			n >>= 1
		}
	}
	return n
}

// Shutdown stops the store's background work gracefully. From its start
// Ready reports the store closed and the janitor stops; Shutdown waits for
// it to exit (a sweep in progress stops after the shard it is sweeping),
// then delivers the pending evictions to OnEvict — also those that happen
// while it waits — and unregisters the store's metrics. It returns nil once
// everything is delivered, or ctx.Err() when ctx is done first: then the
// evictions not yet delivered are dropped, and it returns once the OnEvict
// call in progress, if any, has returned (a janitor sweep still in
// progress then exits after its shard). When Shutdown returns nil no
// goroutine of the store runs; OnEvict is not called again either way.
//
// The store remains usable as a map afterwards: expired entries are still
// hidden from readers and removed when touched, but evictions are no longer
// reported. Shutdown is idempotent: a later call waits in the same way. It
// must not be called from OnEvict, nor while holding a lock OnEvict takes.
func (s *Store[K, V]) Shutdown(ctx context.Context) error {
	s.begin()
	if s.done != nil {
		select {
		case <-s.done:
		case <-ctx.Done():
			if s.notes != nil {
				_ = s.notes.stop(ctx) // ctx is done: drop what is pending; the error is returned below
			}
			return ctx.Err()
		}
	}
	if s.notes != nil {
		return s.notes.stop(ctx)
	}
	return nil
}

// Close is Shutdown without the grace: it stops the janitor and waits for
// it to exit (it stops within one shard's batch), drops the evictions not
// yet delivered to OnEvict and returns once the OnEvict call in progress,
// if any, has returned. Afterwards no goroutine of the store runs. The store
// remains usable as a map. Close is idempotent and always returns nil; it
// must not be called from OnEvict, nor while holding a lock OnEvict takes.
func (s *Store[K, V]) Close() error {
	s.begin()
	if s.done != nil {
		<-s.done
	}
	if s.notes != nil {
		ctx := lifetime.Canceled() // Close is Shutdown with a context already done
		_ = s.notes.stop(ctx)      // only reports that evictions were dropped, as Close documents
	}
	return nil
}

// begin starts Shutdown or Close, once: Ready reports closed, the janitor
// is told to stop (and stops waiting for OnEvict), metrics are unregistered.
func (s *Store[K, V]) begin() {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		if s.stop != nil {
			close(s.stop)
		}
		if s.notes != nil {
			s.notes.close()
		}
		if s.metrics != nil {
			s.metrics.unregister()
		}
	})
}

// Ready returns nil until Shutdown or Close begins, then an error wrapping
// ErrClosed.
func (s *Store[K, V]) Ready() error {
	if s.closed.Load() {
		return fmt.Errorf("%w: shut down", ErrClosed)
	}
	return nil
}

// now returns the store-relative monotonic time in nanoseconds, never 0.
// Inside a testing/synctest bubble it follows the bubble's fake clock.
func (s *Store[K, V]) now() int64 {
	return int64(time.Since(s.epoch)) + 1
}

// shardFor hashes k and returns the hash and k's shard. The shard is chosen
// by the high bits; the shard's index uses the low ones.
// deadline is now+ttl, saturating instead of overflowing for huge TTLs.
func deadline(now, ttl int64) int64 {
	if d := now + ttl; d >= now {
		return d
	}
	return math.MaxInt64
}

func (s *Store[K, V]) shardFor(k *K) (uint64, *shard[K, V]) {
	h := hashKey(s.kind, s.seed, s.iseed, k)
	return h, &s.shards[h>>s.shift]
}

func (s *Store[K, V]) count(sh *shard[K, V], r Reason) {
	if s.metrics != nil {
		sh.stats.evictions[r].Add(1)
	}
}

// report queues ev for OnEvict. It is called under the lock of the shard ev
// left, so that evictions queue in the order they happen; the result goes
// to pace once the lock is released.
func (s *Store[K, V]) report(ev *evicted[K, V]) uint64 {
	if s.notes == nil || !ev.ok {
		return 0
	}
	return s.notes.post(ev.key, ev.value, ev.reason)
}

// pace waits for OnEvict to catch up when report returned a ticket (the
// backlog is over a positive Config.OnEvictBacklog). No lock may be held.
func (s *Store[K, V]) pace(t uint64) {
	if t != 0 {
		s.notes.pace(t, false)
	}
}

// Get returns the value stored under k and whether it is present and not
// expired. A hit marks the entry most recently used and, with Sliding,
// restarts its TTL. An expired entry found here is removed (OnEvict with
// Expired). Get does not allocate.
func (s *Store[K, V]) Get(k K) (V, bool) {
	h, sh := s.shardFor(&k)
	sh.mu.Lock()
	i, ok := sh.find(h, k)
	if !ok {
		if s.metrics != nil {
			sh.stats.misses.Add(1)
		}
		sh.mu.Unlock()
		var zero V
		return zero, false
	}
	e := &sh.ents[i]
	if e.expires != 0 {
		now := s.now()
		if now >= e.expires {
			ev := evicted[K, V]{key: e.key, value: e.value, reason: Expired, ok: true}
			sh.remove(i)
			if s.metrics != nil {
				sh.stats.misses.Add(1)
				sh.stats.evictions[Expired].Add(1)
			}
			t := s.report(&ev)
			sh.mu.Unlock()
			s.pace(t)
			var zero V
			return zero, false
		}
		if s.sliding {
			e.expires = deadline(now, e.ttl)
		}
	}
	v := e.value
	sh.moveToFront(i)
	if s.metrics != nil {
		sh.stats.hits.Add(1)
	}
	sh.mu.Unlock()
	return v, true
}

// Peek is Get without side effects: it neither marks the entry used nor
// restarts a sliding TTL, and it leaves an expired entry for the janitor.
func (s *Store[K, V]) Peek(k K) (V, bool) {
	h, sh := s.shardFor(&k)
	sh.mu.Lock()
	i, ok := sh.find(h, k)
	if ok {
		e := &sh.ents[i]
		if e.expires == 0 || s.now() < e.expires {
			v := e.value
			sh.mu.Unlock()
			return v, true
		}
	}
	sh.mu.Unlock()
	var zero V
	return zero, false
}

// Set stores v under k with the configured TTL, marking it most recently
// used. A value it replaces is reported to OnEvict as Replaced (Expired if
// it had already expired); a full shard first evicts its least recently used
// entry (Capacity, or Expired if that entry had expired).
func (s *Store[K, V]) Set(k K, v V) { s.set(k, v, s.ttl) }

// SetWithTTL is Set with a TTL for this entry only; ttl <= 0 means the entry
// never expires.
func (s *Store[K, V]) SetWithTTL(k K, v V, ttl time.Duration) { s.set(k, v, max(int64(ttl), 0)) }

func (s *Store[K, V]) set(k K, v V, ttl int64) {
	var now, expires int64
	if ttl > 0 {
		now = s.now()
		expires = deadline(now, ttl)
	}
	h, sh := s.shardFor(&k)
	sh.mu.Lock()
	var ev evicted[K, V]
	if i, ok := sh.find(h, k); ok {
		e := &sh.ents[i]
		ev = evicted[K, V]{key: e.key, value: e.value, reason: Replaced, ok: true}
		if e.expires != 0 {
			if now == 0 {
				now = s.now()
			}
			if now >= e.expires {
				ev.reason = Expired
			}
		}
		e.value, e.expires, e.ttl = v, expires, ttl
		sh.moveToFront(i)
	} else {
		ev = sh.insert(h, k, v, expires, ttl)
		if ev.ok && ev.expires != 0 {
			if now == 0 {
				now = s.now()
			}
			if now >= ev.expires {
				ev.reason = Expired
			}
		}
	}
	var t uint64
	if ev.ok {
		s.count(sh, ev.reason)
		t = s.report(&ev)
	}
	sh.mu.Unlock()
	s.pace(t)
}

// Update atomically reads, modifies and writes the entry under k: fn gets
// the current value (ok false when absent or expired) and returns the new
// value and whether to keep it. keep == false deletes an existing entry
// (OnEvict with Deleted) or inserts nothing. A kept existing entry is
// marked used and its TTL restarted; the old value is not reported to
// OnEvict (it was modified, not replaced). A new entry gets the configured
// TTL and may evict the shard's LRU entry.
//
// fn runs under the shard lock: it must be quick and must not call the
// store (that would deadlock). If fn panics the lock is released and the
// entry is unchanged (an expired entry found first is still removed and
// reported). Update returns the value now stored and whether the
// key is present.
func (s *Store[K, V]) Update(k K, fn func(old V, ok bool) (V, bool)) (V, bool) {
	h, sh := s.shardFor(&k)
	var ev evicted[K, V]
	var t0, t1 uint64
	var now int64
	sh.mu.Lock()
	i, have := sh.find(h, k)
	var old V
	if have {
		e := &sh.ents[i]
		if e.expires != 0 {
			now = s.now()
			if now >= e.expires {
				ev = evicted[K, V]{key: e.key, value: e.value, reason: Expired, ok: true}
				s.count(sh, Expired)
				sh.remove(i)
				t0 = s.report(&ev) // now: the entry is gone even if fn panics
				have = false
			}
		}
		if have {
			old = e.value
		}
	}
	nv, keep := callLocked(&sh.mu, fn, old, have)
	switch {
	case keep && have:
		e := &sh.ents[i]
		e.value = nv
		if e.ttl != 0 {
			if now == 0 {
				now = s.now()
			}
			e.expires = deadline(now, e.ttl)
		}
		sh.moveToFront(i)
	case keep:
		var expires int64
		if s.ttl > 0 {
			if now == 0 {
				now = s.now()
			}
			expires = deadline(now, s.ttl)
		}
		ev = sh.insert(h, k, nv, expires, s.ttl)
		if ev.ok {
			if ev.expires != 0 && s.now() >= ev.expires {
				ev.reason = Expired
			}
			s.count(sh, ev.reason)
			t1 = s.report(&ev)
		}
	case have:
		e := &sh.ents[i]
		ev = evicted[K, V]{key: e.key, value: e.value, reason: Deleted, ok: true}
		s.count(sh, Deleted)
		sh.remove(i)
		t1 = s.report(&ev)
	}
	sh.mu.Unlock()
	s.pace(max(t0, t1))
	if !keep {
		var zero V
		return zero, false
	}
	return nv, true
}

// callLocked runs fn and releases mu if fn panics, so a panicking Update
// callback cannot wedge its shard.
func callLocked[V any](mu *sync.Mutex, fn func(V, bool) (V, bool), old V, have bool) (nv V, keep bool) {
	done := false
	defer func() {
		if !done {
			mu.Unlock()
		}
	}()
	nv, keep = fn(old, have)
	done = true
	return nv, keep
}

// Delete removes k and reports whether a live entry was removed. The value
// goes to OnEvict with Deleted (or Expired, and Delete returns false, if it
// had already expired).
func (s *Store[K, V]) Delete(k K) bool {
	h, sh := s.shardFor(&k)
	sh.mu.Lock()
	i, ok := sh.find(h, k)
	if !ok {
		sh.mu.Unlock()
		return false
	}
	e := &sh.ents[i]
	ev := evicted[K, V]{key: e.key, value: e.value, reason: Deleted, ok: true}
	if e.expires != 0 && s.now() >= e.expires {
		ev.reason = Expired
	}
	s.count(sh, ev.reason)
	sh.remove(i)
	t := s.report(&ev)
	sh.mu.Unlock()
	s.pace(t)
	return ev.reason == Deleted
}

// Touch marks k most recently used and restarts its TTL (whether or not the
// store is Sliding). It reports whether k was present and not expired.
func (s *Store[K, V]) Touch(k K) bool {
	h, sh := s.shardFor(&k)
	sh.mu.Lock()
	i, ok := sh.find(h, k)
	if !ok {
		sh.mu.Unlock()
		return false
	}
	e := &sh.ents[i]
	if e.expires != 0 {
		now := s.now()
		if now >= e.expires {
			ev := evicted[K, V]{key: e.key, value: e.value, reason: Expired, ok: true}
			s.count(sh, Expired)
			sh.remove(i)
			t := s.report(&ev)
			sh.mu.Unlock()
			s.pace(t)
			return false
		}
		e.expires = deadline(now, e.ttl)
	}
	sh.moveToFront(i)
	sh.mu.Unlock()
	return true
}

// Range calls fn for every live entry until fn returns false. It copies one
// shard at a time under that shard's lock and calls fn with no lock held, so
// fn may call the store; it is therefore not a point-in-time snapshot of the
// whole store. Range does not change LRU order or TTLs and allocates a
// buffer the size of the largest shard.
func (s *Store[K, V]) Range(fn func(key K, value V) bool) {
	var buf []evicted[K, V]
	for i := range s.shards {
		sh := &s.shards[i]
		buf = buf[:0]
		sh.mu.Lock()
		var now int64
		for j := sh.links[0].next; j != 0; j = sh.links[j].next {
			e := &sh.ents[j]
			if e.expires != 0 {
				if now == 0 {
					now = s.now()
				}
				if now >= e.expires {
					continue
				}
			}
			buf = append(buf, evicted[K, V]{key: e.key, value: e.value})
		}
		sh.mu.Unlock()
		for j := range buf {
			if !fn(buf[j].key, buf[j].value) {
				return
			}
		}
	}
}

// Len returns the number of entries held, including expired ones the
// janitor has not removed yet. It locks each shard in turn, so under
// concurrent writes it is approximate.
func (s *Store[K, V]) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n += sh.n
		sh.mu.Unlock()
	}
	return n
}

// Shards returns the number of shards in use.
func (s *Store[K, V]) Shards() int { return len(s.shards) }
