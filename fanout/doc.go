// Package fanout is Switchboard's topic bus: publish once, deliver to every
// subscriber of a topic (the customer, the agent, any supervisor watching)
// without one slow reader holding up the rest, without losing messages
// across a reconnect, and across nodes through a Broker.
//
// # Model
//
// Topics live in a sharded map (Config.Shards, each with its own lock).
// Every publication gets an Offset, increasing by one within an Epoch; the
// epoch changes whenever the history is lost (topic recreated, node
// restart, Redis restart). Payloads are immutable byte slices shared by all
// subscribers and the history: encode once, deliver many.
//
// Publish never waits for a subscriber. Each subscriber has a bounded
// buffer (default 128 publications) and an overflow Policy: DropOldest,
// DropNewest, or Disconnect (the subscription is closed with
// ErrSlowSubscriber and the host is told through Config.OnDisconnect so the
// client can reconnect and recover). A subscriber receives either from its
// channel (Subscription.C) or through a non-blocking callback
// (SubscribeOptions.OnPublication) that typically writes into a
// connection's own bounded write queue.
//
// Per topic, deliveries are serialised: Publish (and Subscribe,
// Unsubscribe, presence changes, the broker) only enqueue; one of the
// bus's delivery goroutines (one per GOMAXPROCS, each topic always served
// by the same one) applies the topic's queue in order, outside any lock.
// Every subscriber therefore sees offsets in increasing order.
//
// # Callbacks
//
// SubscribeOptions.OnPublication, SubscribeOptions.OnPresence and
// Config.OnDisconnect all run on the delivery goroutine of their topic,
// one at a time per topic, in order. None is ever called on a goroutine
// that is inside a Bus or Subscription method (Publish returns before the
// publication's callbacks run), and none under a bus lock: a host may hold
// its own mutex around a Bus call and take the same mutex in a callback,
// and a callback may call any Bus method but Shutdown and Close (which
// wait for the delivery goroutines to finish). Callbacks must not block for
// long: the same goroutine serves other topics. After a subscription's
// Close returns it gets no further call (one already running finishes);
// after Bus.Shutdown or Close returns no callback runs at all.
//
// # Contexts
//
// Every method that may reach the network through the Broker (Subscribe,
// Publish, Recover, Position, Join, Refresh, Leave, Members) takes the
// caller's ctx first, as go-redis does, and passes it to the broker: a ctx
// that ends first makes the call return an error wrapping ctx.Err().
// Without a Broker they make no network call, and a ctx already done
// still returns ctx.Err(). The broker calls the bus makes on its own
// (reading a topic's position, filling gaps after a reconnect, sweeps) are
// bounded by Config.BrokerTimeout and cancelled by Shutdown.
//
// # Lifecycle
//
// Like every long-lived component of Switchboard, a Bus (and a Broker such
// as fanout/redisbroker's) has three methods:
//
//   - Shutdown(ctx) stops gracefully within ctx: intake stops, what was
//     accepted is delivered, subscriptions close with ErrShutdown, the
//     broker shuts down. It is idempotent; when it returns no goroutine of
//     the component runs and no callback fires. When ctx ends first it
//     stops waiting and returns an error wrapping ctx.Err().
//   - Close() stops immediately: Shutdown with an already-canceled
//     context. It is idempotent and returns only errors from releasing
//     resources.
//   - Ready() returns nil while the component serves, else an error: for
//     the bus ErrClosed once shutting down, or ErrBrokerUnavailable
//     wrapping the broker's reason (a lost Redis connection). It does not
//     block, so a /readyz probe can call it.
//
// A topic may keep a history ring (HistoryOptions: Size and TTL, per bus or
// per topic with SetTopicOptions). A client that reconnects calls
// Recover(ctx, topic, lastOffset, epoch) and gets exactly the publications it
// missed, or ErrRecoveryGap when the history no longer covers them (or the
// epoch differs) and it must reload its state. Subscribe before Recover and
// skip live publications with an offset already recovered.
//
// Presence: Join/Refresh/Leave/Members keep the members of a topic with a
// TTL refreshed by their owner, so members of a crashed node disappear. Join
// and Leave events reach subscribers through SubscribeOptions.OnPresence,
// in order with publications.
//
// # Many nodes
//
// With Config.Broker (for example fanout/redisbroker) the broker assigns
// offsets and epochs centrally, keeps the history (so recovery works after
// the publishing node died) and the presence, and delivers every
// publication to every node subscribed to its topic, the publishing node
// included. The bus checks that each topic's stream continues where it left
// off: a hole (lost pub/sub message, broker reconnect) is filled from the
// broker history; if it cannot be (history trimmed, epoch changed because
// Redis restarted) the topic's subscribers are closed with
// ErrInsufficientState, so nothing is lost silently.
//
// # Errors
//
// ErrClosed, ErrInvalidTopic, ErrRecoveryGap (with *GapError details),
// ErrNotMember, ErrBrokerUnavailable (from Ready); subscription close
// reasons: ErrUnsubscribed, ErrSlowSubscriber, ErrInsufficientState,
// ErrShutdown. Broker errors are returned as they are (wrapping ctx.Err()
// when the caller's ctx ended first).
//
// # Metrics
//
// With Config.Observer (subsystem "fanout", names prefixed
// switchboard_fanout_): topics, subscribers (gauges); publications_total,
// publish_errors_total, deliveries_total, drops_total{policy},
// recoveries_total{result="ok|gap|error"}, resyncs_total,
// lost_state_total, presence_events_total{kind}; histogram
// publish_to_deliver_seconds (per publication, from its timestamp to the
// end of the local fan-out, so with a broker it includes the network hop).
// A nil Observer costs one nil check per publication.
package fanout
