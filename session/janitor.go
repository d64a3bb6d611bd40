package session

// janitor removes expired entries on every tick until Close.
func (s *Store[K, V]) janitor(t Ticker) {
	defer close(s.done)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C():
			s.sweep()
		}
	}
}

// sweep examines up to s.batch slots of every shard, one shard lock at a
// time, resuming where the previous sweep of that shard stopped, and removes
// the expired entries it finds. OnEvict runs after each shard is unlocked.
func (s *Store[K, V]) sweep() {
	for i := range s.shards {
		sh := &s.shards[i]
		buf := s.sweepBuf[:0]
		sh.mu.Lock()
		n := uint32(len(sh.ents))
		if n > 1 {
			now := s.now()
			j := sh.cursor
			for range min(s.batch, int(n-1)) {
				if j >= n {
					j = 1
				}
				e := &sh.ents[j]
				if sh.live(j) && e.expires != 0 && now >= e.expires {
					buf = append(buf, evicted[K, V]{key: e.key, value: e.value, reason: Expired, ok: true})
					s.count(sh, Expired)
					sh.remove(j)
				}
				j++
			}
			sh.cursor = j
		}
		sh.mu.Unlock()
		for k := range buf {
			s.notify(&buf[k])
			buf[k] = evicted[K, V]{}
		}
		s.sweepBuf = buf[:0]
	}
}
