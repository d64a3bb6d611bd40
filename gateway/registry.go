package gateway

import (
	"sync"
	"sync/atomic"
)

const registryShards = 64

// registry indexes open connections by ID and by user ID, sharded so that
// opens and closes on different connections rarely contend.
type registry struct {
	ids   [registryShards]idShard
	users [registryShards]userShard

	rolesMu sync.RWMutex
	roles   map[Role]*atomic.Int64
	n       atomic.Int64
}

type idShard struct {
	mu sync.RWMutex
	m  map[uint64]*Conn
	_  [40]byte // keep shards on separate cache lines
}

type userShard struct {
	mu sync.RWMutex
	m  map[string][]*Conn
	// slots counts, per user, the connections holding a
	// Config.MaxConnsPerUser slot: open ones and handshakes between
	// Authenticate and the upgrade.
	slots map[string]int
	_     [32]byte
}

func newRegistry() *registry {
	r := &registry{roles: map[Role]*atomic.Int64{}}
	for i := range r.ids {
		r.ids[i].m = map[uint64]*Conn{}
		r.users[i].m = map[string][]*Conn{}
		r.users[i].slots = map[string]int{}
	}
	return r
}

func userShardOf(userID string) uint32 {
	// FNV-1a; user IDs are short.
	h := uint32(2166136261)
	for i := 0; i < len(userID); i++ {
		h ^= uint32(userID[i])
		h *= 16777619
	}
	return h % registryShards
}

func (r *registry) roleCounter(role Role) *atomic.Int64 {
	r.rolesMu.RLock()
	c := r.roles[role]
	r.rolesMu.RUnlock()
	if c != nil {
		return c
	}
	r.rolesMu.Lock()
	defer r.rolesMu.Unlock()
	if c = r.roles[role]; c == nil {
		c = new(atomic.Int64)
		r.roles[role] = c
	}
	return c
}

func (r *registry) add(c *Conn) {
	s := &r.ids[c.id%registryShards]
	s.mu.Lock()
	s.m[c.id] = c
	s.mu.Unlock()
	if uid := c.ident.UserID; uid != "" {
		u := &r.users[userShardOf(uid)]
		u.mu.Lock()
		u.m[uid] = append(u.m[uid], c)
		u.mu.Unlock()
	}
	r.roleCounter(c.ident.Role).Add(1)
	r.n.Add(1)
}

// remove reports whether c was registered.
func (r *registry) remove(c *Conn) bool {
	s := &r.ids[c.id%registryShards]
	s.mu.Lock()
	_, ok := s.m[c.id]
	delete(s.m, c.id)
	s.mu.Unlock()
	if !ok {
		return false
	}
	if uid := c.ident.UserID; uid != "" {
		u := &r.users[userShardOf(uid)]
		u.mu.Lock()
		list := u.m[uid]
		for i, x := range list {
			if x == c {
				last := len(list) - 1
				list[i] = list[last]
				list[last] = nil
				list = list[:last]
				break
			}
		}
		if len(list) == 0 {
			delete(u.m, uid)
		} else {
			u.m[uid] = list
		}
		u.mu.Unlock()
	}
	r.roleCounter(c.ident.Role).Add(-1)
	r.n.Add(-1)
	return true
}

// reserveUser takes one of userID's max connection slots; it reports
// false when all are taken.
func (r *registry) reserveUser(userID string, max int) bool {
	u := &r.users[userShardOf(userID)]
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.slots[userID] >= max {
		return false
	}
	u.slots[userID]++
	return true
}

// releaseUser gives back a slot taken by reserveUser.
func (r *registry) releaseUser(userID string) {
	u := &r.users[userShardOf(userID)]
	u.mu.Lock()
	if n := u.slots[userID]; n > 1 {
		u.slots[userID] = n - 1
	} else {
		delete(u.slots, userID)
	}
	u.mu.Unlock()
}

func (r *registry) get(id uint64) (*Conn, bool) {
	s := &r.ids[id%registryShards]
	s.mu.RLock()
	c, ok := s.m[id]
	s.mu.RUnlock()
	return c, ok
}

// user appends userID's connections to dst.
func (r *registry) user(dst []*Conn, userID string) []*Conn {
	u := &r.users[userShardOf(userID)]
	u.mu.RLock()
	dst = append(dst, u.m[userID]...)
	u.mu.RUnlock()
	return dst
}

func (r *registry) count(role Role) int {
	r.rolesMu.RLock()
	c := r.roles[role]
	r.rolesMu.RUnlock()
	if c == nil {
		return 0
	}
	return int(c.Load())
}

func (r *registry) roleCounts() map[Role]int {
	r.rolesMu.RLock()
	defer r.rolesMu.RUnlock()
	m := make(map[Role]int, len(r.roles))
	for role, c := range r.roles {
		m[role] = int(c.Load())
	}
	return m
}

var snapshotPool = sync.Pool{New: func() any { s := make([]*Conn, 0, 256); return &s }}

// rangeAll calls fn for every connection, outside any registry lock, one
// shard snapshot at a time; it stops when fn returns false.
func (r *registry) rangeAll(fn func(*Conn) bool) {
	ps := snapshotPool.Get().(*[]*Conn)
	defer snapshotPool.Put(ps)
	for i := range r.ids {
		s := &r.ids[i]
		buf := (*ps)[:0]
		s.mu.RLock()
		for _, c := range s.m {
			buf = append(buf, c)
		}
		s.mu.RUnlock()
		*ps = buf
		for j, c := range buf {
			buf[j] = nil
			if !fn(c) {
				clear(buf[j:])
				return
			}
		}
	}
}
