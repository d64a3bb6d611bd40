package router

// ringBucket is one entry of a snapshot's bucket table: what a lookup needs
// to know about one prefix bucket (the points whose top bits, point >> shift,
// equal the bucket number) to answer most keys from this 16-byte entry
// alone, one cache line, without touching points:
//
//   - a key at or before the bucket's first point belongs to that point;
//   - a key after the bucket's last point belongs to the first point after
//     the bucket (wrapping to points[0]);
//   - only a key between the first and the last point of a bucket of two or
//     more points needs the points, and is found among them.
//
// With 0.5 to 1 point per bucket (ringIndexBits) the last case is about 7%
// of lookups; the first two are told apart by a select, not a branch. The
// table costs 16 bytes per bucket, about 21 per point, on top of points (8)
// and index (about 5).
type ringBucket struct {
	// first is the bucket's first point (position << 16 | owner). For an
	// empty bucket it is the bucket's last position with the owner of the
	// next point, so every key of the bucket compares at or before it and
	// gets that owner: empty buckets need no test of their own.
	first uint64
	// tail is (position of the last point − position of the first) << 16
	// | owner of the first point after the bucket. The span is 0 for
	// buckets of fewer than two points.
	tail uint64
}

// ringBucketTable builds the bucket table for sorted points and their prefix
// table (index[b] the first point of bucket b, index[len-1] == len(points)).
// O(buckets), one sequential pass.
func ringBucketTable(points []uint64, index []uint32, shift uint) []ringBucket {
	table := make([]ringBucket, len(index)-1)
	if len(points) == 0 {
		return table
	}
	index = index[:len(table)+1]
	wrap := points[0] & ringOwnerMask // after the last bucket comes points[0]
	end := len(points) - 1
	lo := 0
	for b := range table {
		hi := int(index[b+1])
		next := wrap
		if hi <= end {
			next = points[hi] & ringOwnerMask
		}
		// Both cases are computed and one is selected: about half the
		// buckets are empty, at random, which a branch would mispredict.
		// An empty bucket gets its last position (the bucket bits, then
		// ones, owner bits cleared; at shift 64, a single bucket, Go's
		// shifts give 0 | all ones) and the next owner.
		first, last := points[min(lo, end)], points[max(hi-1, 0)]
		tail := (last&^ringOwnerMask - first&^ringOwnerMask) | next
		empty := (uint64(b)<<shift|(1<<shift-1))&^ringOwnerMask | next
		if lo == hi {
			first, tail = empty, next
		}
		table[b] = ringBucket{first: first, tail: tail}
		lo = hi
	}
	return table
}

// ownerOf returns the index in s.nodes of the owner of hash h: the owner of
// the first point at or after h's position, wrapping to the first point. The
// ring must not be empty. It reads one bucket entry, and the bucket's points
// only when h falls strictly between the first and last point of a bucket.
//
// It is written to stay within the compiler's inlining budget (cost 79 of
// 80, see go build -gcflags=-m=2) so that lookupString and lookupBytes
// carry no call besides the hash; the scan is a plain loop for the same
// reason (a call would cost 57). Buckets hold one or two points (more only
// past 2^20 points, where the table stops growing: a ring of 4 million
// points averages 4 per bucket), so a linear scan is as fast as a binary
// search.
func (s *ringSnapshot) ownerOf(h uint64) uint16 {
	e := &s.table[h>>s.shift]
	k := h &^ ringOwnerMask
	// Whether k is at or before the first point is a coin toss, so this is
	// a select: the branch predictor would miss half the time.
	o := e.tail
	if k <= e.first {
		o = e.first
	}
	// first < k ≤ last, as one unsigned comparison of k − first − 1 with
	// last − first: rare, so a branch. A point at or after k is then in
	// the bucket, after its first point.
	if k-e.first&^ringOwnerMask-(1<<16) < e.tail&^ringOwnerMask {
		i := s.index[h>>s.shift]
		for o = e.first; o < k; o = s.points[i] {
			i++
		}
	}
	return uint16(o)
}
