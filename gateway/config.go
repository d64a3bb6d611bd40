package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/switchboard-go/switchboard/observe"
)

// Documented defaults for the zero values of Config.
const (
	DefaultPath             = "/ws"
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 15 * time.Second
	DefaultIdleTimeout      = 60 * time.Second
	DefaultPingInterval     = 25 * time.Second
	DefaultMaxMessageSize   = 64 << 10
	DefaultMaxOutgoingBytes = 1 << 20
	DefaultHandlerWorkers   = 256
	DefaultHandlerQueue     = 16384
	DefaultDrainBatch       = 1000
	DefaultDrainInterval    = 50 * time.Millisecond
	DefaultCloseGracePeriod = 2 * time.Second
	DefaultMaxFragments     = 64
	DefaultMaxConnsPerUser  = 100
	DefaultHandshakeBurst   = 20
)

// maxTrackedIPs bounds the per-IP handshake limiter: at most this many client
// addresses (about 100 bytes each) are tracked at once.
const maxTrackedIPs = 1 << 16

// Role is the kind of participant behind a connection. The three constants
// are the roles Switchboard's other packages know; any other string is
// allowed and counted separately by Gateway.Count.
type Role string

// Well-known roles.
const (
	RoleCustomer   Role = "customer"
	RoleAgent      Role = "agent"
	RoleSupervisor Role = "supervisor"
)

// Identity is who is behind a connection, as returned by Config.Authenticate.
// It is stored by value in the Conn and must not be modified afterwards
// (Attrs and what Value points to are shared, not copied).
type Identity struct {
	// UserID keys the per-user registry (SendToUser, UserConns). Empty for
	// anonymous connections; anonymous connections are not indexed by user.
	UserID string
	// Role of the participant.
	Role Role
	// Attrs carries free-form attributes such as "tier": "vip".
	Attrs map[string]string
	// Value is the host's typed identity (for example its verified token
	// claims), so that what Authenticate parsed reaches the handlers as it
	// is, without a round trip through strings. The gateway never reads it.
	Value any
}

// MessageType is the type of a WebSocket data message.
type MessageType int

// Data message types (the RFC 6455 opcodes).
const (
	TextMessage   MessageType = 1
	BinaryMessage MessageType = 2
)

// String returns "text", "binary" or "MessageType(n)".
func (t MessageType) String() string {
	switch t {
	case TextMessage:
		return "text"
	case BinaryMessage:
		return "binary"
	}
	return fmt.Sprintf("MessageType(%d)", int(t))
}

// RatePolicy is what happens to a message over the per-connection rate limit.
type RatePolicy int

const (
	// RateClose closes the connection with 1008 (the default).
	RateClose RatePolicy = iota
	// RateDrop drops the message, counts it in rate_limited_total{action="drop"}
	// and calls RateLimit.OnDrop; the connection stays open.
	RateDrop
)

// RateLimit is a per-connection token bucket over incoming WebSocket
// frames. Every frame takes a token: each frame of a data message (a
// fragmented message takes one per fragment, empty continuation frames
// included), pings, pongs and close frames. The bucket is checked on the
// event loop as frames arrive, before nbio parses them, so a flood costs
// no handler work. The zero value disables it.
//
// With RateClose a frame over the limit closes the connection with 1008
// after the messages received before it were handled; what the peer sends
// afterwards is read and discarded until its close frame (or
// Config.CloseGracePeriod). With RateDrop a data message whose first frame
// finds the bucket empty is dropped whole (OnDrop is called); later frames
// of a message already admitted are never refused but go into debt, so
// the messages after it are dropped until the debt is repaid; pings and
// pongs over the limit are dropped unanswered. A close frame is counted but
// never refused.
type RateLimit struct {
	// PerSecond is the sustained rate of frames per second; 0 disables the limit.
	PerSecond float64
	// Burst is the bucket size; 0 means max(1, ceil(PerSecond)).
	Burst int
	// Policy selects close (1008, default) or drop-and-report.
	Policy RatePolicy
	// OnDrop, when set with Policy RateDrop, is called for every dropped
	// data message, in the connection's order with OnMessage and on the
	// same kind of goroutine (an executor goroutine, or the event loop
	// with Config.InlineHandlers); never while the host is inside a
	// gateway method.
	OnDrop func(c *Conn)
}

// Config configures a Gateway. Zero values mean the documented defaults.
type Config struct {
	// Name labels this gateway's readiness check ("gateway" when empty) and
	// nbio's engine name.
	Name string
	// Addrs are the listeners started by Start, e.g. "127.0.0.1:0". Empty
	// means mount-only: connections arrive through ServeHTTP.
	Addrs []string
	// Path is the WebSocket endpoint on the gateway's own listeners.
	// Default "/ws". Every other path goes to Handler.
	Path string
	// Handler serves the host's other routes (pages, REST) on the gateway's
	// own listeners. nil answers 404. It runs on an executor goroutine.
	Handler http.Handler
	// TLSConfig, when set, makes the own listeners serve TLS (wss/https);
	// it requires Addrs. nbio terminates TLS with a fork of crypto/tls
	// (github.com/lesismal/llib), so only these server fields are used:
	// Certificates, GetCertificate (its ClientHelloInfo carries the hello's
	// fields but no Context), MinVersion (default TLS 1.2, as crypto/tls),
	// MaxVersion, CipherSuites, CurvePreferences (X25519 and the NIST
	// curves), ClientAuth, ClientCAs, VerifyPeerCertificate,
	// SessionTicketsDisabled, KeyLogWriter, Rand and Time. ALPN always
	// offers http/1.1. GetConfigForClient is not supported.
	TLSConfig *tls.Config

	// Authenticate runs before the upgrade. nil means every connection gets
	// the anonymous Identity{}. An error answers 401, or 403 when
	// errors.Is(err, ErrForbidden); the connection is not upgraded. It runs
	// on the goroutine serving the handshake request: an executor goroutine
	// on the own listeners, or, mounted, the net/http goroutine inside
	// ServeHTTP. It may block (a token introspection call), holding that
	// goroutine; Shutdown waits for it.
	Authenticate func(r *http.Request) (Identity, error)
	// AllowedOrigins lists the Origin values browsers may connect from,
	// compared case-insensitively; "*" allows any origin and a leading
	// "*." (e.g. "https://*.example.com") allows subdomains. Empty allows
	// requests without an Origin header and same-origin requests only.
	AllowedOrigins []string
	// Subprotocols the server supports, in order of preference; the first
	// one the client also offers is selected (Conn.Subprotocol).
	Subprotocols []string

	// HandshakeTimeout bounds the time from TCP accept to a complete HTTP
	// request on the own listeners (slowloris); it is also the keep-alive
	// idle time of plain HTTP connections. Default 10s.
	HandshakeTimeout time.Duration
	// WriteTimeout closes a connection (4001) whose queued outgoing bytes
	// made no progress for this long. Default 15s.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection (4000) that sent no frame, pongs
	// included, for this long. Default 60s. Must exceed PingInterval.
	IdleTimeout time.Duration
	// PingInterval is how long a connection may stay silent before the
	// server pings it. Default 25s.
	PingInterval time.Duration
	// SweepInterval is the period of the sweeper that sends pings and
	// enforces IdleTimeout and WriteTimeout; it bounds their precision.
	// Default min(PingInterval, IdleTimeout, WriteTimeout)/4, at least 10ms
	// and at most 1s.
	SweepInterval time.Duration
	// CloseGracePeriod is how long the gateway waits for the peer's close
	// frame after sending its own before dropping TCP. Default 2s.
	CloseGracePeriod time.Duration

	// MaxConns caps open WebSocket connections; more are refused with 503
	// before upgrading. 0 means unlimited.
	MaxConns int
	// MaxConnsPerUser caps the open WebSocket connections of one
	// Identity.UserID (tabs and devices of one user); more are refused with
	// 429 (no Retry-After: a slot frees when one of them closes) after
	// Authenticate and before upgrading. Anonymous connections (empty
	// UserID) are not counted. Default 100; -1 means unlimited.
	MaxConnsPerUser int
	// HandshakeRate is the sustained rate of WebSocket handshakes per second
	// allowed from one client IP address (IPv6 addresses are grouped by
	// /64), a token bucket of HandshakeBurst; a request over it is answered
	// 429 with Retry-After before any other check. Every request to Path
	// counts. The limiter tracks at most 65536 addresses; idle ones are
	// evicted by the sweeper, and when the table is full an idle (else an
	// arbitrary) entry makes room. Behind a reverse proxy every client has
	// the proxy's address, so the default is 0: no limit.
	HandshakeRate float64
	// HandshakeBurst is the per-IP handshake bucket size. Default 20 (when
	// HandshakeRate is set).
	HandshakeBurst int
	// MaxMessageSize is the largest incoming message in bytes; a larger one
	// closes the connection with 1009. It bounds the sum of the payloads of
	// a fragmented message. Default 64 KiB; -1 means unlimited.
	MaxMessageSize int64
	// MaxFragments is the largest number of frames one incoming data
	// message may be split into; one more closes the connection with 1009.
	// Default: 64, or MaxMessageSize/4096 when that is larger (clients such
	// as gorilla/websocket fragment at their 4 KiB write buffer); unlimited
	// when MaxMessageSize is unlimited. -1 means unlimited.
	MaxFragments int
	// MaxOutgoingBytes caps the bytes queued for one connection: every
	// frame the gateway queues counts, data frames (Send, SendPrepared,
	// Broadcast, SendToUser), pongs, pings and close frames. A write that
	// would exceed it closes the connection with 4008; when even that close
	// frame does not fit, the TCP connection is dropped without one. The
	// queued bytes never exceed the cap (the check and the reservation are
	// one atomic step); nbio's copy of them may take up to about twice as
	// much heap (buffer growth). Default 1 MiB; -1 means unlimited.
	MaxOutgoingBytes int
	// RateLimit limits incoming frames per connection. Zero: no limit.
	RateLimit RateLimit

	// Callbacks. None runs under a lock of the gateway, and none is called
	// while the host is inside a gateway method (Conn.Send, Conn.Close,
	// Conn.Bind, Gateway.Broadcast…), so a callback may call any of them
	// and may take locks the host holds around them. The exceptions are
	// the methods that wait for callbacks: Shutdown and Close (whose
	// callbacks run on the gateway's goroutines while they wait), and
	// ServeHTTP for mounted connections (Authenticate and OnOpen run inside
	// it). A panic in OnOpen, OnMessage, OnDrop or OnClose is recovered,
	// logged and counted (handler_panics_total); in the first three it
	// closes the connection with 1011.

	// OnOpen runs once per connection after the upgrade, before any
	// OnMessage of the connection, on the goroutine that ran Authenticate:
	// an executor goroutine on the own listeners, or the net/http goroutine
	// inside ServeHTTP for mounted connections.
	OnOpen func(c *Conn)
	// OnMessage runs for every data message, in order per connection and
	// one at a time per connection, on an executor goroutine (or, with
	// InlineHandlers, on the event loop that read the message). data is
	// valid only during the call (copy it to keep it); text messages are
	// valid UTF-8.
	OnMessage func(c *Conn, typ MessageType, data []byte)
	// OnClose runs exactly once per opened connection, after its last
	// OnMessage returned and after its Context was cancelled, with the
	// close code (see the package doc) and reason, on an executor
	// goroutine — also when the host closed the connection (Conn.Close
	// only starts the close and returns). The resources bound with
	// Conn.Bind are closed right after it returns, on the same goroutine.
	OnClose func(c *Conn, code int, reason string)

	// HandlerWorkers is the number of executor goroutines running handlers
	// and HTTP requests. Default 256.
	HandlerWorkers int
	// HandlerQueue is the executor's queue length; when it is full the
	// event loop waits (back-pressure). Default 16384.
	HandlerQueue int
	// Pollers is the number of nbio event loops. Default: nbio's
	// (NumCPU/4, at least 1). Keep it below GOMAXPROCS: a loop spends its
	// idle time inside epoll_wait holding a P, and when no P is left idle
	// the runtime takes the P back from the system call on every sysmon
	// tick.
	Pollers int
	// InlineHandlers runs OnMessage and the ping, pong and close frame
	// handling of connections on the own listeners directly on the nbio
	// event loop that read the frame, instead of queueing them on the
	// executor. That saves a goroutine hand-off (two thread wake-ups) per
	// message — on the 100k-connection echo benchmark a third of the
	// server CPU — but a handler that blocks (on I/O, a contended lock, a
	// full channel) stalls every connection of that event loop. Use it
	// when handlers only compute and write (Conn.Send never blocks) or
	// hand slow work to goroutines of their own. Ordering is unchanged:
	// OnOpen and OnClose stay on the executor (with Authenticate and the
	// HTTP handler), OnOpen returns before the first OnMessage starts, and
	// OnClose starts after the last OnMessage returned. Connections mounted
	// through ServeHTTP always use the executor. Default false.
	InlineHandlers bool
	// DrainBatch is how many connections Shutdown closes per
	// DrainInterval. Default 1000.
	DrainBatch int
	// DrainInterval is the pause between drain batches. Default 50ms.
	DrainInterval time.Duration

	// Observer receives metrics, logs and the readiness check; nil is off.
	Observer *observe.Observer
}

// ErrInvalidConfig is wrapped by New's errors, which name the bad field.
var ErrInvalidConfig = errors.New("gateway: invalid config")

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

// withDefaults validates cfg and returns it with defaults filled in.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Name == "" {
		cfg.Name = "gateway"
	}
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if !strings.HasPrefix(cfg.Path, "/") {
		return cfg, invalid("Path", "%q must start with /", cfg.Path)
	}
	type dur struct {
		name string
		p    *time.Duration
		def  time.Duration
	}
	for _, d := range []dur{
		{"HandshakeTimeout", &cfg.HandshakeTimeout, DefaultHandshakeTimeout},
		{"WriteTimeout", &cfg.WriteTimeout, DefaultWriteTimeout},
		{"IdleTimeout", &cfg.IdleTimeout, DefaultIdleTimeout},
		{"PingInterval", &cfg.PingInterval, DefaultPingInterval},
		{"CloseGracePeriod", &cfg.CloseGracePeriod, DefaultCloseGracePeriod},
		{"DrainInterval", &cfg.DrainInterval, DefaultDrainInterval},
	} {
		if *d.p < 0 {
			return cfg, invalid(d.name, "negative duration %v", *d.p)
		}
		if *d.p == 0 {
			*d.p = d.def
		}
	}
	if cfg.IdleTimeout <= cfg.PingInterval {
		return cfg, invalid("IdleTimeout", "%v must exceed PingInterval %v", cfg.IdleTimeout, cfg.PingInterval)
	}
	if cfg.SweepInterval < 0 {
		return cfg, invalid("SweepInterval", "negative duration %v", cfg.SweepInterval)
	}
	if cfg.SweepInterval == 0 {
		s := min(cfg.PingInterval, cfg.IdleTimeout, cfg.WriteTimeout) / 4
		cfg.SweepInterval = max(min(s, time.Second), 10*time.Millisecond)
	}
	if cfg.MaxConns < 0 {
		return cfg, invalid("MaxConns", "negative %d", cfg.MaxConns)
	}
	switch {
	case cfg.MaxMessageSize == 0:
		cfg.MaxMessageSize = DefaultMaxMessageSize
	case cfg.MaxMessageSize < -1:
		return cfg, invalid("MaxMessageSize", "%d (use -1 for unlimited)", cfg.MaxMessageSize)
	case cfg.MaxMessageSize > 1<<31-1:
		return cfg, invalid("MaxMessageSize", "%d exceeds 2 GiB", cfg.MaxMessageSize)
	}
	switch {
	case cfg.MaxFragments == 0 && cfg.MaxMessageSize == -1:
		cfg.MaxFragments = -1
	case cfg.MaxFragments == 0:
		cfg.MaxFragments = max(DefaultMaxFragments, int(cfg.MaxMessageSize/4096))
	case cfg.MaxFragments < -1:
		return cfg, invalid("MaxFragments", "%d (use -1 for unlimited)", cfg.MaxFragments)
	}
	switch {
	case cfg.MaxConnsPerUser == 0:
		cfg.MaxConnsPerUser = DefaultMaxConnsPerUser
	case cfg.MaxConnsPerUser < -1:
		return cfg, invalid("MaxConnsPerUser", "%d (use -1 for unlimited)", cfg.MaxConnsPerUser)
	}
	if cfg.HandshakeRate < 0 {
		return cfg, invalid("HandshakeRate", "negative %v", cfg.HandshakeRate)
	}
	if cfg.HandshakeBurst < 0 {
		return cfg, invalid("HandshakeBurst", "negative %d", cfg.HandshakeBurst)
	}
	if cfg.HandshakeRate > 0 && cfg.HandshakeBurst == 0 {
		cfg.HandshakeBurst = DefaultHandshakeBurst
	}
	switch {
	case cfg.MaxOutgoingBytes == 0:
		cfg.MaxOutgoingBytes = DefaultMaxOutgoingBytes
	case cfg.MaxOutgoingBytes < -1:
		return cfg, invalid("MaxOutgoingBytes", "%d (use -1 for unlimited)", cfg.MaxOutgoingBytes)
	}
	if cfg.RateLimit.PerSecond < 0 {
		return cfg, invalid("RateLimit.PerSecond", "negative %v", cfg.RateLimit.PerSecond)
	}
	if cfg.RateLimit.Burst < 0 {
		return cfg, invalid("RateLimit.Burst", "negative %d", cfg.RateLimit.Burst)
	}
	if cfg.RateLimit.PerSecond > 0 && cfg.RateLimit.Burst == 0 {
		b := int(cfg.RateLimit.PerSecond)
		if float64(b) < cfg.RateLimit.PerSecond {
			b++
		}
		cfg.RateLimit.Burst = max(b, 1)
	}
	if cfg.RateLimit.Policy != RateClose && cfg.RateLimit.Policy != RateDrop {
		return cfg, invalid("RateLimit.Policy", "unknown policy %d", cfg.RateLimit.Policy)
	}
	for _, p := range []struct {
		name string
		p    *int
		def  int
	}{
		{"HandlerWorkers", &cfg.HandlerWorkers, DefaultHandlerWorkers},
		{"HandlerQueue", &cfg.HandlerQueue, DefaultHandlerQueue},
		{"DrainBatch", &cfg.DrainBatch, DefaultDrainBatch},
	} {
		if *p.p < 0 {
			return cfg, invalid(p.name, "negative %d", *p.p)
		}
		if *p.p == 0 {
			*p.p = p.def
		}
	}
	if cfg.Pollers < 0 {
		return cfg, invalid("Pollers", "negative %d", cfg.Pollers)
	}
	for _, o := range cfg.AllowedOrigins {
		if o == "" {
			return cfg, invalid("AllowedOrigins", "empty origin")
		}
	}
	for _, s := range cfg.Subprotocols {
		if s == "" || strings.ContainsAny(s, ", \t") {
			return cfg, invalid("Subprotocols", "%q is not a token", s)
		}
	}
	if t := cfg.TLSConfig; t != nil {
		switch {
		case len(cfg.Addrs) == 0:
			return cfg, invalid("TLSConfig", "set without Addrs (a mounted gateway does not terminate TLS)")
		case len(t.Certificates) == 0 && t.GetCertificate == nil:
			return cfg, invalid("TLSConfig", "no Certificates and no GetCertificate")
		case t.GetConfigForClient != nil:
			return cfg, invalid("TLSConfig", "GetConfigForClient is not supported")
		}
	}
	return cfg, nil
}
