package session

import (
	"sync"
	"sync/atomic"
)

// freeSlot marks an unused slab slot in link.prev.
const freeSlot = ^uint32(0)

// entry is one slot of a shard's slab. A replaced or evicted slot is reused
// without allocating.
type entry[K comparable, V any] struct {
	key     K
	value   V
	expires int64  // store-relative nanoseconds; 0 = never
	ttl     int64  // the entry's TTL in nanoseconds; 0 = none
	hash    uint32 // low 32 bits of the key's hash, to find it in the index
}

// link is a slot's place in the LRU list. Links live in their own dense
// array (8 bytes a slot) rather than in the entries, so that reordering the
// list touches a few hot cache lines instead of three cold entries.
type link struct{ prev, next uint32 }

// shardStats are the per-shard metric counters. They are only touched when
// the store has an Observer, and only under the shard lock, so the atomics are
// uncontended; they are atomics so that a scrape can read them without the lock.
type shardStats struct {
	hits      atomic.Uint64
	misses    atomic.Uint64
	evictions [numReasons]atomic.Uint64
}

// shard is one independently locked part of a Store: an open-addressing
// hash index into a slab of entries, plus an index-linked LRU list whose
// sentinel is slot 0 (links[0].next is the most recently used entry,
// links[0].prev the least).
//
// The index is linear probing with backward-shift deletion over words of
// (low 32 bits of the key's hash) << 32 | slot; 0 is an empty word (slot 0
// is never indexed). It replaces a Go map so that the key is hashed once per
// operation, and so that removing an evicted entry needs its stored hash
// rather than re-hashing a key that is no longer in cache.
type shard[K comparable, V any] struct {
	mu     sync.Mutex
	tab    []uint64
	tmask  uint64
	n      int // live entries
	ents   []entry[K, V]
	links  []link
	free   uint32 // head of the free-slot chain (through links[i].next); 0 = none
	limit  int    // maximum entries; 0 = unbounded
	cursor uint32 // janitor position in ents
	stats  shardStats
	_      [64]byte // keep neighbouring shards' locks off this cache line
}

func (sh *shard[K, V]) init(limit, hint int) {
	sh.limit = limit
	size := 16
	for size < 2*hint {
		size <<= 1
	}
	sh.tab = make([]uint64, size)
	sh.tmask = uint64(size - 1)
	sh.ents = make([]entry[K, V], 1, hint+1)
	sh.links = make([]link, 1, hint+1)
	sh.cursor = 1
}

// find returns the slot holding k, whose hash is h.
func (sh *shard[K, V]) find(h uint64, k K) (uint32, bool) {
	tab, mask, tag := sh.tab, sh.tmask, h&0xffffffff
	for p := h & mask; ; p = (p + 1) & mask {
		w := tab[p]
		if w == 0 {
			return 0, false
		}
		if w>>32 == tag {
			if i := uint32(w); sh.ents[i].key == k {
				return i, true
			}
		}
	}
}

// index adds slot i with hash h32 to the table, growing it to keep the load
// factor at most one half.
func (sh *shard[K, V]) index(h32, i uint32) {
	if 2*(sh.n+1) > len(sh.tab) {
		sh.grow()
	}
	tab, mask := sh.tab, sh.tmask
	p := uint64(h32) & mask
	for tab[p] != 0 {
		p = (p + 1) & mask
	}
	tab[p] = uint64(h32)<<32 | uint64(i)
	sh.n++
}

func (sh *shard[K, V]) grow() {
	old := sh.tab
	sh.tab = make([]uint64, 2*len(old))
	sh.tmask = uint64(len(sh.tab) - 1)
	for _, w := range old {
		if w != 0 {
			p := (w >> 32) & sh.tmask
			for sh.tab[p] != 0 {
				p = (p + 1) & sh.tmask
			}
			sh.tab[p] = w
		}
	}
}

// unindex removes slot i with hash h32 from the table, shifting later
// members of its probe run back so lookups never need tombstones.
func (sh *shard[K, V]) unindex(h32, i uint32) {
	tab, mask := sh.tab, sh.tmask
	word := uint64(h32)<<32 | uint64(i)
	p := uint64(h32) & mask
	for tab[p] != word {
		p = (p + 1) & mask
	}
	sh.n--
	for {
		j := p
		for {
			j = (j + 1) & mask
			w := tab[j]
			if w == 0 {
				tab[p] = 0
				return
			}
			home := (w >> 32) & mask
			// w may fill the hole at p unless its home lies cyclically in (p, j].
			if (p < j && (home <= p || home > j)) || (p > j && home <= p && home > j) {
				tab[p] = w
				p = j
				break
			}
		}
	}
}

func (sh *shard[K, V]) unlink(i uint32) {
	l := sh.links
	p, n := l[i].prev, l[i].next
	l[p].next = n
	l[n].prev = p
}

func (sh *shard[K, V]) pushFront(i uint32) {
	l := sh.links
	n := l[0].next
	l[i] = link{prev: 0, next: n}
	l[n].prev = i
	l[0].next = i
}

// moveToFront marks slot i most recently used.
func (sh *shard[K, V]) moveToFront(i uint32) {
	if sh.links[0].next == i {
		return
	}
	sh.unlink(i)
	sh.pushFront(i)
}

// lru returns the least recently used slot (0 when the shard is empty).
func (sh *shard[K, V]) lru() uint32 { return sh.links[0].prev }

// live reports whether slot i holds an entry.
func (sh *shard[K, V]) live(i uint32) bool { return sh.links[i].prev != freeSlot }

// remove deletes slot i from the index and the list and returns it to the
// free chain, clearing it so the GC can reclaim what the key and value
// referenced.
func (sh *shard[K, V]) remove(i uint32) {
	sh.unindex(sh.ents[i].hash, i)
	sh.unlink(i)
	sh.ents[i] = entry[K, V]{}
	sh.links[i] = link{prev: freeSlot, next: sh.free}
	sh.free = i
}

// alloc returns a free slot, reusing a freed one or growing the slab.
func (sh *shard[K, V]) alloc() uint32 {
	if i := sh.free; i != 0 {
		sh.free = sh.links[i].next
		return i
	}
	sh.ents = append(sh.ents, entry[K, V]{})
	sh.links = append(sh.links, link{})
	return uint32(len(sh.ents) - 1)
}

// insert adds key k with hash h, which must not be present. When the shard
// is full it first evicts the least recently used entry and reports it with
// reason Capacity; the caller turns that into Expired when out.expires has
// passed.
func (sh *shard[K, V]) insert(h uint64, k K, v V, expires, ttl int64) (out evicted[K, V]) {
	if sh.limit > 0 && sh.n >= sh.limit {
		t := sh.lru()
		e := &sh.ents[t]
		out = evicted[K, V]{key: e.key, value: e.value, expires: e.expires, reason: Capacity, ok: true}
		sh.remove(t)
	}
	i := sh.alloc()
	sh.ents[i] = entry[K, V]{key: k, value: v, expires: expires, ttl: ttl, hash: uint32(h)}
	sh.index(uint32(h), i)
	sh.pushFront(i)
	return out
}

// evicted describes one entry that left a shard (or, from Range, a live
// one), for the OnEvict queue.
type evicted[K comparable, V any] struct {
	key     K
	value   V
	expires int64
	reason  Reason
	ok      bool
}
