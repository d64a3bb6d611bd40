// Package desk is the supportdesk reference server: it wires the gateway,
// router, session, queue, fanout and observe packages into a live-chat
// support backend. See PROTOCOL.md for the wire protocol and the README for
// how to run one node or several.
//
// # Architecture
//
// Every node runs an edge: the gateway holding its customers', agents' and
// supervisors' WebSocket connections. One node of the cluster (the oldest
// live node; the only node without Redis) also runs the core, which owns the
// conversations (session store and state machine), the waiting queue, the
// agent assigner and the SLA timers. Edges and core talk only through the
// fan-out bus — in memory on one node, through Redis on many — so the same
// code path serves both:
//
//	desk.core          client commands and connection events, edge → core
//	desk.user.<id>     events for one user, core → the edges holding that user
//	desk.sup           events for supervisors (SLA, stats)
//	desk.conv.<id>     a conversation's messages, with history for recovery
//	desk.eph.<id>      typing and read events (no history)
//	desk.nodes         presence of the live nodes (ring and core election)
package desk

import (
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/observe"
	"github.com/switchboard-go/switchboard/session"
)

// TierSLA holds one customer tier's waiting-room and response targets.
type TierSLA struct {
	// MaxWait is how long a conversation may wait in the queue before the
	// tier's deadline action (VIP: alert supervisors; premium: retry once;
	// standard: close with "no agent available").
	MaxWait time.Duration
	// FirstResponse is the first-response-time target.
	FirstResponse time.Duration
	// NextResponse is the next-response-time target.
	NextResponse time.Duration
}

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Addr is the listen address of pages, API and WebSocket. Default "127.0.0.1:8080".
	Addr string
	// OpsAddr is the listen address of /metrics, /debug/pprof, /healthz and
	// /readyz, which are never served on Addr. Default "127.0.0.1:0" (a free
	// loopback port; OpsURL tells which).
	OpsAddr string
	// PublicURL is how browsers reach this node (used by /api/route).
	// Default "http://" + the bound address.
	PublicURL string
	// NodeID names this node. Default: a random ID.
	NodeID string
	// Secret signs identity tokens; at least 16 bytes. Default: random per
	// process (tokens then die with it), which is fine in dev mode.
	Secret []byte
	// Auth configures token verification beyond the shared Secret: the
	// identity provider's JWKS (file or URL), issuer, audience and claim
	// names (see auth.Config; its HMACSecret is Secret). With a JWKS and
	// Dev, HS256 dev tokens are accepted too.
	Auth auth.Config
	// Dev enables POST /api/dev/token, which issues a token for any name,
	// role and tier. Never enable it in production.
	Dev bool
	// Broker connects nodes (fanout/redisbroker); nil is a single node.
	Broker fanout.Broker
	// Leases places the partition owner in a cluster (required with
	// Broker; fanout/redisbroker.Broker implements it).
	Leases Leases
	// LeaseTTL is how long the owner's lease lasts without renewal: the
	// longest a crashed owner keeps the partition. Default 3s.
	LeaseTTL time.Duration
	// ClusterTick is how often a node refreshes its presence, renews or
	// seeks the lease and retries unanswered commands. Default 500ms.
	ClusterTick time.Duration
	// CommandRetry is how long an edge waits for the owner's
	// acknowledgement of a command before sending it again (with the same
	// idempotency key); CommandDeadline is when it gives up and answers
	// the client "unavailable". Defaults 1s and 10s.
	CommandRetry, CommandDeadline time.Duration
	// Store is the conversation repository: records, audit trail,
	// transcripts and read markers (session/embedded on one node,
	// session/pgstore shared by every node of a cluster). Required. The
	// Server does not close it.
	Store session.Repository
	// StoreTimeout bounds one repository call. Default 5s.
	StoreTimeout time.Duration
	// StoreRetry is how soon the core retries offering waiting
	// conversations after a repository write failed. Default 1s.
	StoreRetry time.Duration
	// RebuildTimeout bounds loading the open conversations at start.
	// Default 60s.
	RebuildTimeout time.Duration
	// WaitingRoomLimit is how many conversations may wait in each tier; a
	// start beyond it gets queue_full. Default 10000.
	WaitingRoomLimit int
	// MessageRate and MessageBurst bound each sender's messages per
	// conversation (a token bucket); beyond them a message gets
	// rate_limited. Default 10/s with a burst of 20; a negative rate
	// disables the limit.
	MessageRate  float64
	MessageBurst int
	// OnInvariant, if set, is called when the server detects a bug in its
	// own bookkeeping (a state change the conversation state machine
	// refuses). It is logged and counted in any case; tests fail on it.
	OnInvariant func(error)
	// Tiers are the SLA targets of vip, premium and standard customers.
	// Default: vip 2m/30s/60s, premium 5m/60s/2m, standard 15m/2m/5m.
	Tiers [3]TierSLA
	// SLAWarnAt is the fraction of a target at which "about to breach" is
	// sent. Default 0.8.
	SLAWarnAt float64
	// OfferTimeout is how long an agent has to accept an offer. Default 30s.
	OfferTimeout time.Duration
	// AgentGrace is how long a disconnected agent keeps its conversations
	// before they are requeued at the front of their tier. Default 60s.
	AgentGrace time.Duration
	// AgentCapacity is each agent's maximum of concurrent conversations
	// unless their token says otherwise. Default 3.
	AgentCapacity int
	// PositionDebounce is the minimum interval between position updates.
	// Default 1s.
	PositionDebounce time.Duration
	// StatsInterval is how often supervisors get queue and agent stats.
	// Default 1s.
	StatsInterval time.Duration
	// History is how many messages each conversation keeps for recovery,
	// and for how long. Default 1000 messages, 24h.
	History fanout.HistoryOptions
	// Retention is how long a resolved or closed conversation stays known
	// (listed in hello, readable with resume) before it is forgotten.
	// Default 1h.
	Retention time.Duration
	// NodeTTL is how long a node stays in the cluster without refreshing
	// its presence. Default 5s.
	NodeTTL time.Duration
	// MaxConnsPerUser caps one user's connections (gateway default 100;
	// beyond: 429). HandshakeRate, when positive, caps the connections per
	// second one client IP may open (burst twice that; beyond: 429).
	MaxConnsPerUser int
	HandshakeRate   float64
	// Gateway timeouts and limits.
	IdleTimeout, PingInterval time.Duration
	// Observer receives metrics and logs; nil disables them.
	Observer *observe.Observer
}

// ErrInvalidConfig is wrapped by New when a Config field is invalid.
var ErrInvalidConfig = errors.New("desk: invalid config")

func (c *Config) fill() error {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:8080"
	}
	if c.OpsAddr == "" {
		c.OpsAddr = "127.0.0.1:0"
	}
	def := [3]TierSLA{
		{MaxWait: 2 * time.Minute, FirstResponse: 30 * time.Second, NextResponse: 60 * time.Second},
		{MaxWait: 5 * time.Minute, FirstResponse: 60 * time.Second, NextResponse: 2 * time.Minute},
		{MaxWait: 15 * time.Minute, FirstResponse: 2 * time.Minute, NextResponse: 5 * time.Minute},
	}
	for i := range c.Tiers {
		t := &c.Tiers[i]
		if t.MaxWait == 0 {
			t.MaxWait = def[i].MaxWait
		}
		if t.FirstResponse == 0 {
			t.FirstResponse = def[i].FirstResponse
		}
		if t.NextResponse == 0 {
			t.NextResponse = def[i].NextResponse
		}
		if t.MaxWait < 0 || t.FirstResponse < 0 || t.NextResponse < 0 {
			return fmt.Errorf("%w: Tiers[%d] has a negative duration", ErrInvalidConfig, i)
		}
	}
	if c.SLAWarnAt == 0 {
		c.SLAWarnAt = 0.8
	}
	if c.SLAWarnAt <= 0 || c.SLAWarnAt >= 1 {
		return fmt.Errorf("%w: SLAWarnAt %v must be in (0,1)", ErrInvalidConfig, c.SLAWarnAt)
	}
	setDur := func(d *time.Duration, v time.Duration, name string) error {
		if *d == 0 {
			*d = v
		}
		if *d < 0 {
			return fmt.Errorf("%w: %s is negative", ErrInvalidConfig, name)
		}
		return nil
	}
	for _, f := range []struct {
		d    *time.Duration
		v    time.Duration
		name string
	}{
		{&c.OfferTimeout, 30 * time.Second, "OfferTimeout"},
		{&c.AgentGrace, 60 * time.Second, "AgentGrace"},
		{&c.PositionDebounce, time.Second, "PositionDebounce"},
		{&c.StatsInterval, time.Second, "StatsInterval"},
		{&c.NodeTTL, 5 * time.Second, "NodeTTL"},
		{&c.Retention, time.Hour, "Retention"},
		{&c.StoreTimeout, 5 * time.Second, "StoreTimeout"},
		{&c.LeaseTTL, 3 * time.Second, "LeaseTTL"},
		{&c.ClusterTick, 500 * time.Millisecond, "ClusterTick"},
		{&c.CommandRetry, time.Second, "CommandRetry"},
		{&c.CommandDeadline, 10 * time.Second, "CommandDeadline"},
		{&c.StoreRetry, time.Second, "StoreRetry"},
		{&c.RebuildTimeout, time.Minute, "RebuildTimeout"},
	} {
		if err := setDur(f.d, f.v, f.name); err != nil {
			return err
		}
	}
	if c.Store == nil {
		return fmt.Errorf("%w: Store is required", ErrInvalidConfig)
	}
	if c.WaitingRoomLimit == 0 {
		c.WaitingRoomLimit = 10_000
	}
	if c.WaitingRoomLimit < 0 {
		return fmt.Errorf("%w: WaitingRoomLimit is negative", ErrInvalidConfig)
	}
	if c.MessageRate == 0 {
		c.MessageRate = 10
	}
	if c.MessageBurst == 0 {
		c.MessageBurst = 20
	}
	if c.MessageBurst < 0 {
		return fmt.Errorf("%w: MessageBurst is negative", ErrInvalidConfig)
	}
	if c.AgentCapacity == 0 {
		c.AgentCapacity = 3
	}
	if c.AgentCapacity < 0 {
		return fmt.Errorf("%w: AgentCapacity is negative", ErrInvalidConfig)
	}
	if c.History.Size == 0 {
		c.History.Size = 1000
	}
	if c.History.TTL == 0 {
		c.History.TTL = 24 * time.Hour
	}
	if c.Secret != nil && len(c.Secret) < 16 {
		return fmt.Errorf("%w: Secret must be at least 16 bytes", ErrInvalidConfig)
	}
	return nil
}

// tierNames index the tiers by queue tier (0 = vip).
var tierNames = [3]string{"vip", "premium", "standard"}

func tierIndex(name string) int {
	for i, n := range tierNames {
		if n == name {
			return i
		}
	}
	return 2
}
