package queue

import "time"

// positionsChangedLocked notes that positions may have changed and arms the
// debounce timer when OnPosition is set. Without OnPosition it costs one
// nil check.
func (q *Queue[T]) positionsChangedLocked() {
	if q.cfg.OnPosition == nil || q.posArmed || q.closed {
		return
	}
	q.posArmed = true
	if q.posTimer == nil {
		q.posTimer = time.AfterFunc(q.cfg.PositionDebounce, q.onPositionTimer)
	} else {
		q.posTimer.Reset(q.cfg.PositionDebounce)
	}
}

// onPositionTimer computes the positions of all identified waiting items and
// queues the ones that changed since their last report for OnPosition.
func (q *Queue[T]) onPositionTimer() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.posArmed = false
	var ups []PositionUpdate
	for ti := range q.tiers {
		t := &q.tiers[ti]
		for r := 0; r < t.len(); r++ {
			idx := t.at(r)
			n := &q.nodes[idx]
			if n.id == "" {
				continue
			}
			p := Position{Overall: q.overallLocked(ti, r), InTier: r}
			w := q.estimateLocked(p.Overall)
			if n.sent && n.lastPos == p && n.lastWait == w {
				continue
			}
			n.sent, n.lastPos, n.lastWait = true, p, w
			ups = append(ups, PositionUpdate{ID: n.id, Tier: ti, Position: p, EstimatedWait: w})
		}
	}
	if len(ups) > 0 {
		q.notes.Post(event[T]{ups: ups})
	}
	q.mu.Unlock()
}
