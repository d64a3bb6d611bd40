package hist

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIndexBoundsRoundTrip(t *testing.T) {
	values := []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 123456789, 1<<62 + 12345, math.MaxInt64}
	for _, v := range values {
		i := index(v)
		require.Less(t, i, numBuckets, "value %d", v)
		lo, hi := bounds(i)
		assert.LessOrEqual(t, lo, v, "value %d", v)
		assert.Less(t, v, hi, "value %d", v)
		if v >= subCount {
			assert.LessOrEqual(t, float64(hi-lo)/float64(lo), 1.0/subCount, "relative width for %d", v)
		}
	}
	// Buckets are contiguous and increasing.
	prevHi := uint64(0)
	for i := 0; i < index(math.MaxInt64); i++ {
		lo, hi := bounds(i)
		require.Equal(t, prevHi, lo, "bucket %d", i)
		prevHi = hi
	}
}

func TestQuantilesAgainstExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h Histogram
	vals := make([]int64, 100000)
	for i := range vals {
		// Log-normal-ish latencies between ~10µs and ~1s.
		vals[i] = int64(math.Exp(r.NormFloat64()*1.5 + 13))
		h.Record(vals[i])
	}
	sort.Slice(vals, func(a, b int) bool { return vals[a] < vals[b] })
	s := h.Snapshot()
	require.EqualValues(t, len(vals), s.Count)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 0.9999} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := s.Quantile(q)
		assert.InEpsilon(t, exact, got, 1.0/subCount, "q=%v", q)
	}
	assert.Equal(t, vals[0], s.Quantile(0))
	assert.Equal(t, vals[len(vals)-1], s.Quantile(1))
	assert.Equal(t, vals[0], s.Min)
	assert.Equal(t, vals[len(vals)-1], s.Max)
}

func TestSmallAndEdgeCases(t *testing.T) {
	var empty Snapshot
	assert.Zero(t, empty.Quantile(0.99))
	assert.Zero(t, empty.Mean())

	var h Histogram
	h.Record(-5) // clock step: recorded as 0
	h.Record(10)
	h.Record(20)
	s := h.Snapshot()
	assert.EqualValues(t, 0, s.Min)
	assert.EqualValues(t, 20, s.Max)
	assert.EqualValues(t, 10, s.Quantile(0.5))
	assert.InDelta(t, 10, s.Mean(), 0.001)

	h.Reset()
	assert.Zero(t, h.Count())
	assert.Zero(t, h.Snapshot().Count)
}

func TestMergeAndJSON(t *testing.T) {
	var a, b Histogram
	for i := int64(1); i <= 1000; i++ {
		a.Record(i * 1000)
		b.Record(i * 1000000)
	}
	s := a.Snapshot()
	s.Merge(b.Snapshot())
	require.EqualValues(t, 2000, s.Count)
	assert.EqualValues(t, 1000, s.Min)
	assert.EqualValues(t, 1000000000, s.Max)

	raw, err := json.Marshal(s)
	require.NoError(t, err)
	var back Snapshot
	require.NoError(t, json.Unmarshal(raw, &back))
	assert.Equal(t, s, back)
	for _, q := range []float64{0.25, 0.5, 0.75, 0.99} {
		assert.Equal(t, s.Quantile(q), back.Quantile(q))
	}

	var zero Snapshot
	zero.Merge(s)
	assert.Equal(t, s.Count, zero.Count)
	assert.Equal(t, s.Min, zero.Min)

	assert.Error(t, json.Unmarshal([]byte(`{"b":[[999999,1]]}`), &back))
	assert.Error(t, json.Unmarshal([]byte(`{"b":`), &back))
}

func TestBucketsOrdered(t *testing.T) {
	var h Histogram
	for _, v := range []int64{5, 5000, 50, 500000} {
		h.Record(v)
	}
	bs := h.Snapshot().Buckets()
	require.Len(t, bs, 4)
	for i := 1; i < len(bs); i++ {
		assert.Less(t, bs[i-1].Lo, bs[i].Lo)
	}
}

func TestConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10000 {
				h.Record(int64(g*10000 + i))
			}
		}()
	}
	wg.Wait()
	s := h.Snapshot()
	assert.EqualValues(t, 80000, s.Count)
	assert.EqualValues(t, 0, s.Min)
	assert.EqualValues(t, 79999, s.Max)
}

func TestRecordDoesNotAllocate(t *testing.T) {
	var h Histogram
	allocs := testing.AllocsPerRun(1000, func() { h.Record(123456) })
	assert.Zero(t, allocs)
}

func BenchmarkRecord(b *testing.B) {
	var h Histogram
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		v := int64(1000)
		for pb.Next() {
			h.Record(v)
			v = v*7 + 13&0xffffff
		}
	})
}
