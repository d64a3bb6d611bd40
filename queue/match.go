package queue

// Match hands out the first waiting item, in the queue's own order, that the
// host can take (see Queue.Match). It visits the non-empty tiers in the
// order the stride scheduler would turn to them and, within a tier, only the
// head of each class: a min-heap of those heads by (deadline, seq), built
// when the walk reaches the tier, gives the candidates in exactly the order
// TryPop would hand them out if the items nobody can take were not there. A
// head that is skipped is replaced by the next item of its class; a class
// that is skipped is left out of the following tiers' heaps.

// matchEntry is one candidate head in the walk.
type matchEntry struct {
	dl  int64
	seq uint64
	cls int32
	ti  uint8
}

// matchCursor is the key of the last item skipped in one (tier, class),
// valid when epoch is the walk's epoch.
type matchCursor struct {
	dl    int64
	seq   uint64
	epoch uint32
}

// matchScratch is reused by every Match of a Queue (guarded by matchMu), so
// a walk allocates nothing in the steady state.
type matchScratch struct {
	epoch  uint32
	nclass int
	heap   []matchEntry  // candidate heads of the tier being walked
	order  []int         // non-empty tiers in stride order
	skip   []uint32      // per class: == epoch when skipped
	cursor []matchCursor // per tier × class
}

func (e *matchEntry) before(o *matchEntry) bool {
	return e.dl < o.dl || (e.dl == o.dl && e.seq < o.seq)
}

func (s *matchScratch) push(e matchEntry) {
	s.heap = append(s.heap, e)
	h := s.heap
	for j := len(h) - 1; j > 0; {
		i := (j - 1) / 2
		if !h[j].before(&h[i]) {
			break
		}
		h[i], h[j] = h[j], h[i]
		j = i
	}
}

func (s *matchScratch) down(i int) {
	h := s.heap
	n := len(h)
	for {
		j := 2*i + 1
		if j >= n {
			return
		}
		if j+1 < n && h[j+1].before(&h[j]) {
			j++
		}
		if !h[j].before(&h[i]) {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

func (s *matchScratch) pop() matchEntry {
	h := s.heap
	top := h[0]
	n := len(h) - 1
	h[0] = h[n]
	s.heap = h[:n]
	s.down(0)
	return top
}

// matchStartLocked prepares a walk: fresh stamps, scratch sized for the
// current classes, and the non-empty tiers in stride order. O(tiers).
func (q *Queue[T]) matchStartLocked() {
	s := &q.ms
	s.epoch++
	if s.epoch == 0 { // wrapped: old stamps could look current
		clear(s.skip)
		clear(s.cursor)
		s.epoch = 1
	}
	s.nclass = len(q.classNames)
	nt := len(q.tiers)
	if len(s.skip) < s.nclass {
		s.skip = append(s.skip, make([]uint32, s.nclass-len(s.skip))...)
	}
	if need := nt * s.nclass; len(s.cursor) < need {
		s.cursor = append(s.cursor, make([]matchCursor, need-len(s.cursor))...)
	}
	// Non-empty tiers by pass, ties to the more important tier: the order
	// in which the stride scheduler turns to them.
	s.order = s.order[:0]
	for ti := range q.tiers {
		if t := &q.tiers[ti]; t.head != t.tail {
			s.order = append(s.order, ti)
		}
	}
	for i := 1; i < len(s.order); i++ {
		for j := i; j > 0; j-- {
			a, b := &q.tiers[s.order[j]], &q.tiers[s.order[j-1]]
			if a.pass > b.pass || (a.pass == b.pass && s.order[j] > s.order[j-1]) {
				break
			}
			s.order[j], s.order[j-1] = s.order[j-1], s.order[j]
		}
	}
}

// matchTierLocked fills the heap with the head of every class of tier ti
// that the walk has not skipped. O(classes).
func (q *Queue[T]) matchTierLocked(ti int) {
	s := &q.ms
	t := &q.tiers[ti]
	s.heap = s.heap[:0]
	for _, c := range t.active {
		if int(c) >= s.nclass || s.skip[c] == s.epoch {
			continue // a class new since the walk began, or skipped
		}
		n := &q.nodes[t.cls[c].head]
		s.heap = append(s.heap, matchEntry{dl: n.dl, seq: n.seq, cls: c, ti: uint8(ti)})
	}
	for i := len(s.heap)/2 - 1; i >= 0; i-- {
		s.down(i)
	}
}

// candidateLocked returns the first item of class c in tier ti after the
// walk's cursor there (the last item skipped), or -1.
func (q *Queue[T]) candidateLocked(ti int, c int32, cur *matchCursor) int32 {
	idx := q.tiers[ti].cls[c].head
	if cur.epoch != q.ms.epoch {
		return idx
	}
	for idx >= 0 {
		n := &q.nodes[idx]
		if n.dl > cur.dl || (n.dl == cur.dl && n.seq > cur.seq) {
			break
		}
		idx = n.cnext
	}
	return idx
}

// pushCandidateLocked puts the next candidate of (e.ti, e.cls) on the heap.
func (q *Queue[T]) pushCandidateLocked(e matchEntry, cur *matchCursor) {
	if idx := q.candidateLocked(int(e.ti), e.cls, cur); idx >= 0 {
		n := &q.nodes[idx]
		e.dl, e.seq = n.dl, n.seq
		q.ms.push(e)
	}
}

// chargeLocked charges tier ti for one hand-out by Match, as a pick by the
// stride scheduler would. Tiers that were passed over because nothing in
// them could be taken bank no credit for it: like a tier that was idle, they
// restart at the current virtual time (so Position stays exact).
func (q *Queue[T]) chargeLocked(ti int) {
	t := &q.tiers[ti]
	q.vt = max(t.pass, q.vt)
	t.pass = q.vt + t.stride
	for j := range q.tiers {
		if o := &q.tiers[j]; o.head != o.tail && o.pass < q.vt {
			o.pass = q.vt
		}
	}
}

// Match hands out the first waiting item, in the queue's own order, that
// claim takes, and removes it from the queue. The order is TryPop's with
// the items that are passed over left out: tiers by the stride schedule and
// their quotas, earliest deadline first within a tier. It returns ErrNoMatch
// when nothing was taken.
//
// claim is called with candidate items in that order and answers with a
// Verdict. Take means claim has already secured what the item needs — the
// usual claim is an atomic router.Assigner.Offer or Assign for the item's
// request — and Match removes the item; Skip passes over this item only;
// SkipClass passes over every item of the item's Class, in every tier, for
// the rest of this call (nobody can take that class now); Stop ends the
// call. Match looks only at the first item of each (tier, class) that has
// not been passed over, so a call costs O(tiers × classes) claim calls at
// most when claim answers SkipClass, plus one per item it Skips: not a walk
// of the whole queue. Deadline actions are applied to each candidate first,
// as TryPop does (an escalated candidate's OnEscalate is queued for the
// delivery goroutine, not run by Match). Removing the taken item costs what Cancel costs: O(1) at either end of
// its tier, otherwise a shift of the shorter side of the tier's ring (int32
// moves). Match allocates nothing in the steady state.
//
// Nothing leaves the queue until it is taken: while claim runs, the item
// keeps its place, Position and EstimatedWait report it, Cancel can remove
// it and its deadline can fire. claim runs without the queue's lock held and
// may call any method of the Queue except Match: Match calls are
// serialised, and claim calling Match deadlocks. If the item left the queue
// while claim ran (Cancel, a Drop deadline action, a concurrent Pop or
// TryPop) and claim returned Take, Match returns the item with ErrClaimLost:
// it was not handed out, and the host must undo its claim (for example
// release the offer). A panic in claim propagates; the item stays.
func (q *Queue[T]) Match(claim func(Item[T]) Verdict) (Item[T], error) {
	q.matchMu.Lock()
	defer q.matchMu.Unlock()
	s := &q.ms
	q.mu.Lock()
	q.matching = true
	q.matchStartLocked()
	q.mu.Unlock()
	defer q.matchEnd()
	for _, ti := range s.order {
		q.mu.Lock()
		q.matchTierLocked(ti)
		q.mu.Unlock()
		for len(s.heap) > 0 {
			e := s.pop()
			if s.skip[e.cls] == s.epoch {
				continue
			}
			cur := &s.cursor[ti*s.nclass+int(e.cls)]
			now := q.nanotime()
			q.mu.Lock()
			idx := q.candidateLocked(ti, e.cls, cur)
			if idx < 0 {
				q.mu.Unlock()
				continue
			}
			n := &q.nodes[idx]
			if n.dl != e.dl || n.seq != e.seq {
				// The class changed since the entry was made: queue its
				// current candidate in its proper place.
				e.dl, e.seq = n.dl, n.seq
				s.push(e)
				q.mu.Unlock()
				continue
			}
			gen := n.gen
			if n.dl < now && !n.escalated {
				dropped, handOut := q.expireLocked(ti, int(n.abs-q.tiers[ti].head), idx, now)
				if !handOut {
					// Retried (now later in its class) or dropped: go on
					// with the class's current candidate.
					var w *waiter
					if dropped {
						w = q.nextSpaceWaiterLocked(ti)
					}
					q.pushCandidateLocked(e, cur)
					q.mu.Unlock()
					w.wake()
					continue
				}
			}
			it := q.itemLocked(idx)
			dl, seq := n.dl, n.seq
			q.mu.Unlock()
			switch claim(it) {
			case Take:
				return q.takeClaimed(idx, gen, it)
			case Skip:
				cur.dl, cur.seq, cur.epoch = dl, seq, s.epoch
				q.mu.Lock()
				q.pushCandidateLocked(e, cur)
				q.mu.Unlock()
			case SkipClass:
				s.skip[e.cls] = s.epoch
			default: // Stop
				return Item[T]{}, ErrNoMatch
			}
		}
	}
	return Item[T]{}, ErrNoMatch
}

// takeClaimed removes the claimed node idx if it is still the item claim
// saw (same slot generation) and hands it out.
func (q *Queue[T]) takeClaimed(idx int32, gen uint32, seen Item[T]) (Item[T], error) {
	now := q.nanotime()
	q.mu.Lock()
	n := &q.nodes[idx]
	if n.gen != gen {
		q.mu.Unlock()
		return seen, ErrClaimLost
	}
	ti := int(n.tier)
	t := &q.tiers[ti]
	q.chargeLocked(ti)
	it := q.itemLocked(idx) // current flags and deadline
	waitNs := now - n.enq
	q.removeLocked(ti, int(n.abs-t.head))
	t.stats.Popped++
	q.freeLocked(idx)
	if m := q.m; m != nil {
		m.wait[ti].Observe(float64(waitNs) / 1e9)
	}
	q.positionsChangedLocked()
	w := q.nextSpaceWaiterLocked(ti)
	q.mu.Unlock()
	w.wake()
	return it, nil
}

// matchEnd ends a walk: classes emptied meanwhile are forgotten now.
func (q *Queue[T]) matchEnd() {
	q.mu.Lock()
	q.matching = false
	if q.sweepClasses {
		q.sweepClassesLocked()
	}
	q.mu.Unlock()
}
