package gateway

import (
	"math"
	"net/netip"
	"sync"
)

const ipShards = 64

// ipLimiter is the per-client-address handshake rate limit
// (Config.HandshakeRate, HandshakeBurst): one token bucket per address,
// IPv6 addresses grouped by /64 (what one host usually gets). Its memory is
// bounded: each of its shards holds at most max/ipShards addresses. An
// address whose bucket has refilled is as good as forgotten, so such idle
// entries are evicted by the sweeper (evictIdle) and, when a shard is full,
// to make room; when none is idle an arbitrary entry goes, which at worst
// gives that address a fresh bucket. Safe for concurrent use.
type ipLimiter struct {
	rate     float64 // tokens per second
	burst    float64
	perShard int
	idle     int64 // nanoseconds for an empty bucket to refill
	shards   [ipShards]ipShard
}

type ipShard struct {
	mu sync.Mutex
	m  map[netip.Addr]ipBucket
	_  [48]byte // keep shards on separate cache lines
}

type ipBucket struct {
	tokens float64
	at     int64 // unix nanos of the last update
}

func newIPLimiter(rate float64, burst, capacity int) *ipLimiter {
	l := &ipLimiter{
		rate:     rate,
		burst:    float64(burst),
		perShard: max(capacity/ipShards, 1),
		idle:     int64(math.Ceil(float64(burst) / rate * 1e9)),
	}
	for i := range l.shards {
		l.shards[i].m = map[netip.Addr]ipBucket{}
	}
	return l
}

// ipKey is the bucket key of a request's RemoteAddr ("ip:port"); ok is
// false when it does not parse (no limit applies).
func ipKey(remoteAddr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		if p, err := a.Prefix(64); err == nil {
			a = p.Addr()
		}
	}
	return a, true
}

func (l *ipLimiter) shard(a netip.Addr) *ipShard {
	b := a.As16()
	h := uint32(2166136261) // FNV-1a
	for _, x := range b {
		h ^= uint32(x)
		h *= 16777619
	}
	return &l.shards[h%ipShards]
}

// allow takes a token for remoteAddr at now (unix nanos). When none is
// left it returns false and the whole seconds until one is (at least 1).
func (l *ipLimiter) allow(remoteAddr string, now int64) (ok bool, retryAfter int64) {
	a, ok := ipKey(remoteAddr)
	if !ok {
		return true, 0
	}
	s := l.shard(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	b, found := s.m[a]
	if !found {
		if len(s.m) >= l.perShard {
			l.makeRoom(s, now)
		}
		b = ipBucket{tokens: l.burst, at: now}
	} else if el := now - b.at; el > 0 {
		b.tokens = min(l.burst, b.tokens+float64(el)/1e9*l.rate)
		b.at = now
	}
	if b.tokens < 1 {
		s.m[a] = b
		return false, max(int64(math.Ceil((1-b.tokens)/l.rate)), 1)
	}
	b.tokens--
	s.m[a] = b
	return true, 0
}

// makeRoom evicts the shard's idle entries, or an eighth of its entries
// when none is idle (so that a full shard costs one scan per many
// inserts). The caller holds s.mu.
func (l *ipLimiter) makeRoom(s *ipShard, now int64) {
	if l.evictShard(s, now) > 0 {
		return
	}
	n := max(l.perShard/8, 1)
	for a := range s.m {
		delete(s.m, a)
		if n--; n == 0 {
			return
		}
	}
}

// evictShard removes the entries whose bucket has refilled; the caller
// holds s.mu.
func (l *ipLimiter) evictShard(s *ipShard, now int64) int {
	n := 0
	for a, b := range s.m {
		if now-b.at >= l.idle {
			delete(s.m, a)
			n++
		}
	}
	return n
}

// evictIdle removes the idle entries of every shard; the sweeper calls it.
func (l *ipLimiter) evictIdle(now int64) {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		l.evictShard(s, now)
		s.mu.Unlock()
	}
}

// len returns the number of tracked addresses.
func (l *ipLimiter) len() int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
