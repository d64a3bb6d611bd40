package session

import "time"

// janitor removes expired entries on every tick until Shutdown or Close.
func (s *Store[K, V]) janitor(t *time.Ticker) {
	defer close(s.done)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// sweep examines up to s.batch slots of every shard, one shard lock at a
// time, resuming where the previous sweep of that shard stopped, and removes
// the expired entries it finds. Their evictions are queued for OnEvict
// before the shard is unlocked; when OnEvict lags behind
// Config.OnEvictBacklog the janitor then waits for it, with no lock held,
// before the next shard (until Shutdown or Close begins).
func (s *Store[K, V]) sweep() {
	for i := range s.shards {
		select {
		case <-s.stop: // Shutdown: stop between shards
			return
		default:
		}
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
					if s.notes != nil {
						buf = append(buf, evicted[K, V]{key: e.key, value: e.value, reason: Expired, ok: true})
					}
					s.count(sh, Expired)
					sh.remove(j)
				}
				j++
			}
			sh.cursor = j
		}
		var t uint64
		if len(buf) > 0 {
			t = s.notes.postAll(buf)
		}
		sh.mu.Unlock()
		clear(buf)
		s.sweepBuf = buf[:0]
		if t != 0 {
			s.notes.pace(t, true)
		}
	}
}
