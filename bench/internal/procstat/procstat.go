// Package procstat samples what wsbench reports about a process: resident
// memory from /proc, CPU time from getrusage, and goroutines, heap in use
// and the GC pause P99 from runtime/metrics.
package procstat

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"runtime/metrics"
	"strconv"
	"syscall"
)

// Sample is one measurement of the calling process.
type Sample struct {
	RSSBytes        int64   `json:"rss_bytes"`
	Goroutines      int64   `json:"goroutines"`
	HeapInuseBytes  int64   `json:"heap_inuse_bytes"`
	GCPauseP99Sec   float64 `json:"gc_pause_p99_seconds"`
	GCCycles        int64   `json:"gc_cycles"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	UserCPUSeconds  float64 `json:"user_cpu_seconds"`
	SysCPUSeconds   float64 `json:"sys_cpu_seconds"`
	MaxRSSBytes     int64   `json:"max_rss_bytes"`
	ThreadsOSThread int64   `json:"threads"`
}

var metricNames = []string{
	"/sched/goroutines:goroutines",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/sched/pauses/total/gc:seconds",
	"/gc/cycles/total:gc-cycles",
	"/sched/gomaxprocs:threads",
}

// Self samples the calling process.
func Self() (Sample, error) {
	var s Sample
	rss, err := RSS("/proc/self/statm")
	if err != nil {
		return s, err
	}
	s.RSSBytes = rss

	samples := make([]metrics.Sample, len(metricNames))
	for i, n := range metricNames {
		samples[i].Name = n
	}
	metrics.Read(samples)
	for _, m := range samples {
		switch m.Name {
		case "/sched/goroutines:goroutines":
			s.Goroutines = uint64Value(m)
		case "/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes":
			s.HeapInuseBytes += uint64Value(m)
		case "/gc/cycles/total:gc-cycles":
			s.GCCycles = uint64Value(m)
		case "/sched/gomaxprocs:threads":
			s.ThreadsOSThread = uint64Value(m)
		case "/sched/pauses/total/gc:seconds":
			if m.Value.Kind() == metrics.KindFloat64Histogram {
				s.GCPauseP99Sec = HistQuantile(m.Value.Float64Histogram(), 0.99)
			}
		}
	}

	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return s, fmt.Errorf("procstat: getrusage: %w", err)
	}
	s.UserCPUSeconds = tv(ru.Utime)
	s.SysCPUSeconds = tv(ru.Stime)
	s.CPUSeconds = s.UserCPUSeconds + s.SysCPUSeconds
	s.MaxRSSBytes = ru.Maxrss * 1024
	return s, nil
}

func uint64Value(m metrics.Sample) int64 {
	if m.Value.Kind() == metrics.KindUint64 {
		return int64(m.Value.Uint64())
	}
	return 0
}

func tv(t syscall.Timeval) float64 {
	return float64(t.Sec) + float64(t.Usec)/1e6
}

// RSS reads the resident set size in bytes from a statm file
// ("/proc/self/statm" or "/proc/<pid>/statm").
func RSS(statmPath string) (int64, error) {
	b, err := os.ReadFile(statmPath)
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	return ParseStatm(b, int64(os.Getpagesize()))
}

// ParseStatm extracts the resident pages (second field) of a statm line and
// converts them to bytes.
func ParseStatm(b []byte, pageSize int64) (int64, error) {
	f := bytes.Fields(b)
	if len(f) < 2 {
		return 0, fmt.Errorf("procstat: statm %q: too few fields", b)
	}
	pages, err := strconv.ParseInt(string(f[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("procstat: statm: %w", err)
	}
	return pages * pageSize, nil
}

// HistQuantile returns quantile q of a runtime/metrics histogram, using the
// upper bound of the bucket that holds it (a conservative estimate); 0 for
// an empty histogram.
func HistQuantile(h *metrics.Float64Histogram, q float64) float64 {
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen >= rank {
			hi := h.Buckets[i+1]
			if math.IsInf(hi, 1) {
				return h.Buckets[i]
			}
			return hi
		}
	}
	return h.Buckets[len(h.Buckets)-1]
}

// LoadAvg returns the 1-minute load average from a /proc/loadavg-format
// file (the first field).
func LoadAvg(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, fmt.Errorf("procstat: %s is empty", path)
	}
	return strconv.ParseFloat(string(f[0]), 64)
}
