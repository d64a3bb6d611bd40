package session

import (
	"sync"
	"sync/atomic"
)

// freeSlot marks an unused slab slot in entry.prev.
const freeSlot = ^uint32(0)

// entry is one slot of a shard's slab. Slots are linked into the shard's LRU
// list by index, so entries hold no pointers of their own and a replaced or
// evicted slot is reused without allocating.
type entry[K comparable, V any] struct {
	key     K
	value   V
	expires int64 // store-relative nanoseconds; 0 = never
	ttl     int64 // the entry's TTL in nanoseconds; 0 = none
	prev    uint32
	next    uint32
}

// shardStats are the per-shard metric counters. They are only touched when
// the store has an Observer, and only under the shard lock, so the atomics are
// uncontended; they are atomics so that a scrape can read them without the lock.
type shardStats struct {
	hits      atomic.Uint64
	misses    atomic.Uint64
	evictions [numReasons]atomic.Uint64
}

// shard is one independently locked part of a Store: a map from key to slab
// index plus an intrusive, index-linked LRU list whose sentinel is ents[0]
// (ents[0].next is the most recently used entry, ents[0].prev the least).
type shard[K comparable, V any] struct {
	mu     sync.Mutex
	m      map[K]uint32
	ents   []entry[K, V]
	free   uint32 // head of the free-slot chain (through next); 0 = none
	limit  int    // maximum entries; 0 = unbounded
	cursor uint32 // janitor position in ents
	stats  shardStats
	_      [64]byte // keep neighbouring shards' locks off this cache line
}

func (sh *shard[K, V]) init(limit, hint int) {
	sh.limit = limit
	sh.m = make(map[K]uint32, hint)
	sh.ents = make([]entry[K, V], 1, hint+1)
	sh.cursor = 1
}

func (sh *shard[K, V]) unlink(i uint32) {
	e := &sh.ents[i]
	p, n := e.prev, e.next
	sh.ents[p].next = n
	sh.ents[n].prev = p
}

func (sh *shard[K, V]) pushFront(i uint32) {
	n := sh.ents[0].next
	e := &sh.ents[i]
	e.prev = 0
	e.next = n
	sh.ents[n].prev = i
	sh.ents[0].next = i
}

// moveToFront marks slot i most recently used.
func (sh *shard[K, V]) moveToFront(i uint32) {
	if sh.ents[0].next == i {
		return
	}
	sh.unlink(i)
	sh.pushFront(i)
}

// remove deletes slot i from the map and the list and returns it to the free
// chain, clearing it so the GC can reclaim what the key and value referenced.
func (sh *shard[K, V]) remove(i uint32) {
	e := &sh.ents[i]
	delete(sh.m, e.key)
	sh.unlink(i)
	*e = entry[K, V]{prev: freeSlot, next: sh.free}
	sh.free = i
}

// alloc returns a free slot, reusing a freed one or growing the slab.
func (sh *shard[K, V]) alloc() uint32 {
	if i := sh.free; i != 0 {
		sh.free = sh.ents[i].next
		return i
	}
	sh.ents = append(sh.ents, entry[K, V]{})
	return uint32(len(sh.ents) - 1)
}

// insert adds a new key, which must not be present. When the shard is full it
// first evicts the least recently used entry and reports it.
// The caller turns the reason into Expired when out.expires has passed.
func (sh *shard[K, V]) insert(k K, v V, expires, ttl int64) (out evicted[K, V]) {
	if sh.limit > 0 && len(sh.m) >= sh.limit {
		t := sh.ents[0].prev
		e := &sh.ents[t]
		out = evicted[K, V]{key: e.key, value: e.value, expires: e.expires, reason: Capacity, ok: true}
		sh.remove(t)
	}
	i := sh.alloc()
	e := &sh.ents[i]
	e.key, e.value, e.expires, e.ttl = k, v, expires, ttl
	sh.m[k] = i
	sh.pushFront(i)
	return out
}

// evicted carries one entry that left the store from under the shard lock to
// the OnEvict call made after unlocking.
type evicted[K comparable, V any] struct {
	key     K
	value   V
	expires int64
	reason  Reason
	ok      bool
}
