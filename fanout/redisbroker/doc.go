// Package redisbroker is a fanout.Broker on Redis (github.com/redis/go-redis/v9),
// so several fanout.Bus nodes share topics, history and presence.
//
// # Model
//
// Publications go over Redis pub/sub, sharded over Config.Shards channels
// "<prefix>:shard:<n>" (topic -> shard by xxhash); a node subscribes a
// shard's channel, on its own connection and goroutine, while it has a
// subscribed topic in that shard. One Lua script per publication assigns the
// next offset (HINCRBY on "<prefix>:m:{topic}"), creates the epoch when the
// meta hash is missing (first publication, expiry, or a Redis restart that
// lost the data), appends to the history stream "<prefix>:h:{topic}" with
// XADD MAXLEN ~ using the offset as entry ID, and PUBLISHes — atomically, so
// every node sees the same offset and pub/sub order is offset order. Since
// the history is in Redis, any node can serve recovery after the publishing
// node died.
//
// Presence is a sorted set of member expiry times (Redis clock) plus a hash
// of member info; join and leave events are published on the shard
// channel; Members removes expired members and publishes one leave each.
//
// # Redis restarts
//
// When a shard's pub/sub connection drops, the receiver retries with
// backoff; go-redis reconnects and resubscribes, and the broker then calls
// the bus's HandleReconnect for that shard's topics. The bus compares each
// topic's position with what its subscribers have seen: missed
// publications are delivered from the stream; if the epoch changed (Redis
// lost its data) the subscribers are closed with
// fanout.ErrInsufficientState so clients recover, see
// fanout.ErrRecoveryGap, and reload. Publish returns the Redis error while
// Redis is unreachable; nothing is dropped silently.
//
// # Contexts
//
// Every method that reaches Redis (the fanout.Broker methods and the lease
// methods) takes the caller's ctx first and returns as soon as ctx is done,
// with an error wrapping ctx.Err(), even while Redis does not answer.
// go-redis bounds a round trip by a deadline only (with
// Options.ContextTimeoutEnabled), never by cancellation, so for a
// cancellable ctx the broker runs the round trip on a goroutine of its own
// and stops waiting for it: the command may still take effect, and the
// goroutine ends when Redis answers or the client's own timeouts expire.
// The broker's own work (receivers, health check) runs under its lifetime,
// which Shutdown ends.
//
// # Lifecycle
//
// Start (called by the bus) starts the health check; shard receivers start
// with the first subscribed topic of their shard. Shutdown(ctx) refuses new
// calls, waits within ctx for the round trips in progress and stops every
// goroutine of the broker before it returns; Close is Shutdown with an
// already-canceled context. Ready returns nil while Redis answers the
// health check (a PING every Config.HealthCheck) and every shard in use
// has its pub/sub connection; otherwise an error wrapping ErrDisconnected,
// or ErrClosed once shut down. fanout.Bus.Ready wraps it.
//
// # Metrics
//
// With Config.Observer (subsystem "fanout_redis"): publish_seconds and
// pubsub_lag_seconds histograms, errors_total{op}, pubsub_disconnects_total.
package redisbroker
