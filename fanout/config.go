package fanout

import (
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/observe"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultShards        = 64
	DefaultBuffer        = 128
	DefaultPolicy        = Disconnect
	DefaultSweepInterval = time.Second
	DefaultBrokerTimeout = 5 * time.Second
)

// Config configures a Bus. The zero value is a usable single-node bus.
type Config struct {
	// Shards is the number of independently locked parts of the topic map.
	// Default 64.
	Shards int
	// DefaultBuffer is the per-subscriber buffer (in publications) when
	// SubscribeOptions.Buffer is 0. Default 128.
	DefaultBuffer int
	// DefaultPolicy applies when SubscribeOptions.Policy is 0. Default
	// Disconnect (the client reconnects and recovers from history).
	DefaultPolicy Policy
	// History is every topic's history unless SetTopicOptions overrides it.
	// Default: no history (Size 0).
	History HistoryOptions
	// Broker connects this bus to other nodes. Default nil: in-memory,
	// single node; offsets, history and presence live in this process.
	Broker Broker
	// NodeID names this node in logs. Default: a random ID.
	NodeID string
	// Observer receives metrics and logs. Default nil: off, zero cost.
	Observer *observe.Observer
	// OnDisconnect, when set, is called once for every subscription the bus
	// closes on its own while running: reason ErrSlowSubscriber or
	// ErrInsufficientState, so the host can make the client reconnect and
	// recover. It is not called for what the host did itself: Unsubscribe,
	// Subscription.Close, or Shutdown/Close of the bus (those subscriptions
	// end with ErrUnsubscribed or ErrShutdown, visible through Done and
	// Err). It runs on the bus's delivery goroutine of the subscription's
	// topic, in order with that topic's deliveries, never on a goroutine
	// that is inside a Bus method and never under a bus lock, so it may
	// take the host's own locks and call any Bus method. It must not block
	// for long: the same goroutine delivers other topics.
	OnDisconnect func(sub *Subscription, reason error)
	// SweepInterval is how often expired presence members, expired history
	// and idle topics are swept (and, with a Broker, topics without local
	// subscribers unsubscribed from it). Default 1s.
	SweepInterval time.Duration
	// BrokerTimeout bounds each broker call the bus makes on its own, with
	// no caller's context to bound it: reading a topic's position when
	// this node first subscribes to it, filling gaps and re-synchronising
	// after a broker reconnect, presence sweeps, and unsubscribing idle
	// topics. Calls made for a Bus method are bounded by that method's ctx
	// (and the broker's own timeouts) only. Default 5s.
	BrokerTimeout time.Duration
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.Shards < 0:
		return c, fmt.Errorf("fanout: Config.Shards %d must be >= 0", c.Shards)
	case c.DefaultBuffer < 0:
		return c, fmt.Errorf("fanout: Config.DefaultBuffer %d must be >= 0", c.DefaultBuffer)
	case c.DefaultPolicy > Disconnect:
		return c, fmt.Errorf("fanout: Config.DefaultPolicy %d is unknown", c.DefaultPolicy)
	case c.History.Size < 0:
		return c, fmt.Errorf("fanout: Config.History.Size %d must be >= 0", c.History.Size)
	case c.History.TTL < 0:
		return c, fmt.Errorf("fanout: Config.History.TTL %v must be >= 0", c.History.TTL)
	case c.SweepInterval < 0:
		return c, fmt.Errorf("fanout: Config.SweepInterval %v must be >= 0", c.SweepInterval)
	case c.BrokerTimeout < 0:
		return c, fmt.Errorf("fanout: Config.BrokerTimeout %v must be >= 0", c.BrokerTimeout)
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.DefaultBuffer == 0 {
		c.DefaultBuffer = DefaultBuffer
	}
	if c.DefaultPolicy == 0 {
		c.DefaultPolicy = DefaultPolicy
	}
	c.History = c.History.withDefaults()
	if c.NodeID == "" {
		c.NodeID = randomID()
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.BrokerTimeout == 0 {
		c.BrokerTimeout = DefaultBrokerTimeout
	}
	return c, nil
}

// SubscribeOptions configures one subscription. The zero value uses the
// bus defaults and delivers through Subscription.C.
type SubscribeOptions struct {
	// Buffer is the bounded number of undelivered publications held for a
	// channel subscriber. Default Config.DefaultBuffer.
	Buffer int
	// Policy applies when the buffer is full. Default Config.DefaultPolicy.
	Policy Policy
	// OnPublication, when set, replaces the channel: the bus calls it for
	// every publication, in offset order, one call at a time, on the bus's
	// delivery goroutine of the topic — never on a goroutine that is inside
	// a Bus method (Publish returns before it runs) and never under a bus
	// lock, so it may take the host's own locks and call any Bus or
	// Subscription method. It must not block (hand the payload to a
	// bounded, non-blocking writer such as a connection's write queue): the
	// same goroutine delivers other topics. It must not keep or modify the
	// payload beyond its immutability contract. It is not called after the
	// subscription's Close or Unsubscribe has returned, except for a call
	// already in progress, nor after the bus's Shutdown has returned.
	OnPublication func(Publication)
	// OnPresence, when set, receives join/leave events of the topic, in
	// order with publications, on the same goroutine and under the same
	// rules as OnPublication.
	OnPresence func(PresenceEvent)
	// Value is an opaque host value (for example the connection) returned
	// by Subscription.Value.
	Value any
}
