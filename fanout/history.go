package fanout

import "time"

// ring is a topic's bounded history: the last Size publications, each
// recoverable until TTL after it was published. Guarded by the topic lock.
type ring struct {
	buf   []Publication
	start int // index of the oldest entry
	n     int
	ttl   time.Duration
}

func (r *ring) configure(h HistoryOptions) {
	if h.Size == len(r.buf) {
		r.ttl = h.TTL
		return
	}
	old := r.snapshot()
	r.buf, r.start, r.n, r.ttl = nil, 0, 0, h.TTL
	if h.Size == 0 {
		return
	}
	r.buf = make([]Publication, h.Size)
	if len(old) > h.Size {
		old = old[len(old)-h.Size:]
	}
	for i := range old {
		r.add(old[i])
	}
}

func (r *ring) add(p Publication) {
	if len(r.buf) == 0 {
		return
	}
	if r.n < len(r.buf) {
		r.buf[(r.start+r.n)%len(r.buf)] = p
		r.n++
		return
	}
	r.buf[r.start] = p
	r.start = (r.start + 1) % len(r.buf)
}

// expire drops entries older than the TTL.
func (r *ring) expire(now time.Time) {
	for r.n > 0 && r.ttl > 0 && now.Sub(r.buf[r.start].Time) >= r.ttl {
		r.buf[r.start] = Publication{}
		r.start = (r.start + 1) % len(r.buf)
		r.n--
	}
}

func (r *ring) snapshot() []Publication {
	out := make([]Publication, 0, r.n)
	for i := 0; i < r.n; i++ {
		out = append(out, r.buf[(r.start+i)%len(r.buf)])
	}
	return out
}

// since returns the entries with an offset greater than since and whether
// the ring covers everything after since given the current top offset.
func (r *ring) since(since, top uint64) ([]Publication, bool) {
	if since >= top {
		return nil, since == top
	}
	if r.n == 0 {
		return nil, false
	}
	first := r.buf[r.start].Offset
	if first > since+1 {
		return nil, false
	}
	skip := int(since + 1 - first)
	out := make([]Publication, 0, r.n-skip)
	for i := skip; i < r.n; i++ {
		out = append(out, r.buf[(r.start+i)%len(r.buf)])
	}
	return out, true
}
