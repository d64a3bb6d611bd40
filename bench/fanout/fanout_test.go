package fanoutbench

import (
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/fanout"
)

var payload = []byte(`{"type":"message","conversation":"c-42","text":"hello, how can I help?"}`)

func newBus(b testing.TB) *fanout.Bus {
	bus, err := fanout.New(fanout.Config{})
	if err != nil {
		b.Fatal(err)
	}
	return bus
}

// counter is a callback subscriber's state: only the topic's dispatcher
// touches n, so it needs no atomic.
type counter struct{ n int }

func (c *counter) on(fanout.Publication) { c.n++ }

// BenchmarkFanout10k: one publisher, one topic, 10,000 subscribers.
// One op is one publication (10,000 deliveries); deliveries/s is reported.
func BenchmarkFanout10k(b *testing.B) {
	const subs = 10_000
	b.Run("impl=switchboard/callback", func(b *testing.B) {
		bus := newBus(b)
		defer func() { b.StopTimer(); _ = bus.Close() }()
		cs := make([]counter, subs)
		for i := range cs {
			if _, err := bus.Subscribe(b.Context(), "room", fanout.SubscribeOptions{OnPublication: cs[i].on}); err != nil {
				b.Fatal(err)
			}
		}
		// Delivered last (subscribed last): signals the end of the fan-out.
		last := make(chan struct{})
		if _, err := bus.Subscribe(b.Context(), "room", fanout.SubscribeOptions{OnPublication: func(p fanout.Publication) {
			if p.Offset == uint64(b.N) {
				close(last)
			}
		}}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if _, err := bus.Publish(b.Context(), "room", payload); err != nil {
				b.Fatal(err)
			}
		}
		<-last // delivery runs on the bus's goroutine, after Publish returns
		el := time.Since(start)
		b.StopTimer()
		total := 0
		for i := range cs {
			total += cs[i].n
		}
		if total != b.N*subs {
			b.Fatalf("delivered %d, want %d", total, b.N*subs)
		}
		b.ReportMetric(float64(total)/el.Seconds(), "deliveries/s")
	})
	b.Run("impl=switchboard/chan", func(b *testing.B) {
		bus := newBus(b)
		var received atomic.Int64
		var wg sync.WaitGroup
		sl := make([]*fanout.Subscription, subs)
		for i := range sl {
			s, err := bus.Subscribe(b.Context(), "room", fanout.SubscribeOptions{Policy: fanout.DropOldest})
			if err != nil {
				b.Fatal(err)
			}
			sl[i] = s
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range s.C() {
					received.Add(1)
				}
			}()
		}
		// Delivered last (subscribed last): signals the end of the fan-out.
		last := make(chan struct{})
		if _, err := bus.Subscribe(b.Context(), "room", fanout.SubscribeOptions{OnPublication: func(p fanout.Publication) {
			if p.Offset == uint64(b.N) {
				close(last)
			}
		}}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if _, err := bus.Publish(b.Context(), "room", payload); err != nil {
				b.Fatal(err)
			}
		}
		// Deliveries (and drops) are final once the last subscriber has
		// the last publication; wait for the readers.
		<-last
		var dropped uint64
		for _, s := range sl {
			dropped += s.Dropped()
		}
		want := int64(b.N*subs) - int64(dropped)
		for received.Load() < want {
			runtime.Gosched()
		}
		el := time.Since(start)
		b.StopTimer()
		_ = bus.Close()
		wg.Wait()
		b.ReportMetric(float64(want)/el.Seconds(), "deliveries/s")
		b.ReportMetric(100*float64(dropped)/float64(b.N*subs), "%dropped")
	})
	b.Run("impl=naive/chan", func(b *testing.B) {
		nb := newNaiveBus()
		var received atomic.Int64
		var wg sync.WaitGroup
		ss := make([]*naiveSub, subs)
		for i := range ss {
			ss[i] = nb.subscribe("room", fanout.DefaultBuffer)
			wg.Add(1)
			go func(s *naiveSub) {
				defer wg.Done()
				for range s.ch {
					received.Add(1)
				}
			}(ss[i])
		}
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			nb.publish("room", payload)
		}
		want := int64(b.N * subs)
		for received.Load() < want {
			runtime.Gosched()
		}
		el := time.Since(start)
		b.StopTimer()
		for _, s := range ss {
			nb.unsubscribe("room", s)
		}
		wg.Wait()
		b.ReportMetric(float64(want)/el.Seconds(), "deliveries/s")
	})
}

// BenchmarkLastDelivered100k: 100,000 subscribers on one topic; one op is
// the time from Publish until the last subscriber has the publication.
func BenchmarkLastDelivered100k(b *testing.B) {
	const subs = 100_000
	b.Run("impl=switchboard/callback", func(b *testing.B) {
		bus := newBus(b)
		defer func() { b.StopTimer(); _ = bus.Close() }()
		cs := make([]counter, subs)
		for i := range cs {
			if _, err := bus.Subscribe(b.Context(), "room", fanout.SubscribeOptions{OnPublication: cs[i].on}); err != nil {
				b.Fatal(err)
			}
		}
		// Delivered last (subscribed last): tells when the fan-out is done.
		done := make(chan struct{}, 1)
		if _, err := bus.Subscribe(b.Context(), "room", fanout.SubscribeOptions{OnPublication: func(fanout.Publication) { done <- struct{}{} }}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := bus.Publish(b.Context(), "room", payload); err != nil {
				b.Fatal(err)
			}
			<-done // the bus's delivery goroutine reached the last subscriber
		}
	})
	b.Run("impl=switchboard/chan", func(b *testing.B) {
		bus := newBus(b)
		defer bus.Close()
		var wg sync.WaitGroup
		var got sync.WaitGroup
		for range subs {
			s, err := bus.Subscribe(b.Context(), "room", fanout.SubscribeOptions{Buffer: 4})
			if err != nil {
				b.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range s.C() {
					got.Done()
				}
			}()
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			got.Add(subs)
			if _, err := bus.Publish(b.Context(), "room", payload); err != nil {
				b.Fatal(err)
			}
			got.Wait()
		}
		b.StopTimer()
		_ = bus.Close()
		wg.Wait()
	})
	b.Run("impl=naive/chan", func(b *testing.B) {
		nb := newNaiveBus()
		var wg, got sync.WaitGroup
		ss := make([]*naiveSub, subs)
		for i := range ss {
			ss[i] = nb.subscribe("room", 4)
			wg.Add(1)
			go func(s *naiveSub) {
				defer wg.Done()
				for range s.ch {
					got.Done()
				}
			}(ss[i])
		}
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			got.Add(subs)
			nb.publish("room", payload)
			got.Wait()
		}
		b.StopTimer()
		for _, s := range ss {
			nb.unsubscribe("room", s)
		}
		wg.Wait()
	})
}

// TestDeliveryAllocs proves 0 allocations per delivery (and per publish)
// for callback subscribers.
func TestDeliveryAllocs(t *testing.T) {
	bus := newBus(t)
	defer bus.Close()
	cs := make([]counter, 1000)
	for i := range cs {
		if _, err := bus.Subscribe(t.Context(), "room", fanout.SubscribeOptions{OnPublication: cs[i].on}); err != nil {
			t.Fatal(err)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = bus.Publish(t.Context(), "room", payload) }); a != 0 {
		t.Fatalf("%v allocations per publish to 1000 subscribers", a)
	}
}

// TestNaiveBusDelivers checks the baseline is a fair, working contender.
func TestNaiveBusDelivers(t *testing.T) {
	nb := newNaiveBus()
	s := nb.subscribe("t", 4)
	for i := range 3 {
		nb.publish("t", []byte(strconv.Itoa(i)))
	}
	nb.unsubscribe("t", s)
	n := 0
	for range s.ch {
		n++
	}
	if n != 3 {
		t.Fatalf("got %d", n)
	}
}
