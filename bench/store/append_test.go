package storebench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/bench/internal/hist"
	"github.com/switchboard-go/switchboard/session"
)

// body is a typical chat message.
const body = "Hi, my order #48213 arrived damaged — the box was crushed. Can I get a replacement?"

// convsPerWriter: each writer is a chat client rotating over a few
// conversations of its own, so a batch touches many conversations.
const convsPerWriter = 4

func message(writer, i int) session.Message {
	return session.Message{
		Conversation: "conv-" + strconv.Itoa(writer*convsPerWriter+i%convsPerWriter),
		Sender:       "user-" + strconv.Itoa(writer),
		SenderName:   "Customer",
		SenderRole:   "customer",
		ClientID:     "m-" + strconv.Itoa(i),
		Body:         body,
	}
}

// writtenBytes returns the bytes this process has caused to be written to
// storage (/proc/self/io write_bytes; 0 where unavailable): with the
// embedded store, the data file's pages.
func writtenBytes() int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

func reportLatency(b *testing.B, h *hist.Histogram) {
	s := h.Snapshot()
	ms := func(q float64) float64 { return float64(s.Quantile(q)) / 1e6 }
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
	b.ReportMetric(ms(0.999), "p999-ms")
}

// BenchmarkAppendThroughput: b.N durable appends from W writers as fast as
// they go (closed loop).
func BenchmarkAppendThroughput(b *testing.B) {
	for _, be := range backends {
		for _, commit := range []struct {
			name     string
			maxBatch int
		}{{"group", 0}, {"single", 1}} {
			for _, writers := range []int{64, 256} {
				b.Run(fmt.Sprintf("backend=%s/commit=%s/writers=%d", be.name, commit.name, writers), func(b *testing.B) {
					repo := be.open(b, freshName("append"), commit.maxBatch)
					defer repo.Close()
					ctx := context.Background()
					var h hist.Histogram
					var next atomic.Int64
					var wg sync.WaitGroup
					var failed atomic.Value
					b.ResetTimer()
					written := writtenBytes()
					start := time.Now()
					for w := range writers {
						wg.Go(func() {
							for i := 0; next.Add(1) <= int64(b.N); i++ {
								t0 := time.Now()
								if _, err := repo.Append(ctx, message(w, i)); err != nil {
									failed.Store(err)
									return
								}
								h.RecordDuration(time.Since(t0))
							}
						})
					}
					wg.Wait()
					elapsed := time.Since(start)
					b.StopTimer()
					if err, ok := failed.Load().(error); ok {
						b.Fatal(err)
					}
					b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
					if be.name == "embedded" {
						b.ReportMetric(float64(writtenBytes()-written)/float64(b.N), "disk-B/append")
					}
					reportLatency(b, &h)
				})
			}
		}
	}
}

// BenchmarkAppendPaced: b.N appends scheduled at a fixed rate from a pool
// of writers; latency is measured from each append's scheduled time (open
// loop, no coordinated omission). Run with -benchtime 15000x (3 s).
func BenchmarkAppendPaced(b *testing.B) {
	const rate, writers = 5000, 64
	interval := time.Second / rate
	for _, be := range backends {
		b.Run(fmt.Sprintf("backend=%s/rate=%d", be.name, rate), func(b *testing.B) {
			repo := be.open(b, freshName("paced"), 0)
			defer repo.Close()
			ctx := context.Background()
			var h hist.Histogram
			var next atomic.Int64
			var wg sync.WaitGroup
			var failed atomic.Value
			b.ResetTimer()
			start := time.Now()
			for w := range writers {
				wg.Go(func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						due := start.Add(time.Duration(i) * interval)
						if d := time.Until(due); d > 0 {
							time.Sleep(d) // pacing the load, not waiting for a result
						}
						if _, err := repo.Append(ctx, message(w, int(i))); err != nil {
							failed.Store(err)
							return
						}
						h.RecordDuration(time.Since(due))
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if err, ok := failed.Load().(error); ok {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "appends/s")
			reportLatency(b, &h)
		})
	}
}
