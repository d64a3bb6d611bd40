package desk

import "sync"

// mailbox is an unbounded FIFO of closures run by one goroutine. Posting never
// blocks, so component callbacks (which must not block) can post into it.
type mailbox struct {
	mu     sync.Mutex
	items  []func()
	signal chan struct{}
}

func newMailbox() *mailbox { return &mailbox{signal: make(chan struct{}, 1)} }

func (m *mailbox) post(f func()) {
	m.mu.Lock()
	m.items = append(m.items, f)
	m.mu.Unlock()
	select {
	case m.signal <- struct{}{}:
	default:
	}
}

// take returns everything posted so far.
func (m *mailbox) take() []func() {
	m.mu.Lock()
	items := m.items
	m.items = nil
	m.mu.Unlock()
	return items
}
