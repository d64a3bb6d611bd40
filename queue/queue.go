package queue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/internal/lifetime"
	"github.com/switchboard-go/switchboard/internal/notify"
)

// Queue is a bounded multi-tier priority queue with per-tier SLA deadlines.
// Within a tier items leave in earliest-deadline-first order (ties by push
// order); across tiers a stride scheduler shares pops by Quota when several
// tiers have work, and is work-conserving when some are empty. All methods are
// safe for concurrent use.
//
// Callbacks (OnEscalate, OnDrop, OnRetry, OnPosition) run on a goroutine the
// Queue owns, one at a time, in the order the queue decided them: never on
// the goroutine of a caller inside a Queue method (Push, Pop, TryPop,
// Match, Cancel, Requeue, Close…) and never under the queue's lock. A host
// may hold its own lock around any call and take it again in a callback,
// and a callback may call the Queue. The goroutine runs only while
// callbacks are pending; Shutdown and Close wait for it.
//
// Steady-state Push/Pop/Match allocate nothing: item nodes live in a
// reusable slab, each tier is a ring buffer of slab indices, and each
// (tier, class) a linked list through the slab.
type Queue[T any] struct {
	mu       sync.Mutex
	cfg      Config[T]
	nanotime func() int64
	tiers    []tier
	nodes    []node[T]
	free     []int32
	ids      map[string]int32
	count    int
	vt       uint64 // virtual time of the last pick (stride scheduler)
	seq      uint64

	// matching classes (class.go); class 0 is ""
	classIDs     map[string]int32
	classNames   []string
	classRefs    []int32 // waiting items per class, all tiers
	classFree    []int32
	matching     bool // a Match is walking the classes
	sweepClasses bool // classes emptied during that Match

	matchMu sync.Mutex // serialises Match calls and guards ms
	ms      matchScratch

	closed     bool
	popWaiters []*waiter
	waking     int       // Pop waiters woken that have not yet retaken the lock
	waiters    sync.Pool // *waiter for Pop and PushWait, per queue

	// service-time window for EstimatedWait
	svc         []int64
	svcPos      int
	svcN        int
	svcSum      int64
	hostWorkers int
	poolWorkers int

	// callbacks, delivered in order on the queue's own goroutine
	notes *notify.Notifier[event[T]]

	// position debounce
	posTimer *time.Timer
	posArmed bool

	// eager deadlines
	dlTimer   *time.Timer
	dlArmed   bool
	dlArmedAt int64

	m *queueMetrics
}

type node[T any] struct {
	id           string
	v            T
	enq, dl      int64
	seq          uint64
	abs          uint64
	class        int32
	cprev, cnext int32  // class list links (class.go)
	gen          uint32 // bumped when the slot is freed (Match's claim check)
	tier         uint8
	retried      bool
	escalated    bool
	sent         bool // an OnPosition update was delivered for this node
	lastPos      Position
	lastWait     time.Duration
}

// waiter parks one blocked Pop or PushWait caller.
type waiter struct {
	ch     chan struct{}
	queued bool   // in a wait list
	woken  bool   // dequeued by wakePopperLocked, counted in Queue.waking
	parks  uint32 // times a Pop parked on ch (written by its owner only)
}

func newWaiter() any { return &waiter{ch: make(chan struct{}, 1)} }

// New returns an empty Queue configured by cfg, or an error wrapping
// ErrInvalidConfig that names the bad field. It starts no goroutine: timers
// are armed only when EagerDeadlines or OnPosition are set, and the
// callback goroutine runs only while callbacks are pending.
func New[T any](cfg Config[T]) (*Queue[T], error) {
	c, err := cfg.normalized()
	if err != nil {
		return nil, err
	}
	q := &Queue[T]{cfg: c, nanotime: nanoClock(), ids: make(map[string]int32), svc: make([]int64, c.ServiceWindow)}
	q.waiters.New = newWaiter
	q.notes = notify.New(q.deliver)
	q.classIDs = map[string]int32{"": 0}
	q.classNames = []string{""}
	q.classRefs = []int32{0}
	q.tiers = make([]tier, len(c.Tiers))
	strides := strides(c.Tiers)
	for i, tc := range c.Tiers {
		q.tiers[i].init(tc, strides[i])
	}
	q.m = newQueueMetrics(c)
	return q, nil
}

// nanoClock returns a function reading Unix nanoseconds from the monotonic
// clock only (one vDSO read instead of two, immune to wall-clock steps),
// anchored to the wall time at construction. Inside a testing/synctest
// bubble it follows the bubble's fake clock.
func nanoClock() func() int64 {
	base := time.Now()
	baseNs := base.UnixNano()
	return func() int64 { return baseNs + int64(time.Since(base)) }
}

// Tiers returns a copy of the effective tier configuration (defaults filled).
func (q *Queue[T]) Tiers() []TierConfig { return append([]TierConfig(nil), q.cfg.Tiers...) }

// Push adds v to tier with the given id ("" = anonymous) and class "". It
// never blocks: it returns ErrFull when the tier is at capacity,
// ErrDuplicateID when id is already waiting, ErrInvalidTier or ErrClosed.
// The item's deadline is now + the tier's MaxWait.
func (q *Queue[T]) Push(id string, tier int, v T) error {
	return q.PushClass(id, tier, "", v)
}

// PushClass is Push for an item of matching class class (see Item.Class and
// Match). Classes need no declaration; the first item of a class allocates
// a few words per tier, and a class is forgotten when its last item leaves.
// Pushing an item of a class that already has items allocates nothing.
func (q *Queue[T]) PushClass(id string, tier int, class string, v T) error {
	if uint(tier) >= uint(len(q.tiers)) {
		return fmt.Errorf("%w: %d", ErrInvalidTier, tier)
	}
	now := q.nanotime()
	q.mu.Lock()
	w, err := q.pushLocked(id, tier, class, v, now)
	q.mu.Unlock()
	w.wake()
	return err
}

// PushWait is Push that waits for room while the tier is full, until ctx is
// done (returning ctx.Err()) or the queue closes (ErrClosed).
func (q *Queue[T]) PushWait(ctx context.Context, id string, tier int, v T) error {
	if uint(tier) >= uint(len(q.tiers)) {
		return fmt.Errorf("%w: %d", ErrInvalidTier, tier)
	}
	var sw *waiter
	defer func() {
		if sw != nil {
			q.waiters.Put(sw)
		}
	}()
	for {
		now := q.nanotime()
		q.mu.Lock()
		w, err := q.pushLocked(id, tier, "", v, now)
		if err != ErrFull {
			q.mu.Unlock()
			w.wake()
			return err
		}
		if sw == nil {
			sw = q.waiters.Get().(*waiter)
		}
		t := &q.tiers[tier]
		sw.queued = true
		t.spaceWaiters = append(t.spaceWaiters, sw)
		q.mu.Unlock()
		select {
		case <-sw.ch:
		case <-ctx.Done():
			q.mu.Lock()
			if sw.queued {
				removeWaiter(&t.spaceWaiters, sw)
			} else if t.len() < t.cfg.Capacity || q.closed {
				// We were woken but leave: hand the wake-up on.
				next := q.nextSpaceWaiterLocked(tier)
				q.mu.Unlock()
				next.wake()
				q.mu.Lock()
			}
			q.mu.Unlock()
			select {
			case <-sw.ch:
			default:
			}
			return ctx.Err()
		}
	}
}

// pushLocked inserts one item. It returns a waiter to wake after unlocking.
func (q *Queue[T]) pushLocked(id string, ti int, class string, v T, now int64) (*waiter, error) {
	if q.closed {
		return nil, ErrClosed
	}
	t := &q.tiers[ti]
	if t.len() >= t.cfg.Capacity {
		return nil, ErrFull
	}
	if id != "" {
		if _, dup := q.ids[id]; dup {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateID, id)
		}
	}
	q.seq++
	idx := q.allocLocked()
	n := &q.nodes[idx]
	n.id, n.v, n.enq, n.dl, n.seq, n.tier = id, v, now, now+t.maxWait, q.seq, uint8(ti)
	n.class = q.classLocked(class)
	q.classRefs[n.class]++
	if id != "" {
		q.ids[id] = idx
	}
	q.insertLocked(ti, idx)
	t.stats.Pushed++
	return q.afterInsertLocked(ti, n.dl, now), nil
}

// Requeue puts an item obtained from Pop, TryPop or Match back with its
// original enqueue time, deadline, flags, class and push order, so it
// regains its original place (normally the front of its tier) — for a
// conversation whose agent disconnected or declined. It ignores the tier's
// capacity (the item already held a place) and refunds the scheduler's
// quota charge (never below the current virtual time, so a tier gains no
// burst from requeueing an item long after it was handed out). A host restoring a persisted waiting room may also build the
// Item itself (zero Enqueued or Deadline mean now and now + MaxWait). It
// returns ErrClosed, ErrInvalidTier or ErrDuplicateID.
func (q *Queue[T]) Requeue(it Item[T]) error {
	if uint(it.Tier) >= uint(len(q.tiers)) {
		return fmt.Errorf("%w: %d", ErrInvalidTier, it.Tier)
	}
	now := q.nanotime()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if it.ID != "" {
		if _, dup := q.ids[it.ID]; dup {
			q.mu.Unlock()
			return fmt.Errorf("%w: %q", ErrDuplicateID, it.ID)
		}
	}
	t := &q.tiers[it.Tier]
	seq := it.seq
	if seq == 0 {
		q.seq++
		seq = q.seq
	}
	idx := q.allocLocked()
	n := &q.nodes[idx]
	n.id, n.v, n.seq, n.tier = it.ID, it.Value, seq, uint8(it.Tier)
	n.enq, n.dl = it.Enqueued.UnixNano(), it.Deadline.UnixNano()
	if it.Deadline.IsZero() {
		n.dl = now + t.maxWait
	}
	if it.Enqueued.IsZero() {
		n.enq = now
	}
	n.retried, n.escalated = it.Retried, it.Escalated
	n.class = q.classLocked(it.Class)
	q.classRefs[n.class]++
	if it.ID != "" {
		q.ids[it.ID] = idx
	}
	if t.pass >= t.stride {
		t.pass -= t.stride // refund the pick that handed it out...
	}
	t.pass = max(t.pass, q.vt) // ...but bank no credit beyond it
	t.stats.Requeued++
	q.insertLocked(it.Tier, idx)
	w := q.afterInsertLocked(it.Tier, n.dl, now)
	q.mu.Unlock()
	w.wake()
	return nil
}

func (q *Queue[T]) allocLocked() int32 {
	if k := len(q.free); k > 0 {
		idx := q.free[k-1]
		q.free = q.free[:k-1]
		return idx
	}
	q.nodes = append(q.nodes, node[T]{})
	return int32(len(q.nodes) - 1)
}

func (q *Queue[T]) freeLocked(idx int32) {
	n := &q.nodes[idx]
	if n.id != "" {
		delete(q.ids, n.id)
	}
	q.unrefClassLocked(n.class)
	gen := n.gen + 1
	*n = node[T]{}
	n.gen = gen
	q.free = append(q.free, idx)
}

// afterInsertLocked does the bookkeeping shared by push and requeue and
// returns a parked Pop to wake.
func (q *Queue[T]) afterInsertLocked(ti int, dl, now int64) *waiter {
	q.count++
	if m := q.m; m != nil {
		m.depth[ti].Set(float64(q.tiers[ti].len()))
	}
	if q.cfg.EagerDeadlines && (!q.dlArmed || dl < q.dlArmedAt) {
		q.armDeadlineLocked(dl, now)
	}
	q.positionsChangedLocked()
	return q.wakePopperLocked()
}

// wakePopperLocked dequeues a parked Pop to wake, unless enough woken ones
// are already on their way to take the waiting items.
func (q *Queue[T]) wakePopperLocked() *waiter {
	k := len(q.popWaiters)
	if k == 0 || q.waking >= q.count {
		return nil
	}
	w := q.popWaiters[k-1]
	q.popWaiters = q.popWaiters[:k-1]
	w.queued = false
	w.woken = true
	q.waking++
	return w
}

// insertLocked places node idx in tier ti by (deadline, seq).
func (q *Queue[T]) insertLocked(ti int, idx int32) {
	t := &q.tiers[ti]
	n := t.len()
	if n == 0 {
		t.pass = max(t.pass, q.vt) // a tier that was idle banks no credit
	}
	if n == len(t.buf) {
		t.grow()
	}
	nd := &q.nodes[idx]
	// Fast path: deadlines normally arrive in order.
	pos := n
	if n > 0 && q.less(nd, t.at(n-1)) {
		lo, hi := 0, n-1
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if q.less(nd, t.at(mid)) {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		pos = lo
	}
	if pos < n/2 {
		t.head--
		for k := 0; k < pos; k++ {
			a := t.head + uint64(k)
			moved := t.buf[(a+1)&t.mask]
			t.buf[a&t.mask] = moved
			q.nodes[moved].abs = a
		}
	} else {
		for k := n; k > pos; k-- {
			a := t.head + uint64(k)
			moved := t.buf[(a-1)&t.mask]
			t.buf[a&t.mask] = moved
			q.nodes[moved].abs = a
		}
		t.tail++
	}
	a := t.head + uint64(pos)
	t.buf[a&t.mask] = idx
	nd.abs = a
	q.classInsertLocked(t, idx)
}

// removeLocked unlinks the node at rank pos of tier ti (not freeing it).
func (q *Queue[T]) removeLocked(ti int, pos int) {
	t := &q.tiers[ti]
	q.classRemoveLocked(t, t.at(pos))
	n := t.len()
	if pos < n/2 {
		for k := pos; k > 0; k-- {
			a := t.head + uint64(k)
			moved := t.buf[(a-1)&t.mask]
			t.buf[a&t.mask] = moved
			q.nodes[moved].abs = a
		}
		t.head++
	} else {
		for k := pos; k < n-1; k++ {
			a := t.head + uint64(k)
			moved := t.buf[(a+1)&t.mask]
			t.buf[a&t.mask] = moved
			q.nodes[moved].abs = a
		}
		t.tail--
	}
	q.count--
	if m := q.m; m != nil {
		m.depth[ti].Set(float64(t.len()))
	}
}

func (q *Queue[T]) less(a *node[T], bi int32) bool {
	b := &q.nodes[bi]
	return a.dl < b.dl || (a.dl == b.dl && a.seq < b.seq)
}

// nextSpaceWaiterLocked dequeues the oldest PushWait caller of tier ti.
func (q *Queue[T]) nextSpaceWaiterLocked(ti int) *waiter {
	t := &q.tiers[ti]
	if len(t.spaceWaiters) == 0 {
		return nil
	}
	w := t.spaceWaiters[0]
	copy(t.spaceWaiters, t.spaceWaiters[1:])
	t.spaceWaiters[len(t.spaceWaiters)-1] = nil
	t.spaceWaiters = t.spaceWaiters[:len(t.spaceWaiters)-1]
	w.queued = false
	return w
}

func removeWaiter(list *[]*waiter, w *waiter) {
	l := *list
	for i, x := range l {
		if x == w {
			copy(l[i:], l[i+1:])
			l[len(l)-1] = nil
			*list = l[:len(l)-1]
			w.queued = false
			return
		}
	}
}

func (w *waiter) wake() {
	if w == nil {
		return
	}
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// Cancel removes the waiting item with this id (a customer who left) and
// reports whether it was waiting; it counts as abandoned in Stats. It does
// not affect items already handed out. An item that a Match claim callback
// is considering can be cancelled: Match then reports ErrClaimLost.
func (q *Queue[T]) Cancel(id string) bool {
	if id == "" {
		return false
	}
	q.mu.Lock()
	idx, ok := q.ids[id]
	if !ok {
		q.mu.Unlock()
		return false
	}
	n := &q.nodes[idx]
	ti := int(n.tier)
	t := &q.tiers[ti]
	q.removeLocked(ti, int(n.abs-t.head))
	t.stats.Cancelled++
	t.stats.Abandoned++
	q.freeLocked(idx)
	q.positionsChangedLocked()
	w := q.nextSpaceWaiterLocked(ti)
	q.mu.Unlock()
	w.wake()
	return true
}

// Len returns the number of waiting items across all tiers.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.count
}

// LenTier returns the number of items waiting in tier i (0 for an invalid i).
func (q *Queue[T]) LenTier(i int) int {
	if uint(i) >= uint(len(q.tiers)) {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.tiers[i].len()
}

// Stats returns tier i's counters (zero Stats for an invalid i).
func (q *Queue[T]) Stats(i int) Stats {
	if uint(i) >= uint(len(q.tiers)) {
		return Stats{}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.tiers[i].stats
	s.Len = q.tiers[i].len()
	return s
}

// Shutdown stops the queue gracefully. From its start Push, PushWait and
// Requeue return ErrClosed, parked PushWait callers are released, the
// deadline and position timers stop and Ready reports the queue closed.
// Items already waiting stay and can still be handed out (Pop returns
// ErrClosed once the queue is empty); the callbacks of deadline actions
// taken after Shutdown returns are not called. Shutdown waits until the
// callbacks queued before it returns have been delivered, or until ctx is
// done: then those not yet
// started are dropped and it returns ctx.Err() once the one running (if
// any) has returned. When Shutdown returns no goroutine of the Queue runs
// and no callback fires again. It is idempotent (a later call waits in the
// same way); it must not be called from a callback, nor while holding a
// lock that a callback takes.
func (q *Queue[T]) Shutdown(ctx context.Context) error {
	q.closeIntake()
	return q.notes.Stop(ctx)
}

// Close is Shutdown without the grace: intake stops and callbacks not yet
// delivered are dropped; it returns once the callback running (if any) has
// returned. Waiting items stay poppable. Close is idempotent and returns nil.
func (q *Queue[T]) Close() error {
	ctx := lifetime.Canceled() // Close is Shutdown with a context already done
	_ = q.Shutdown(ctx)        // only reports dropped callbacks, as Close documents
	return nil
}

// Ready returns nil while the queue accepts items, and an error wrapping
// ErrClosed once Shutdown or Close has begun.
func (q *Queue[T]) Ready() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("%w: shut down", ErrClosed)
	}
	return nil
}

// closeIntake stops intake and the timers and releases parked PushWait
// callers, leaving callback delivery running (Pool.Shutdown drains the
// queue before it ends the callbacks).
func (q *Queue[T]) closeIntake() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.closed = true
	var wake []*waiter
	wake = append(wake, q.popWaiters...)
	for _, w := range q.popWaiters {
		w.queued = false
		w.woken = true
		q.waking++
	}
	q.popWaiters = nil
	for i := range q.tiers {
		for _, w := range q.tiers[i].spaceWaiters {
			w.queued = false
		}
		wake = append(wake, q.tiers[i].spaceWaiters...)
		q.tiers[i].spaceWaiters = nil
	}
	if q.dlTimer != nil {
		q.dlTimer.Stop()
		q.dlArmed = false
	}
	if q.posTimer != nil {
		q.posTimer.Stop()
		q.posArmed = false
	}
	q.mu.Unlock()
	for _, w := range wake {
		w.wake()
	}
}

func (q *Queue[T]) itemLocked(idx int32) Item[T] {
	n := &q.nodes[idx]
	return Item[T]{
		ID: n.id, Tier: int(n.tier), Class: q.classNames[n.class], Value: n.v,
		Enqueued: time.Unix(0, n.enq), Deadline: time.Unix(0, n.dl),
		Retried: n.retried, Escalated: n.escalated, seq: n.seq,
	}
}
