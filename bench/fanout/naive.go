package fanoutbench

import "sync"

// naiveBus is the design the whitepaper starts from: one RWMutex-protected
// map of topic -> subscriber channels, and a publisher that blocks on each
// subscriber's channel in turn.
type naiveBus struct {
	mu     sync.RWMutex
	topics map[string]map[*naiveSub]struct{}
}

type naiveSub struct{ ch chan []byte }

func newNaiveBus() *naiveBus { return &naiveBus{topics: map[string]map[*naiveSub]struct{}{}} }

func (b *naiveBus) subscribe(topic string, buf int) *naiveSub {
	s := &naiveSub{ch: make(chan []byte, buf)}
	b.mu.Lock()
	defer b.mu.Unlock()
	m := b.topics[topic]
	if m == nil {
		m = map[*naiveSub]struct{}{}
		b.topics[topic] = m
	}
	m[s] = struct{}{}
	return s
}

func (b *naiveBus) unsubscribe(topic string, s *naiveSub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.topics[topic], s)
	close(s.ch)
}

func (b *naiveBus) publish(topic string, payload []byte) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for s := range b.topics[topic] {
		s.ch <- payload
	}
}
