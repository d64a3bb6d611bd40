// Package gateway is Switchboard's WebSocket edge: it holds every customer,
// agent and supervisor connection of a support backend on a few epoll event
// loops (github.com/lesismal/nbio), with no goroutine per connection.
//
// # Model
//
// A Gateway owns one nbio engine, a bounded handler executor, one sweeper
// goroutine and one accept goroutine per own listener. It can run its own listeners (Config.Addrs), serving the
// WebSocket endpoint at Config.Path and the host's other routes
// (Config.Handler) on the same port, or it can be mounted as an http.Handler
// inside an existing net/http server (Gateway.ServeHTTP), in which case the
// upgraded connection is handed over to nbio's pollers.
//
// The handshake runs, in order: WebSocket request validation (400/405),
// the allowed-origins check (403), the connection cap (503), then
// Config.Authenticate (401, or 403 when the error wraps ErrForbidden). Only
// then is the connection upgraded. A client that opens TCP and never finishes
// its request is closed after Config.HandshakeTimeout (own listeners; when
// mounted, the host's http.Server timeouts apply to the handshake).
//
// Every connection is a *Conn with an ID, the Identity returned by
// Authenticate and a context.Context cancelled when it closes. Connections
// are indexed by ID and by user ID (one user may have several tabs or
// devices). OnOpen, OnMessage and OnClose run on a bounded executor
// (Config.HandlerWorkers goroutines), never on an event loop, and in order
// per connection: OnOpen first, then every OnMessage in arrival order, then
// OnClose exactly once. A panic in a handler is recovered, counted and closes
// only that connection with 1011.
//
// Config.InlineHandlers moves OnMessage (and ping, pong and close frames)
// onto the event loop that read the frame, for handlers that never block:
// it saves two thread wake-ups per message, which on a small machine is a
// third of the server's CPU and half its tail latency (bench/RESULTS.md).
// The per-connection order above still holds. A blocking inline handler
// stalls every connection of its event loop, so the default stays off.
//
// Every event loop passes through the Go scheduler at least every 2ms while
// it is busy (runtime.Gosched after a read). An nbio event loop otherwise
// never yields its P: Go's sysmon then preempts it every 10ms and takes
// its P back from epoll_wait, and each time it goes back to waking every
// 20µs — a quarter of all CPU time across the processes of the
// 100k-connection benchmark before this yield.
//
// Writes (Conn.Send, Conn.SendPrepared, Gateway.Broadcast, Gateway.SendToUser)
// never block: a frame goes to the kernel, and what the kernel does not take
// is queued by nbio. Each connection may have at most
// Config.MaxOutgoingBytes queued; a write that would exceed it disconnects
// the connection with CloseSlowConsumer instead of growing memory or slowing
// other connections. A PreparedMessage holds the frame bytes encoded once;
// server frames are unmasked, so the same bytes are written to every
// connection and broadcasting allocates nothing per connection (plain TCP;
// over TLS each connection encrypts its own copy, and MaxOutgoingBytes and
// Conn.Buffered count frame bytes, not TLS record overhead).
//
// With Config.TLSConfig the own listeners serve wss (and https for
// Config.Handler); nbio terminates TLS on its event loops, and
// Config.HandshakeTimeout also bounds the TLS handshake.
//
// The sweeper goroutine ticks every Config.SweepInterval: it sends a ping
// to connections idle for Config.PingInterval, closes connections that sent
// no frame at all (pongs included) for Config.IdleTimeout — which also reaps
// half-open peers — and closes connections whose queued bytes made no
// progress for Config.WriteTimeout.
//
// Shutdown flips the readiness check registered on Config.Observer (so
// /readyz answers 503), stops accepting, closes connections with 1001 in
// paced batches (Config.DrainBatch every Config.DrainInterval) so clients do
// not reconnect in a stampede, waits for handlers, then stops the engine,
// executor and sweeper. No goroutine outlives it.
//
// # Close codes
//
// The gateway sends (and reports to OnClose) these close codes:
//
//	1000 CloseNormal          normal closure (peer-initiated, or Conn.Close by the host)
//	1001 CloseGoingAway       Gateway.Shutdown is draining the gateway
//	1002 CloseProtocolError   malformed frame (reported; nbio drops TCP, or answers 1002 to a bad close code)
//	1005 CloseNoStatus        reported only: the peer's close frame carried no code
//	1006 CloseAbnormal        reported only: TCP ended without a close frame
//	1007 CloseInvalidPayload  a text message (or close reason) is not valid UTF-8
//	1008 ClosePolicyViolation the per-connection message rate limit was exceeded
//	1009 CloseMessageTooBig   a message exceeded Config.MaxMessageSize
//	1011 CloseInternalError   a handler (OnOpen or OnMessage) panicked
//	4000 CloseIdleTimeout     no frame (pong included) for Config.IdleTimeout
//	4001 CloseWriteTimeout    queued outgoing bytes made no progress for Config.WriteTimeout
//	4008 CloseSlowConsumer    outgoing queue would exceed Config.MaxOutgoingBytes
//
// Conn.Close also accepts 1000, 1001, 1008, 1011 and any 3000-4999 code of
// the host's choosing. The close frame is best effort: a peer whose receive path is stuck (4001,
// 4008, half-open 4000) usually sees the TCP connection end instead.
//
// # Errors
//
//	ErrClosed          the connection (or gateway) is closed
//	ErrSlowConsumer    the write would exceed Config.MaxOutgoingBytes; the connection is being closed with 4008
//	ErrForbidden       returned (wrapped) by Authenticate to answer 403 instead of 401
//	ErrNotStarted      ServeHTTP was called before Start
//	ErrInvalidConfig   wrapped by New, naming the bad field
//	ErrMessageType     a MessageType other than TextMessage or BinaryMessage
//	ErrInvalidUTF8     NewPreparedMessage was given invalid UTF-8 for a text message
//	ErrCloseCode       Conn.Close was given a code a server may not send
//	ErrDraining        the readiness error once Shutdown started
//
// # Known limitations (nbio v1.6.8)
//
// Empty data messages (zero-length payload) are discarded by nbio's frame
// parser and never reach OnMessage. Permessage-deflate is not negotiated.
// A gateway mounted inside a net/http server that itself terminates TLS
// cannot move connections to the pollers (501); terminate TLS in front or
// use Config.TLSConfig. Shutdown waits until the engine has run for 200ms,
// working around an nbio race when an engine is stopped right after Start.
// nbhttp arms the handshake deadline only after a connection is registered
// with a poller, so on a loaded machine it could arm it after the upgrade
// cleared it and drop a healthy connection HandshakeTimeout later; the
// gateway runs its own accept loops so that it can clear such a late
// deadline (see TestLateHandshakeDeadlineCleared). llib's tls.Conn (v1.2.2)
// writes the close_notify alert without the lock its Write takes; the
// gateway orders its own writes with the closes that follow a close frame
// (the common case), but when nbio closes a wss connection on its own after
// a protocol error while a handler writes to it, the alert can still
// interleave with that write.
//
// # Metrics
//
// With a non-nil Config.Observer the gateway registers (prefix
// switchboard_gateway_):
//
//	connections{role}                   gauge: open connections by role
//	accepted_total                      counter: upgraded connections
//	rejected_total{reason}              counter: refused handshakes (bad_request, origin, capacity, unauthorized, forbidden, draining, upgrade)
//	messages_in_total, bytes_in_total   counters: data messages and payload bytes received
//	messages_out_total, bytes_out_total counters: data frames and frame bytes queued for sending
//	closes_total{code}                  counter: closed connections by close code
//	slow_consumer_total                 counter: disconnects with 4008
//	rate_limited_total{action}          counter: messages over the rate limit (close or drop)
//	handler_panics_total{handler}       counter: recovered handler panics (open, message, close)
//	handshake_seconds                   histogram: request received to upgraded and opened
//	broadcast_seconds                   histogram: duration of Broadcast calls
//	executor_queue                      gauge func: handler jobs waiting for a worker
//
// and the readiness check "gateway" (named by Config.Name when set), which
// fails once Shutdown has started.
package gateway
