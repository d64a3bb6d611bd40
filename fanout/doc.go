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
// Per topic, deliveries are serialised: whichever goroutine finds the
// topic idle becomes its dispatcher and delivers every queued publication,
// subscription change and presence event in order, outside any lock;
// concurrent publishers only enqueue. Every subscriber therefore sees
// offsets in increasing order, and callbacks may call back into the bus.
//
// A topic may keep a history ring (HistoryOptions: Size and TTL, per bus or
// per topic with SetTopicOptions). A client that reconnects calls
// Recover(topic, lastOffset, epoch) and gets exactly the publications it
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
// ErrNotMember; subscription close reasons: ErrUnsubscribed,
// ErrSlowSubscriber, ErrInsufficientState, ErrShutdown. Broker errors are
// returned as they are.
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
