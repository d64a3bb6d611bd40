package queue

import "time"

// The cross-tier scheduler is stride scheduling: tier i advances its pass by
// stride_i = L/Quota_i each time it is picked, and the non-empty tier with the
// smallest pass goes next (ties to the more important tier). Under saturation
// each tier therefore receives exactly Quota_i/ΣQuota of the pops; an empty
// tier is skipped (work-conserving), and a tier that becomes non-empty starts
// at the current virtual time, so idleness banks no credit and a freshly
// arrived P0 item is handed out next. Because the schedule is a pure function
// of the passes, an item's overall position has a closed form (overallLocked).

// strides returns L/Quota_i with L the least common multiple of the quotas
// (or 2^20 if that is larger), so shares are exact for ordinary weights.
func strides(tiers []TierConfig) []uint64 {
	l := uint64(1)
	for _, t := range tiers {
		q := uint64(t.Quota)
		l = l / gcd(l, q) * q
		if l > 1<<20 {
			l = 1 << 20
			break
		}
	}
	out := make([]uint64, len(tiers))
	for i, t := range tiers {
		out[i] = max(1, l/uint64(t.Quota))
	}
	return out
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// pickLocked returns the tier to serve next, or -1 when all are empty.
func (q *Queue[T]) pickLocked() int {
	best := -1
	var bp uint64
	for i := range q.tiers {
		t := &q.tiers[i]
		if t.head == t.tail {
			continue
		}
		if best < 0 || t.pass < bp {
			best, bp = i, t.pass
		}
	}
	return best
}

// overallLocked returns how many items will be handed out before the item of
// rank r in tier ti, assuming no arrivals and no deadline actions.
func (q *Queue[T]) overallLocked(ti, r int) int {
	t := &q.tiers[ti]
	s := t.pass + uint64(r)*t.stride // virtual time of our item's pick
	sum := r
	for j := range q.tiers {
		o := &q.tiers[j]
		l := o.len()
		if j == ti || l == 0 {
			continue
		}
		var k uint64
		switch {
		case j < ti && s >= o.pass: // ties go to the more important tier
			k = (s-o.pass)/o.stride + 1
		case j > ti && s > o.pass:
			k = (s - o.pass + o.stride - 1) / o.stride
		}
		sum += int(min(k, uint64(l)))
	}
	return sum
}

// Position returns where the waiting item id stands; ok is false when no
// such item is waiting. Overall counts the items that the scheduler will hand
// out before it if nothing else arrives (exact for the current contents,
// quotas included, in the order Pop and TryPop follow); InTier counts its
// tier's items ahead of it. O(tiers). An item a Match claim is considering
// is still waiting and keeps its position; Match may hand out an item before
// others of a higher position when nobody can take those.
func (q *Queue[T]) Position(id string) (Position, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	idx, ok := q.ids[id]
	if !ok {
		return Position{}, false
	}
	return q.positionLocked(idx), true
}

func (q *Queue[T]) positionLocked(idx int32) Position {
	n := &q.nodes[idx]
	ti := int(n.tier)
	r := int(n.abs - q.tiers[ti].head)
	return Position{Overall: q.overallLocked(ti, r), InTier: r}
}

// EstimatedWait returns the expected wait of item id:
// (Overall/workers + 1) × mean service time, where the mean covers the last
// ServiceWindow times given to RecordService (or reported by a Pool) and
// workers is SetWorkers plus the workers of running Pools (at least 1).
// Before any service time is known the mean is 0. ok is false when no such
// item is waiting.
func (q *Queue[T]) EstimatedWait(id string) (time.Duration, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	idx, ok := q.ids[id]
	if !ok {
		return 0, false
	}
	return q.estimateLocked(q.positionLocked(idx).Overall), true
}

func (q *Queue[T]) estimateLocked(ahead int) time.Duration {
	if q.svcN == 0 {
		return 0
	}
	workers := max(1, q.hostWorkers+q.poolWorkers)
	mean := q.svcSum / int64(q.svcN)
	return time.Duration(int64(ahead/workers+1) * mean)
}

// RecordService feeds one service time (how long an item took once handed
// out, e.g. a conversation's handling time) into the EstimatedWait average.
// A Pool reports its tasks automatically. Negative durations are ignored.
func (q *Queue[T]) RecordService(d time.Duration) {
	if d < 0 {
		return
	}
	q.mu.Lock()
	q.recordServiceLocked(int64(d))
	q.mu.Unlock()
}

func (q *Queue[T]) recordServiceLocked(d int64) {
	if q.svcN == len(q.svc) {
		q.svcSum -= q.svc[q.svcPos]
	} else {
		q.svcN++
	}
	q.svc[q.svcPos] = d
	q.svcSum += d
	q.svcPos++
	if q.svcPos == len(q.svc) {
		q.svcPos = 0
	}
}

// SetWorkers tells the wait estimate how many servers (for a waiting room:
// agents currently serving) work the queue, in addition to the workers of
// any running Pool. Negative values count as 0.
func (q *Queue[T]) SetWorkers(n int) {
	q.mu.Lock()
	q.hostWorkers = max(0, n)
	q.positionsChangedLocked()
	q.mu.Unlock()
}

func (q *Queue[T]) addPoolWorkers(delta int) {
	q.mu.Lock()
	q.poolWorkers += delta
	q.mu.Unlock()
}
