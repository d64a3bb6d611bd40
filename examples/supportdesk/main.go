// Command supportdesk is Switchboard's reference live-chat support server.
//
//	go run ./examples/supportdesk                 # one node, in memory, dev mode on loopback
//	go run ./examples/supportdesk -redis 127.0.0.1:6379 -addr 127.0.0.1:8081 -node b
//
// It serves the customer widget (/), the agent console (/agent), the
// supervisor view (/supervisor) and the WebSocket endpoint (/ws) on -addr,
// and the ops endpoints (/metrics, /debug/pprof, /healthz, /readyz) on a
// separate listener, -ops-addr (default: a loopback port). SIGINT or SIGTERM
// drains it gracefully. See PROTOCOL.md for the wire protocol.
//
// Secrets never go on the command line (where /proc and ps show them): the
// token secret comes from the environment (SUPPORTDESK_SECRET) or a file
// (-secret-file).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	nblog "github.com/lesismal/nbio/logging"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/desk"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/fanout/redisbroker"
	"github.com/switchboard-go/switchboard/observe"
	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/embedded"
	"github.com/switchboard-go/switchboard/session/pgstore"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "supportdesk:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("supportdesk", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address for pages, API and WebSocket")
	opsAddr := fs.String("ops-addr", "127.0.0.1:0", "listen address for /metrics, /debug/pprof, /healthz, /readyz (never served on -addr; default a free loopback port)")
	public := fs.String("public-url", "", "base URL browsers use to reach this node (default http://<addr>)")
	node := fs.String("node", "", "node ID (default random)")
	redisAddr := fs.String("redis", "", "Redis address; enables the multi-node mode (needs -postgres)")
	dataDir := fs.String("data", defaultDataDir(), "directory of the embedded conversation store (one node; ignored with -postgres)")
	pgDSN := fs.String("postgres", "", "PostgreSQL DSN of the conversation store shared by every node (e.g. postgres://user@127.0.0.1:5432/desk)")
	leaseTTL := fs.Duration("lease-ttl", 3*time.Second, "cluster: how long the partition owner's lease lasts unrenewed (the longest a crashed owner keeps the partition)")
	nodeTTL := fs.Duration("node-ttl", 5*time.Second, "cluster: how long a node stays listed without a heartbeat (its agents then go offline)")
	perUser := fs.Int("max-conns-per-user", 100, "connections one user may hold at once (beyond: HTTP 429)")
	hsRate := fs.Float64("handshake-rate", 0, "connections per second one client IP may open, burst twice that (beyond: HTTP 429); 0 = off")
	waiting := fs.Int("waiting-room", 10_000, "conversations that may wait per tier; beyond it start gets queue_full")
	secretFile := fs.String("secret-file", "", "file holding the HMAC secret for tokens, ≥16 bytes (default: env SUPPORTDESK_SECRET, else random; nodes of a cluster need the same one)")
	jwksFile := fs.String("jwks-file", "", "JWKS file of your identity provider: RS256, ES256 and EdDSA tokens are verified against it (re-read when it changes)")
	jwksURL := fs.String("jwks-url", "", "JWKS URL of your identity provider (re-fetched every 5 min and on an unknown kid)")
	issuer := fs.String("jwt-issuer", "", "required iss of tokens (default: not checked)")
	audience := fs.String("jwt-audience", "", "required aud of tokens (default: not checked)")
	claimNames := fs.String("jwt-claims", "", "claim names as key=name pairs, e.g. role=groups,skills=https://example.com/skills (keys: sub, name, role, tier, skills, cap)")
	dev := fs.Bool("dev", false, "enable the dev token endpoint (default on when listening on loopback)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	offer := fs.Duration("offer-timeout", 30*time.Second, "how long an agent has to accept an offer")
	grace := fs.Duration("agent-grace", 60*time.Second, "how long a disconnected agent keeps their conversations")
	capacity := fs.Int("agent-capacity", 3, "default concurrent conversations per agent")
	vipWait := fs.Duration("vip-wait", 2*time.Minute, "VIP waiting-room deadline (then supervisors are alerted)")
	premiumWait := fs.Duration("premium-wait", 5*time.Minute, "premium waiting-room deadline (then retried once)")
	standardWait := fs.Duration("standard-wait", 15*time.Minute, "standard waiting-room deadline (then closed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret, err := loadSecret(*secretFile)
	if err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	// nbio logs engine start/stop through its own global logger; keep its
	// errors only, our own logs go through observe.
	nblog.SetLevel(nblog.LevelError)
	devMode := *dev
	if !isFlagSet(fs, "dev") {
		devMode = isLoopback(*addr)
	}
	if *redisAddr != "" && *pgDSN == "" {
		return errors.New("-redis needs -postgres: the nodes of a cluster share one conversation store")
	}
	if *redisAddr != "" && len(secret) < 16 {
		return errors.New("-redis needs the same secret (≥16 bytes, SUPPORTDESK_SECRET or -secret-file) on every node")
	}
	obs, err := observe.New(observe.Config{
		LogHandler: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}),
		Sampling:   observe.SamplingConfig{Info: observe.R(1), Warn: observe.R(1)},
	})
	if err != nil {
		return err
	}
	store, where, err := openStore(*pgDSN, *dataDir)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "supportdesk: closing the conversation store:", err)
		}
	}()
	cfg := desk.Config{
		Addr: *addr, OpsAddr: *opsAddr, PublicURL: *public, NodeID: *node, Dev: devMode, Store: store,
		OfferTimeout: *offer, AgentGrace: *grace, AgentCapacity: *capacity, Observer: obs, WaitingRoomLimit: *waiting,
		LeaseTTL: *leaseTTL, NodeTTL: *nodeTTL, MaxConnsPerUser: *perUser, HandshakeRate: *hsRate,
	}
	cfg.Tiers[0].MaxWait, cfg.Tiers[1].MaxWait, cfg.Tiers[2].MaxWait = *vipWait, *premiumWait, *standardWait
	if secret != "" {
		cfg.Secret = []byte(secret)
	}
	cfg.Auth.JWKSFile, cfg.Auth.JWKSURL, cfg.Auth.Issuer, cfg.Auth.Audience = *jwksFile, *jwksURL, *issuer, *audience
	if err := setClaimNames(&cfg.Auth, *claimNames); err != nil {
		return err
	}
	var broker fanout.Broker
	if *redisAddr != "" {
		b, err := redisbroker.New(redisbroker.Config{Addr: *redisAddr, Prefix: "supportdesk", Observer: obs})
		if err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		broker = b
		cfg.Broker = b
		cfg.Leases = b
	}
	srv, err := desk.New(cfg)
	if err != nil {
		if broker != nil {
			_ = broker.Close()
		}
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	u := srv.URL()
	fmt.Printf("supportdesk node %s listening\n", srv.NodeID())
	fmt.Printf("  customer widget:  %s/\n", u)
	fmt.Printf("  agent console:    %s/agent\n", u)
	fmt.Printf("  supervisor view:  %s/supervisor\n", u)
	fmt.Printf("  websocket:        %s\n", srv.WSURL())
	fmt.Printf("  metrics/health:   %s/metrics  %s/healthz  %s/readyz\n", srv.OpsURL(), srv.OpsURL(), srv.OpsURL())
	fmt.Printf("  conversations:    %s\n", where)
	if devMode {
		fmt.Printf("  dev tokens:       POST %s/api/dev/token  {\"name\":\"Ann\",\"role\":\"customer\",\"tier\":\"vip\"}\n", u)
	}
	if *redisAddr != "" {
		fmt.Printf("  cluster:          redis %s (core on this node: %v)\n", *redisAddr, srv.IsCore())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	fmt.Println("supportdesk: draining…")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// defaultDataDir is where the embedded store lives unless -data says
// otherwise: $XDG_DATA_HOME/supportdesk, or ~/.local/share/supportdesk.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "supportdesk")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "supportdesk")
	}
	return "supportdesk-data"
}

// openStore opens PostgreSQL when dsn is set, else the embedded store in
// dir. It returns a description for the startup banner.
func openStore(dsn, dir string) (session.Repository, string, error) {
	if dsn != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		st, err := pgstore.Open(ctx, dsn, pgstore.Options{})
		if err != nil {
			return nil, "", fmt.Errorf("-postgres: %w", err)
		}
		return st, "postgres " + redactDSN(dsn), nil
	}
	st, err := embedded.Open(dir, embedded.Options{})
	if err != nil {
		return nil, "", fmt.Errorf("-data %s: %w", dir, err)
	}
	return st, "embedded store in " + dir, nil
}

// redactDSN hides a password in a DSN for printing.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	return u.Redacted()
}

// setClaimNames applies -jwt-claims.
func setClaimNames(c *auth.Config, spec string) error {
	if spec == "" {
		return nil
	}
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return fmt.Errorf("-jwt-claims: %q is not key=name", kv)
		}
		switch k {
		case "sub":
			c.UserIDClaim = v
		case "name":
			c.NameClaim = v
		case "role":
			c.RoleClaim = v
		case "tier":
			c.TierClaim = v
		case "skills":
			c.SkillsClaim = v
		case "cap":
			c.CapacityClaim = v
		default:
			return fmt.Errorf("-jwt-claims: unknown key %q (sub, name, role, tier, skills, cap)", k)
		}
	}
	return nil
}

// loadSecret reads the token secret from path, or from SUPPORTDESK_SECRET
// when path is empty; surrounding whitespace is dropped.
func loadSecret(path string) (string, error) {
	if path == "" {
		return strings.TrimSpace(os.Getenv("SUPPORTDESK_SECRET")), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("-secret-file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 16 {
		return "", fmt.Errorf("-secret-file %s: the secret must be at least 16 bytes", path)
	}
	return s, nil
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
