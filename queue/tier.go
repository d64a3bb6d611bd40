package queue

// tier is one priority level: a ring-buffer deque of node indices kept sorted
// by (deadline, seq). Items normally arrive in deadline order, so Push appends
// and Pop takes the front in O(1); out-of-order inserts (Requeue, retries,
// Cancel) shift the shorter side. Every node records its absolute ring
// position, so an item's rank within the tier is abs - head: O(1).
type tier struct {
	cfg     TierConfig
	maxWait int64
	buf     []int32
	mask    uint64
	head    uint64 // absolute position of the front
	tail    uint64 // absolute position one past the back

	// stride scheduling state (see sched.go)
	pass   uint64
	stride uint64

	// matching classes (see class.go): one list per interned class, and
	// the classes with items in this tier
	cls    []classList
	active []int32

	spaceWaiters []*waiter
	stats        Stats
}

const ringStart = 1 << 62 // absolute positions start mid-range so head can move left

func (t *tier) init(cfg TierConfig, stride uint64) {
	t.cfg = cfg
	t.maxWait = int64(cfg.MaxWait)
	n := 16
	t.buf = make([]int32, n)
	t.mask = uint64(n - 1)
	t.head, t.tail = ringStart, ringStart
	t.stride = stride
	t.cls = []classList{{head: -1, tail: -1, ai: -1}} // class 0 is ""
}

func (t *tier) len() int { return int(t.tail - t.head) }

func (t *tier) at(i int) int32 { return t.buf[(t.head+uint64(i))&t.mask] }

// grow doubles the ring; absolute positions are unchanged.
func (t *tier) grow() {
	nb := make([]int32, 2*len(t.buf))
	nm := uint64(len(nb) - 1)
	for a := t.head; a != t.tail; a++ {
		nb[a&nm] = t.buf[a&t.mask]
	}
	t.buf, t.mask = nb, nm
}
