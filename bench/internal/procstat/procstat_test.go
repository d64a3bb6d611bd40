package procstat

import (
	"math"
	"os"
	"path/filepath"
	"runtime/metrics"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStatm(t *testing.T) {
	v, err := ParseStatm([]byte("12345 678 90 1 0 2 0\n"), 4096)
	require.NoError(t, err)
	assert.EqualValues(t, 678*4096, v)
	_, err = ParseStatm([]byte("1"), 4096)
	assert.Error(t, err)
	_, err = ParseStatm([]byte("1 x"), 4096)
	assert.Error(t, err)
}

func TestSelf(t *testing.T) {
	s, err := Self()
	require.NoError(t, err)
	assert.Positive(t, s.RSSBytes)
	assert.Positive(t, s.Goroutines)
	assert.Positive(t, s.HeapInuseBytes)
	assert.GreaterOrEqual(t, s.CPUSeconds, s.UserCPUSeconds)
}

func TestHistQuantile(t *testing.T) {
	h := &metrics.Float64Histogram{
		Counts:  []uint64{10, 80, 9, 1},
		Buckets: []float64{0, 1, 2, 3, math.Inf(1)},
	}
	assert.Equal(t, 2.0, HistQuantile(h, 0.5))
	assert.Equal(t, 3.0, HistQuantile(h, 0.99))
	assert.Equal(t, 3.0, HistQuantile(h, 1), "the +Inf bucket reports its lower bound")
	assert.Zero(t, HistQuantile(&metrics.Float64Histogram{Counts: []uint64{0}, Buckets: []float64{0, 1}}, 0.99))
}

func TestLoadAvg(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "loadavg")
	require.NoError(t, os.WriteFile(p, []byte("3.52 2.10 1.05 4/812 12345\n"), 0o644))
	v, err := LoadAvg(p)
	require.NoError(t, err)
	assert.InDelta(t, 3.52, v, 1e-9)
	require.NoError(t, os.WriteFile(p, nil, 0o644))
	_, err = LoadAvg(p)
	assert.Error(t, err)
	_, err = LoadAvg(filepath.Join(dir, "missing"))
	assert.Error(t, err)
}
