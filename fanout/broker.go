package fanout

import (
	"context"
	"time"
)

// Broker connects buses on several nodes. With a Broker, offsets and epochs
// are assigned centrally so every node sees the same offset for a
// publication, history lives in the broker so any node can serve recovery
// (even after the publishing node died), and presence is shared.
//
// A Broker is used by exactly one Bus, which calls Start once before any
// other method and Shutdown (or Close) last. All methods must be safe for
// concurrent use. Every method that reaches the network takes the caller's
// ctx first and must return once ctx is done, with an error wrapping
// ctx.Err(). A Broker follows the package's lifecycle convention (see
// "Lifecycle" in the package doc): Shutdown, Close and Ready.
type Broker interface {
	// Start begins delivering, for subscribed topics only, publications and
	// presence events to h, from goroutines the broker owns. Deliveries for
	// one topic are made from one goroutine at a time, in offset order. h's
	// methods only queue work for the bus and return at once. Start makes
	// no network call.
	Start(h BrokerHandler) error
	// Publish assigns the next offset (and the current epoch) for topic,
	// appends the publication to the topic's history according to hist,
	// and sends it to every node subscribed to topic, this one included.
	// It returns the publication as every node will see it.
	Publish(ctx context.Context, topic string, payload []byte, hist HistoryOptions) (Publication, error)
	// Subscribe starts delivering topic's publications and presence events
	// to this node. Calls are reference-counted per topic by the bus: the
	// bus calls Subscribe once when the topic gains its first local
	// subscriber and Unsubscribe when it loses its last.
	Subscribe(ctx context.Context, topic string) error
	// Unsubscribe stops delivering topic to this node.
	Unsubscribe(ctx context.Context, topic string) error
	// History returns up to limit publications of topic with an offset
	// greater than since, oldest first (limit <= 0: all), and the topic's
	// current position (the last assigned offset and the epoch). When since
	// is older than what the history holds, the first returned offset is
	// greater than since+1; the caller detects the gap.
	History(ctx context.Context, topic string, since uint64, limit int) ([]Publication, Position, error)
	// Join adds or refreshes member on topic for ttl; when the member is
	// new, a Join event is sent to every subscribed node.
	Join(ctx context.Context, topic string, m Member, ttl time.Duration) error
	// Refresh extends a present member's TTL; ErrNotMember if absent.
	Refresh(ctx context.Context, topic, memberID string, ttl time.Duration) error
	// Leave removes a member and sends a Leave event; ErrNotMember if absent.
	Leave(ctx context.Context, topic, memberID string) error
	// Members lists the members of topic. Members whose TTL expired are
	// removed first, and a Leave event is sent for each of them once.
	Members(ctx context.Context, topic string) ([]Member, error)
	// Ready returns nil while the broker can serve, else an error saying
	// why (closed, connection to its backend lost). It must not block or
	// make a network call; the bus's Ready wraps it.
	Ready() error
	// Shutdown stops deliveries and releases connections, waiting within
	// ctx for work in progress; when it returns, no goroutine of the broker
	// runs and no BrokerHandler method is called. When ctx ends first it
	// returns an error wrapping ctx.Err() after stopping anyway. It is
	// idempotent.
	Shutdown(ctx context.Context) error
	// Close is Shutdown with an already-canceled context: it stops at once
	// and returns only errors from releasing resources. It is idempotent.
	Close() error
}

// BrokerHandler receives what a Broker delivers. It is implemented by the
// Bus; a Broker implementation calls it from its own goroutines. Every
// method only queues work for the bus's delivery goroutines and returns
// without blocking on subscribers or the network.
type BrokerHandler interface {
	// HandlePublication delivers a publication to local subscribers.
	HandlePublication(p Publication)
	// HandlePresence delivers a join or leave to local subscribers.
	HandlePresence(ev PresenceEvent)
	// HandleReconnect tells the bus that the broker lost its connection and
	// is delivering again: publications of the topics for which affected
	// returns true (nil: all topics) may have been missed, or the history
	// and epoch may be gone, so the bus re-synchronises those topics from
	// History and disconnects their subscribers with ErrInsufficientState
	// where it cannot. The history is read by the bus's delivery
	// goroutines: HandleReconnect itself does not block.
	HandleReconnect(affected func(topic string) bool)
}
