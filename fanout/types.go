package fanout

import (
	"errors"
	"time"
)

// Publication is one message published on a topic. Offset increases by one
// per publication within an Epoch; a different Epoch means the topic's
// history was lost (node or Redis restart, history expiry) and offsets
// restarted. Payload is shared by every subscriber and by the history: it
// must be treated as immutable by everyone, including the publisher after
// Publish returns.
type Publication struct {
	// Topic the publication was published on.
	Topic string
	// Offset is the position of the publication in the topic's stream,
	// starting at 1 in each epoch.
	Offset uint64
	// Epoch identifies the stream generation Offset belongs to.
	Epoch string
	// Payload is the opaque, shared, immutable message body.
	Payload []byte
	// Time is when the publication was accepted (publisher's clock).
	Time time.Time
}

// Position is a point in a topic's stream: the last offset of an epoch.
type Position struct {
	// Offset is the last assigned offset (0: nothing published yet).
	Offset uint64
	// Epoch is the stream generation Offset belongs to.
	Epoch string
}

// Policy says what happens when a subscriber's bounded buffer is full.
type Policy uint8

const (
	// DropOldest discards the oldest buffered publication to make room for
	// the new one. The subscriber sees a gap in offsets and can Recover.
	DropOldest Policy = iota + 1
	// DropNewest discards the new publication for this subscriber only.
	DropNewest
	// Disconnect closes the subscription with ErrSlowSubscriber; the host
	// is told through Config.OnDisconnect (on the delivery goroutine) and
	// should make the client reconnect and recover.
	Disconnect
)

// String returns the policy name used in metrics labels.
func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop_oldest"
	case DropNewest:
		return "drop_newest"
	case Disconnect:
		return "disconnect"
	default:
		return "unknown"
	}
}

// HistoryOptions configures a topic's history ring.
type HistoryOptions struct {
	// Size is the number of publications kept for recovery. 0 keeps none:
	// Recover then only succeeds when nothing was missed.
	Size int
	// TTL is how long a publication stays recoverable. 0 means 10 minutes
	// when Size > 0. With a Broker the broker's own retention applies too.
	TTL time.Duration
}

// DefaultHistoryTTL is the history TTL used when HistoryOptions.TTL is 0.
const DefaultHistoryTTL = 10 * time.Minute

func (h HistoryOptions) withDefaults() HistoryOptions {
	if h.Size > 0 && h.TTL == 0 {
		h.TTL = DefaultHistoryTTL
	}
	return h
}

// Member is one participant present on a topic.
type Member struct {
	// ID identifies the member within the topic (for example a user or
	// connection ID). Joining again with the same ID refreshes it.
	ID string
	// Info is opaque data shown to other members (name, role...). Shared
	// and immutable like Publication.Payload.
	Info []byte
}

// PresenceKind says whether a member joined or left.
type PresenceKind uint8

const (
	// Join: a member appeared on the topic.
	Join PresenceKind = iota + 1
	// Leave: a member left explicitly or its TTL expired.
	Leave
)

// String returns "join" or "leave".
func (k PresenceKind) String() string {
	switch k {
	case Join:
		return "join"
	case Leave:
		return "leave"
	default:
		return "unknown"
	}
}

// PresenceEvent reports a join or leave on a topic.
type PresenceEvent struct {
	// Topic the member joined or left.
	Topic string
	// Kind says whether it joined or left.
	Kind PresenceKind
	// Member is the member as it joined (Info included on leave).
	Member Member
}

// Errors returned by the bus. Compare with errors.Is.
var (
	// ErrClosed: the bus is shutting down or shut down (returned by every
	// method, Ready included, once Shutdown or Close has begun).
	ErrClosed = errors.New("fanout: closed")
	// ErrRecoveryGap: the history no longer covers the requested range or
	// the epoch changed; the client must reload state instead of recovering.
	ErrRecoveryGap = errors.New("fanout: recovery gap")
	// ErrSlowSubscriber is the disconnect reason of a subscription whose
	// buffer overflowed under the Disconnect policy.
	ErrSlowSubscriber = errors.New("fanout: slow subscriber")
	// ErrInsufficientState is the disconnect reason when the bus itself
	// lost publications it could not recover from the broker (for example
	// Redis restarted and the epoch changed). Clients should reconnect,
	// Recover, and reload on ErrRecoveryGap.
	ErrInsufficientState = errors.New("fanout: insufficient state")
	// ErrUnsubscribed is the reason of a subscription closed by
	// Unsubscribe or Subscription.Close.
	ErrUnsubscribed = errors.New("fanout: unsubscribed")
	// ErrShutdown is the reason of subscriptions closed by Bus.Shutdown or
	// Bus.Close.
	ErrShutdown = errors.New("fanout: shutdown")
	// ErrBrokerUnavailable is wrapped by Bus.Ready, together with the
	// broker's own error, when the broker is not ready (for example its
	// connection to Redis is lost).
	ErrBrokerUnavailable = errors.New("fanout: broker unavailable")
	// ErrNotMember: Refresh or Leave named a member that is not present.
	ErrNotMember = errors.New("fanout: not a member")
	// ErrInvalidTopic: the topic is empty or longer than MaxTopicLen.
	ErrInvalidTopic = errors.New("fanout: invalid topic")
)

// MaxTopicLen is the longest accepted topic name in bytes.
const MaxTopicLen = 1024

func validTopic(t string) bool { return t != "" && len(t) <= MaxTopicLen }

func isGap(err error) bool { return errors.Is(err, ErrRecoveryGap) }
