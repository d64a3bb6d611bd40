package storebench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/session"
)

const (
	assignedRecords = 10_000
	queuedRecords   = 50_000
)

// record returns the i-th record of the rebuild data set: the first
// assignedRecords are held by agents, the rest wait in the queue.
func record(i int, now time.Time) *session.Record {
	id := fmt.Sprintf("conv-%06d", i)
	created := now.Add(-time.Duration(i) * time.Second)
	c := session.NewConversation(id, created)
	r := &session.Record{
		ID: id, Partition: fmt.Sprintf("team-%d", i%8), Customer: fmt.Sprintf("cust-%d", i),
		CustomerName: "Customer Name", Tier: i % 3, Entry: "billing", Skills: []string{"billing", "en"},
		Epoch: "e1", FirstResponseDue: created.Add(2 * time.Minute),
	}
	if i < assignedRecords {
		c.State, c.Version, c.Assignee = session.Active, 3, fmt.Sprintf("agent-%d", i%500)
		c.FirstAgentResponse = created.Add(time.Minute)
		r.AssignedAt = created.Add(30 * time.Second)
		r.Watchers = []string{"supervisor-1"}
	} else {
		r.Queue = &session.QueueEntry{Rank: int64(i), Enqueued: created, Deadline: created.Add(10 * time.Minute)}
	}
	r.Conversation = *c
	return r
}

var populated sync.Map // backend name → store name holding the data set

// populate creates the data set once per backend and process.
func populate(b *testing.B, be backend) string {
	if name, ok := populated.Load(be.name); ok {
		return name.(string)
	}
	name := freshName("rebuild")
	repo := be.open(b, name, 0)
	defer repo.Close()
	ctx := context.Background()
	now := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= assignedRecords+queuedRecords {
					return
				}
				if err := repo.Create(ctx, session.Fence{}, record(i, now),
					session.AuditEntry{At: now, Actor: "system", Event: session.CustomerReply, To: session.Queued, Version: 1}); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	b.Logf("%s: created %d records in %v", be.name, assignedRecords+queuedRecords, time.Since(start).Round(time.Millisecond))
	populated.Store(be.name, name)
	return name
}

// BenchmarkRebuild: open the store and read every open conversation, as an
// owner does after a restart or a takeover.
func BenchmarkRebuild(b *testing.B) {
	for _, be := range backends {
		b.Run("backend="+be.name, func(b *testing.B) {
			name := populate(b, be)
			ctx := context.Background()
			var opening, reading time.Duration
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				repo := be.open(b, name, 0)
				t1 := time.Now()
				recs, err := repo.OpenConversations(ctx, "")
				opening, reading = opening+t1.Sub(t0), reading+time.Since(t1)
				if err != nil {
					b.Fatal(err)
				}
				if len(recs) != assignedRecords+queuedRecords {
					b.Fatalf("got %d open records", len(recs))
				}
				if err := repo.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/rebuild")
			b.ReportMetric(float64(opening.Milliseconds())/float64(b.N), "open-ms")
			b.ReportMetric(float64(reading.Milliseconds())/float64(b.N), "read-ms")
		})
	}
}
