// Package hist is a log-bucketed latency histogram in the spirit of
// HdrHistogram: every power of two is split into 64 linear sub-buckets, so a
// recorded value is reproduced with a relative error below 1/64 (1.6 %) over
// the whole int64 range, in a fixed 29 KiB of counters.
//
// Record is lock-free (atomic adds) and allocation-free, so many goroutines
// — nbio poller goroutines in the load generator — record into one Histogram
// at once. Snapshots are plain values that merge, serialise to compact JSON
// (only non-empty buckets) and answer quantile queries.
package hist

import (
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"sync/atomic"
	"time"
)

const (
	subBits    = 6
	subCount   = 1 << subBits
	subMask    = subCount - 1
	numBuckets = (64 - subBits) * subCount
)

// index maps a non-negative value to its bucket.
func index(v uint64) int {
	if v < subCount {
		return int(v)
	}
	top := bits.Len64(v) - 1 // >= subBits
	shift := top - subBits
	return (shift+1)<<subBits | int((v>>uint(shift))&subMask)
}

// bounds returns the inclusive lower and exclusive upper value of bucket i.
func bounds(i int) (lo, hi uint64) {
	if i < subCount {
		return uint64(i), uint64(i) + 1
	}
	shift := uint(i>>subBits - 1)
	lo = (subCount | uint64(i&subMask)) << shift
	return lo, lo + 1<<shift
}

// Histogram records int64 values (typically nanoseconds). The zero value is
// ready to use. All methods are safe for concurrent use; Record and
// RecordDuration never allocate.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	count  atomic.Uint64
	sum    atomic.Uint64
	min    atomic.Int64 // stored as value+1 so that zero means "unset"
	max    atomic.Int64
}

// Record adds one observation. Negative values are recorded as zero (a
// clock step between processes must not corrupt the histogram).
func (h *Histogram) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[index(uint64(v))].Add(1)
	h.count.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.min.Load()
		if m != 0 && m-1 <= v {
			break
		}
		if h.min.CompareAndSwap(m, v+1) {
			break
		}
	}
	for {
		m := h.max.Load()
		if m >= v {
			break
		}
		if h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// RecordDuration records d in nanoseconds.
func (h *Histogram) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Count returns the number of observations so far.
func (h *Histogram) Count() uint64 { return h.count.Load() }

// Snapshot returns a consistent-enough copy for reporting: concurrent
// Records may or may not be included, but each bucket is read atomically.
func (h *Histogram) Snapshot() Snapshot {
	s := Snapshot{Counts: map[int]uint64{}}
	for i := range h.counts {
		if c := h.counts[i].Load(); c != 0 {
			s.Counts[i] = c
			s.Count += c
		}
	}
	s.Sum = h.sum.Load()
	if m := h.min.Load(); m != 0 {
		s.Min = m - 1
	}
	s.Max = h.max.Load()
	return s
}

// Reset clears all observations. It must not race with Record if the caller
// needs an exact cut-over; concurrent Records land on either side.
func (h *Histogram) Reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.count.Store(0)
	h.sum.Store(0)
	h.min.Store(0)
	h.max.Store(0)
}

// Snapshot is an immutable histogram value: mergeable, serialisable and
// queryable. The zero value is an empty histogram.
type Snapshot struct {
	Counts map[int]uint64
	Count  uint64
	Sum    uint64
	Min    int64
	Max    int64
}

// Merge adds o's observations to s.
func (s *Snapshot) Merge(o Snapshot) {
	if o.Count == 0 {
		return
	}
	if s.Counts == nil {
		s.Counts = map[int]uint64{}
	}
	for i, c := range o.Counts {
		s.Counts[i] += c
	}
	if s.Count == 0 || o.Min < s.Min {
		s.Min = o.Min
	}
	if o.Max > s.Max {
		s.Max = o.Max
	}
	s.Count += o.Count
	s.Sum += o.Sum
}

// Mean returns the exact arithmetic mean, or 0 when empty.
func (s Snapshot) Mean() float64 {
	if s.Count == 0 {
		return 0
	}
	return float64(s.Sum) / float64(s.Count)
}

// Quantile returns the value at quantile q in [0, 1]: the midpoint of the
// bucket holding the ceil(q*count)-th observation, clamped to the exact
// minimum and maximum. Quantile(1) is the exact maximum; an empty snapshot
// returns 0.
func (s Snapshot) Quantile(q float64) int64 {
	if s.Count == 0 {
		return 0
	}
	if q >= 1 {
		return s.Max
	}
	if q <= 0 {
		return s.Min
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	if rank == 0 {
		rank = 1
	}
	idx := make([]int, 0, len(s.Counts))
	for i := range s.Counts {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var seen uint64
	for _, i := range idx {
		seen += s.Counts[i]
		if seen >= rank {
			lo, hi := bounds(i)
			v := int64(lo + (hi-lo-1)/2)
			return min(max(v, s.Min), s.Max)
		}
	}
	return s.Max
}

// Bucket is one non-empty bucket of a snapshot: values in [Lo, Hi).
type Bucket struct {
	Lo, Hi int64
	Count  uint64
}

// Buckets returns the non-empty buckets in ascending order.
func (s Snapshot) Buckets() []Bucket {
	out := make([]Bucket, 0, len(s.Counts))
	for i, c := range s.Counts {
		lo, hi := bounds(i)
		out = append(out, Bucket{Lo: int64(lo), Hi: int64(hi), Count: c})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Lo < out[b].Lo })
	return out
}

type wireSnapshot struct {
	B   [][2]uint64 `json:"b"` // [bucket index, count]
	Sum uint64      `json:"sum"`
	Min int64       `json:"min"`
	Max int64       `json:"max"`
}

// MarshalJSON encodes only the non-empty buckets.
func (s Snapshot) MarshalJSON() ([]byte, error) {
	w := wireSnapshot{B: make([][2]uint64, 0, len(s.Counts)), Sum: s.Sum, Min: s.Min, Max: s.Max}
	for i, c := range s.Counts {
		w.B = append(w.B, [2]uint64{uint64(i), c})
	}
	sort.Slice(w.B, func(a, b int) bool { return w.B[a][0] < w.B[b][0] })
	return json.Marshal(w)
}

// UnmarshalJSON decodes what MarshalJSON produced, rejecting bucket indexes
// out of range.
func (s *Snapshot) UnmarshalJSON(data []byte) error {
	var w wireSnapshot
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	*s = Snapshot{Counts: make(map[int]uint64, len(w.B)), Sum: w.Sum, Min: w.Min, Max: w.Max}
	for _, b := range w.B {
		if b[0] >= numBuckets {
			return fmt.Errorf("hist: bucket index %d out of range", b[0])
		}
		s.Counts[int(b[0])] += b[1]
		s.Count += b[1]
	}
	return nil
}
