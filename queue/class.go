package queue

// Matching classes. Every waiting item belongs to a class (Item.Class, ""
// by default), interned to a small integer. Besides its tier's ring, which
// gives the queue's order and O(1) ranks, each item is linked into its
// tier's list for its class, also sorted by (deadline, seq), so Match can
// look at the head of each class of each tier — O(tiers × classes) heads —
// instead of walking the whole queue. A class whose last item leaves is
// forgotten (its number is reused), so classes cost memory only while items
// of them wait.

// classList is one class's items in one tier, a doubly linked list through
// node.cprev/cnext sorted like the tier.
type classList struct {
	head, tail int32
	n          int32
	ai         int32 // index in tier.active, or -1 when empty
}

// classLocked returns the number of class name, interning it.
func (q *Queue[T]) classLocked(name string) int32 {
	if name == "" {
		return 0
	}
	if c, ok := q.classIDs[name]; ok {
		return c
	}
	var c int32
	if k := len(q.classFree); k > 0 {
		c = q.classFree[k-1]
		q.classFree = q.classFree[:k-1]
		q.classNames[c] = name
	} else {
		c = int32(len(q.classNames))
		q.classNames = append(q.classNames, name)
		q.classRefs = append(q.classRefs, 0)
		for i := range q.tiers {
			q.tiers[i].cls = append(q.tiers[i].cls, classList{head: -1, tail: -1, ai: -1})
		}
	}
	q.classIDs[name] = c
	return c
}

// unrefClassLocked notes that one item of class c left the queue and
// forgets the class when it was the last (not while a Match walks the
// classes: it sweeps them when it ends).
func (q *Queue[T]) unrefClassLocked(c int32) {
	q.classRefs[c]--
	if q.classRefs[c] != 0 || c == 0 {
		return
	}
	if q.matching {
		q.sweepClasses = true
		return
	}
	q.forgetClassLocked(c)
}

func (q *Queue[T]) forgetClassLocked(c int32) {
	delete(q.classIDs, q.classNames[c])
	q.classNames[c] = ""
	q.classFree = append(q.classFree, c)
}

// sweepClassesLocked forgets every unused class (after a Match).
func (q *Queue[T]) sweepClassesLocked() {
	q.sweepClasses = false
	for c := int32(1); c < int32(len(q.classRefs)); c++ {
		if q.classRefs[c] == 0 && q.classNames[c] != "" {
			q.forgetClassLocked(c)
		}
	}
}

// classInsertLocked links node idx into its class list of tier t, searching
// for its place from both ends at once: O(1) for the usual append, and
// O(min(rank, len−rank)) in the class otherwise.
func (q *Queue[T]) classInsertLocked(t *tier, idx int32) {
	n := &q.nodes[idx]
	cl := &t.cls[n.class]
	if cl.n == 0 {
		n.cprev, n.cnext = -1, -1
		cl.head, cl.tail, cl.n = idx, idx, 1
		cl.ai = int32(len(t.active))
		t.active = append(t.active, n.class)
		return
	}
	cl.n++
	if !q.less(n, cl.tail) { // append
		n.cprev, n.cnext = cl.tail, -1
		q.nodes[cl.tail].cnext = idx
		cl.tail = idx
		return
	}
	if q.less(n, cl.head) { // prepend
		n.cprev, n.cnext = -1, cl.head
		q.nodes[cl.head].cprev = idx
		cl.head = idx
		return
	}
	// head <= n < tail: walk inwards from both ends.
	a, b := cl.head, cl.tail
	for {
		a = q.nodes[a].cnext
		if q.less(n, a) { // insert before a
			q.linkBefore(idx, a)
			return
		}
		b = q.nodes[b].cprev
		if !q.less(n, b) { // insert after b
			q.linkBefore(idx, q.nodes[b].cnext)
			return
		}
	}
}

// linkBefore links idx just before next, which is not a list head.
func (q *Queue[T]) linkBefore(idx, next int32) {
	n := &q.nodes[idx]
	prev := q.nodes[next].cprev
	n.cprev, n.cnext = prev, next
	q.nodes[prev].cnext = idx
	q.nodes[next].cprev = idx
}

// classRemoveLocked unlinks node idx from its class list of tier t.
func (q *Queue[T]) classRemoveLocked(t *tier, idx int32) {
	n := &q.nodes[idx]
	cl := &t.cls[n.class]
	if n.cprev >= 0 {
		q.nodes[n.cprev].cnext = n.cnext
	} else {
		cl.head = n.cnext
	}
	if n.cnext >= 0 {
		q.nodes[n.cnext].cprev = n.cprev
	} else {
		cl.tail = n.cprev
	}
	n.cprev, n.cnext = -1, -1
	cl.n--
	if cl.n == 0 {
		last := int32(len(t.active) - 1)
		moved := t.active[last]
		t.active[cl.ai] = moved
		t.cls[moved].ai = cl.ai
		t.active = t.active[:last]
		cl.ai = -1
	}
}
