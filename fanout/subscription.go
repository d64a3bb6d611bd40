package fanout

import (
	"sync/atomic"
)

// Subscription is one subscriber of one topic. It delivers publications in
// offset order either on the channel returned by C or through
// SubscribeOptions.OnPublication. Its methods are safe for concurrent use.
type Subscription struct {
	bus   *Bus
	t     *topic
	topic string

	ch         chan Publication
	onPub      func(Publication)
	onPresence func(PresenceEvent)
	policy     Policy
	value      any

	// idx is the position in t.subs and finished says the subscription was
	// finished; both owned by the topic's delivery goroutine (finished is
	// set before the subscription is handed to it when Subscribe fails).
	idx      int
	finished bool

	closing atomic.Bool
	reason  atomic.Pointer[error]
	done    chan struct{}
	dropped atomic.Uint64
}

// C returns the channel publications are delivered on, or nil for a
// callback subscription. It is closed after the subscription closes; Err
// then tells why. Receiving never blocks the publisher: when the buffer is
// full the subscription's Policy applies.
func (s *Subscription) C() <-chan Publication { return s.ch }

// Topic returns the subscribed topic.
func (s *Subscription) Topic() string { return s.topic }

// Value returns SubscribeOptions.Value.
func (s *Subscription) Value() any { return s.value }

// Done is closed once the subscription is closed and no further delivery
// will be made (after C is closed, for a channel subscription).
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns nil while the subscription is open, then the reason it was
// closed: ErrUnsubscribed, ErrSlowSubscriber, ErrInsufficientState or
// ErrShutdown.
func (s *Subscription) Err() error {
	if p := s.reason.Load(); p != nil {
		return *p
	}
	return nil
}

// Dropped returns how many publications were discarded for this
// subscriber by the DropOldest or DropNewest policy.
func (s *Subscription) Dropped() uint64 { return s.dropped.Load() }

// Close unsubscribes; same as Bus.Unsubscribe(s). It makes no network call
// and does not block on deliveries: C is closed and Done fires once the
// topic's delivery goroutine reaches the removal, and nothing is delivered
// after Close returns except a callback already running. Closing twice is
// a no-op.
func (s *Subscription) Close() error { return s.bus.Unsubscribe(s) }

// deliver hands p to the subscriber without blocking. It returns false when
// the subscription must be disconnected (Disconnect policy overflow).
// Called only by the topic's delivery goroutine.
func (s *Subscription) deliver(p *Publication, m *metrics) bool {
	if s.onPub != nil {
		s.onPub(*p)
		return true
	}
	select {
	case s.ch <- *p:
		return true
	default:
	}
	switch s.policy {
	case DropNewest:
		s.dropped.Add(1)
		m.drop(DropNewest)
		return true
	case DropOldest:
		for range 4 { // the reader may race us for the freed slot
			select {
			case <-s.ch:
				s.dropped.Add(1)
				m.drop(DropOldest)
			default:
			}
			select {
			case s.ch <- *p:
				return true
			default:
			}
		}
		s.dropped.Add(1)
		m.drop(DropOldest)
		return true
	default:
		m.drop(Disconnect)
		return false
	}
}

// finish closes the delivery side; called once, by the delivery goroutine
// that removed s from its topic or by Subscribe when it fails.
func (s *Subscription) finish(reason error) {
	s.reason.CompareAndSwap(nil, &reason)
	if s.ch != nil {
		close(s.ch)
	}
	close(s.done)
}
