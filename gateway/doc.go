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
// The handshake runs, in order: the per-client-IP handshake rate
// (Config.HandshakeRate, 429 with Retry-After), WebSocket request
// validation (400/405), the allowed-origins check (403), the connection cap
// (503), Config.Authenticate (401, or 403 when the error wraps
// ErrForbidden), then the per-user cap (Config.MaxConnsPerUser, 429). Only
// then is the connection upgraded. Every refused handshake is answered with
// Connection: close, so refused clients do not hold descriptors in
// keep-alive. A client that opens TCP and never finishes its request is
// closed after Config.HandshakeTimeout (own listeners; when mounted, the
// host's http.Server timeouts apply to the handshake). When the process is
// out of file descriptors, the own listeners answer new connections 503
// (accepting them with a descriptor held in reserve) instead of leaving them
// unanswered in the kernel's accept queue.
//
// Every frame a client sends is checked on the event loop as it arrives,
// before nbio parses it: an unmasked frame closes the connection with 1002
// (RFC 6455 §5.1); every frame, control and continuation frames included,
// takes a token of Config.RateLimit; a message split into more than
// Config.MaxFragments frames closes with 1009; and pings and pongs beyond
// 8 waiting for their handler are dropped unanswered, so a ping flood
// cannot pile up handler jobs.
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
// A Conn also holds the host's state for the connection, as Centrifuge's
// Client does: one value (Conn.SetValue, Conn.Value) and the resources the
// host opened for it (Conn.Bind), such as its fan-out subscriptions, which
// the gateway closes exactly once after OnClose. A Bind that races the
// connection's close either binds the resource or closes it at once and
// returns ErrClosed, so the host keeps no map from connections to their
// subscriptions and cannot leak one.
//
// # Callbacks
//
// Callbacks (Config.Authenticate, OnOpen, OnMessage, OnClose,
// RateLimit.OnDrop, the host's Handler, and the Close of bound resources)
// run on goroutines the gateway owns, never under one of its locks, and
// never while the host is inside a gateway method: Conn.Close, Conn.Send,
// Gateway.Broadcast and the rest only queue work and return, so the host
// may call them while holding a lock its callbacks take. Which goroutine:
//
//	Authenticate, OnOpen   the handshake's: an executor goroutine (own listeners), or the net/http goroutine inside ServeHTTP (mounted)
//	OnMessage, OnDrop      an executor goroutine, or the event loop with Config.InlineHandlers; one at a time per connection
//	OnClose, bound Closes  an executor goroutine, after the connection's last OnMessage
//	Handler                an executor goroutine
//
// Shutdown and Close are the exception: they wait for the callbacks they
// cause (OnClose of every connection) and for those already running, so
// they must not be called from a callback or under a lock a callback
// takes.
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
// Config.MaxOutgoingBytes queued, counting every frame the gateway writes
// (data, pongs, pings, close frames); a write that would exceed it
// disconnects the connection with CloseSlowConsumer (without a close frame
// when even that does not fit) instead of growing memory or slowing other
// connections. A PreparedMessage holds the frame bytes encoded once;
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
// # Lifecycle
//
// A Gateway follows Switchboard's lifecycle convention for long-lived
// components. New starts nothing; Start starts the engine, executor,
// sweeper and listeners. Ready returns nil while the gateway serves, and
// otherwise ErrNotStarted, ErrDraining or ErrClosed (the readiness check
// registered on Config.Observer, so /readyz answers 503). Shutdown(ctx)
// is the graceful stop: it fails Ready, stops accepting, closes connections
// with 1001 in paced batches (Config.DrainBatch every Config.DrainInterval)
// so clients do not reconnect in a stampede, waits for them to be released,
// then stops the engine, executor and sweeper; when ctx ends it closes the
// remaining connections at once instead. Close is Shutdown with an already
// cancelled context: the immediate stop. Both are idempotent, and when
// either returns no goroutine of the gateway runs and no callback fires
// again (they wait for callbacks already running).
//
// # Close codes
//
// The gateway sends (and reports to OnClose) these close codes:
//
//	1000 CloseNormal          normal closure (peer-initiated, or Conn.Close by the host)
//	1001 CloseGoingAway       Gateway.Shutdown is draining the gateway
//	1002 CloseProtocolError   an unmasked client frame (sent by the gateway); other malformed frames (reported; nbio drops TCP, or answers 1002 to a bad close code)
//	1005 CloseNoStatus        reported only: the peer's close frame carried no code
//	1006 CloseAbnormal        reported only: TCP ended without a close frame
//	1007 CloseInvalidPayload  a text message (or close reason) is not valid UTF-8
//	1008 ClosePolicyViolation a frame (any kind) over the per-connection rate limit, Config.RateLimit
//	1009 CloseMessageTooBig   a message exceeded Config.MaxMessageSize, or had more than Config.MaxFragments frames
//	1011 CloseInternalError   a handler (OnOpen or OnMessage) panicked
//	4000 CloseIdleTimeout     no frame (pong included) for Config.IdleTimeout
//	4001 CloseWriteTimeout    queued outgoing bytes made no progress for Config.WriteTimeout
//	4008 CloseSlowConsumer    outgoing queue (any frame, pongs included) would exceed Config.MaxOutgoingBytes
//
// Conn.Close also accepts 1000, 1001, 1008, 1011 and any 3000-4999 code of
// the host's choosing. The close frame is best effort: a peer whose receive path is stuck (4001,
// 4008, half-open 4000) usually sees the TCP connection end instead. After
// a 1002, 1008 or 1009 of the frame checks the gateway reads and discards
// the peer's frames until its close frame or Config.CloseGracePeriod.
//
// # HTTP statuses
//
// Refused handshakes are answered, with Connection: close:
//
//	400 Bad Request            not a WebSocket upgrade request (missing or wrong Upgrade, Connection, Sec-WebSocket-Key/Version)
//	401 Unauthorized           Config.Authenticate returned an error
//	403 Forbidden              the Origin is not allowed, or the Authenticate error wraps ErrForbidden
//	405 Method Not Allowed     not a GET
//	429 Too Many Requests      over Config.HandshakeRate for the client address (body ErrHandshakeRate, with Retry-After in seconds)
//	429 Too Many Requests      the user has Config.MaxConnsPerUser connections open (body ErrUserConns, no Retry-After)
//	501 Not Implemented        mounted inside a net/http server that terminates TLS
//	503 Service Unavailable    Config.MaxConns reached, before Start, while draining, or the process is out of file descriptors (own listeners)
//
// # Errors
//
//	ErrClosed          the connection is closing or closed (writes, Close, Bind); Ready once the gateway stopped
//	ErrSlowConsumer    the write would exceed Config.MaxOutgoingBytes; the connection is being closed with 4008
//	ErrForbidden       returned (wrapped) by Authenticate to answer 403 instead of 401
//	ErrNotStarted      ServeHTTP was called before Start; Ready before Start
//	ErrInvalidConfig   wrapped by New, naming the bad field
//	ErrMessageType     a MessageType other than TextMessage or BinaryMessage
//	ErrInvalidUTF8     NewPreparedMessage was given invalid UTF-8 for a text message
//	ErrCloseCode       Conn.Close was given a code a server may not send
//	ErrDraining        Ready while Shutdown drains
//	ErrHandshakeRate   the body of the 429 answered over Config.HandshakeRate
//	ErrUserConns       the body of the 429 answered over Config.MaxConnsPerUser
//
// # Known limitations (nbio v1.6.8)
//
// Empty data messages (zero-length payload) are discarded by nbio's frame
// parser and never reach OnMessage. Permessage-deflate is not negotiated.
// A gateway mounted inside a net/http server that itself terminates TLS
// cannot move connections to the pollers (501); terminate TLS in front or
// use Config.TLSConfig. Shutdown and Close wait until the engine has run
// for 200ms, whatever their context, working around an nbio race when an
// engine is stopped right after Start.
// nbhttp arms the handshake deadline only after a connection is registered
// with a poller, so on a loaded machine it could arm it after the upgrade
// cleared it and drop a healthy connection HandshakeTimeout later; the
// gateway runs its own accept loops so that it can clear such a late
// deadline (see TestLateHandshakeDeadlineCleared). llib's tls.Conn (v1.2.2)
// writes the close_notify alert without the lock its Write takes; the
// gateway orders its own writes with the closes that follow a close frame
// (the common case), but when nbio closes a wss connection on its own after
// a protocol error while a handler writes to it, the alert can still
// interleave with that write. The frame checks start with the first read
// after the upgrade; over TLS, frames a client pipelines behind its upgrade
// request, in the same read, reach nbio unchecked if the upgrade completes
// while that read is being decrypted (a client must not send before the
// 101 anyway).
//
// # Logging
//
// Config.Observer's logger receives the gateway's log lines and nbio's.
// nbio logs through one process-wide logger, printing to stdout; the first
// New replaces it, once per process, with one that forwards to the Observer
// logger of the most recently started gateway still running (discarded for
// a gateway without an Observer; slog.Default() while none runs), with
// component=nbio. nbio's lines do not say which engine wrote them, so with
// several gateways in one process they all go to the newest one.
//
// # Metrics
//
// With a non-nil Config.Observer the gateway registers (prefix
// switchboard_gateway_):
//
//	connections{role}                   gauge: open connections by role
//	accepted_total                      counter: upgraded connections
//	rejected_total{reason}              counter: refused handshakes (handshake_rate, bad_request, origin, capacity, unauthorized, forbidden, user_conns, not_started, draining, tls_mount, upgrade, fd_limit, accept)
//	messages_in_total, bytes_in_total   counters: data messages and payload bytes received
//	messages_out_total, bytes_out_total counters: data frames and frame bytes queued for sending
//	closes_total{code}                  counter: closed connections by close code
//	slow_consumer_total                 counter: disconnects with 4008
//	rate_limited_total{action}          counter: frames over the rate limit (close: connections closed; drop: messages, pings and pongs dropped)
//	handler_panics_total{handler}       counter: recovered handler panics (open, message, drop, close, bind: a bound resource's Close)
//	handshake_seconds                   histogram: request received to upgraded and opened
//	broadcast_seconds                   histogram: duration of Broadcast calls
//	executor_queue                      gauge func: handler jobs waiting for a worker
//
// and the readiness check "gateway" (named by Config.Name when set), which
// is Gateway.Ready: it fails before Start and once Shutdown has started.
package gateway
