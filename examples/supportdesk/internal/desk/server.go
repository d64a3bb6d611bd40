package desk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bytedance/sonic"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/gateway"
	"github.com/switchboard-go/switchboard/observe/opshttp"
	"github.com/switchboard-go/switchboard/router"
	"github.com/switchboard-go/switchboard/session"
)

// Server is one supportdesk node: gateway, edge, and (on the elected node)
// the core.
type Server struct {
	cfg    Config
	log    *slog.Logger
	signer *auth.Verifier
	bus    *fanout.Bus
	gw     *gateway.Gateway
	edge   *edge
	data   *dataPlane
	ring   *router.Ring
	ops    *http.Server
	opsLn  net.Listener

	mu      sync.Mutex
	core    *core
	live    map[string]bool // nodes in the cluster's presence
	started time.Time
	url     string

	// cluster loop state (its goroutine only, but cutOff)
	lastBeat   time.Time
	renewed    time.Time
	freeRounds int
	cutOff     atomic.Bool
	fenced     chan struct{} // a core write was fenced

	// ctx bounds the node's own background work (cluster loop, core, data
	// plane); Shutdown cancels it.
	ctx    context.Context
	cancel context.CancelFunc

	stop     chan struct{}
	loopDone chan struct{}
	shutOnce sync.Once
	shutErr  error
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// New builds a server from cfg; Start runs it.
func New(cfg Config) (*Server, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node-" + randomHex(4)
	}
	if cfg.Secret == nil {
		cfg.Secret = []byte(randomHex(32))
	}
	s := &Server{cfg: cfg, log: cfg.Observer.Logger().With("node", cfg.NodeID), stop: make(chan struct{}), loopDone: make(chan struct{}), fenced: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	var err error
	ac := cfg.Auth
	ac.HMACSecret = cfg.Secret
	if ac.OnRefreshError == nil {
		ac.OnRefreshError = func(err error) { s.log.Warn("JWKS refresh failed; the previous keys stay in use", "err", err) }
	}
	if cfg.Dev && (ac.JWKSFile != "" || ac.JWKSURL != "") && len(ac.Algorithms) == 0 {
		ac.Algorithms = []string{auth.AlgHS256, auth.AlgRS256, auth.AlgES256, auth.AlgEdDSA}
	}
	if s.signer, err = auth.NewVerifier(ac); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	if s.ring, err = router.NewRing(router.RingConfig{Name: "nodes", Observer: cfg.Observer}); err != nil {
		return nil, err
	}
	s.bus, err = fanout.New(fanout.Config{Broker: cfg.Broker, NodeID: cfg.NodeID, Observer: cfg.Observer, OnDisconnect: s.onBusDisconnect})
	if err != nil {
		return nil, err
	}
	s.data = newDataPlane(s.ctx, cfg.NodeID, cfg.Store, s.bus, &s.cfg, s.log.With("component", "desk-data"))
	s.edge = newEdge(s.ctx, cfg.NodeID, s.bus, s.data, &s.cfg, s.log.With("component", "desk-edge"))
	s.data.report = s.edge.toCore
	s.gw, err = gateway.New(gateway.Config{
		Name:            "supportdesk-" + cfg.NodeID,
		Addrs:           []string{cfg.Addr},
		Handler:         s.routes(),
		Authenticate:    s.authenticate,
		AllowedOrigins:  []string{"*"},
		IdleTimeout:     cfg.IdleTimeout,
		PingInterval:    cfg.PingInterval,
		MaxMessageSize:  64 << 10,
		RateLimit:       gateway.RateLimit{PerSecond: 50, Burst: 100},
		MaxConnsPerUser: cfg.MaxConnsPerUser,
		HandshakeRate:   cfg.HandshakeRate,
		HandshakeBurst:  int(2 * cfg.HandshakeRate),
		OnOpen:          s.edge.onOpen,
		OnMessage:       s.edge.onMessage,
		OnClose:         func(c *gateway.Conn, _ int, _ string) { s.edge.onClose(c) },
		Observer:        cfg.Observer,
	})
	if err != nil {
		_ = s.bus.Close()
		return nil, err
	}
	s.edge.gw = s.gw
	s.data.gw = s.gw
	cfg.Observer.AddReadyCheck("store", func(ctx context.Context) error { return cfg.Store.Ping(ctx) })
	cfg.Observer.AddReadyCheck("cluster", func(context.Context) error {
		if s.cutOff.Load() {
			return errors.New("cut off from the cluster (Redis unreachable)")
		}
		return nil
	})
	return s, nil
}

// Start binds the listeners, elects or starts the core, and returns.
func (s *Server) Start() error {
	s.started = time.Now()
	if err := s.start(); err != nil {
		s.cancel()
		close(s.loopDone)
		_ = s.gw.Shutdown(context.Background())
		if s.ops != nil {
			_ = s.ops.Close()
		}
		return err
	}
	return nil
}

func (s *Server) start() error {
	if err := s.gw.Start(); err != nil {
		return err
	}
	addr := s.gw.Addrs()[0].String()
	s.url = s.cfg.PublicURL
	if s.url == "" {
		s.url = "http://" + addr
	}
	// The ops endpoints (pprof, metrics) are never served on the public
	// listener: they get their own, on loopback unless OpsAddr says otherwise.
	ln, err := net.Listen("tcp", s.cfg.OpsAddr)
	if err != nil {
		return fmt.Errorf("ops listener: %w", err)
	}
	s.opsLn = ln
	s.ops = &http.Server{Handler: opshttp.Handler(s.cfg.Observer), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.ops.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ops listener stopped", "err", err)
		}
	}()
	if err := s.edge.start(); err != nil {
		return err
	}
	if s.cfg.Broker == nil {
		if err := s.ring.SetMembers([]router.Node{{ID: s.cfg.NodeID, Addr: s.url}}); err != nil {
			return err
		}
		// One node owns the partition without a lease or fencing token.
		if err := s.startCore(session.Fence{}); err != nil {
			return err
		}
		go s.singleLoop()
		return nil
	}
	if s.cfg.Leases == nil {
		return fmt.Errorf("%w: a cluster (Broker) needs Leases", ErrInvalidConfig)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.NodeTTL)
	_, err = s.heartbeat(ctx)
	cancel()
	if err != nil {
		return err
	}
	s.lastBeat = time.Now()
	go s.clusterLoop()
	return nil
}

// onBusDisconnect restores subscriptions the bus closed by itself.
func (s *Server) onBusDisconnect(sub *fanout.Subscription, reason error) {
	if sub.Topic() == topicCore {
		s.mu.Lock()
		c := s.core
		s.mu.Unlock()
		if c != nil && !errors.Is(reason, fanout.ErrShutdown) {
			go c.restoreSubscription()
		}
		return
	}
	s.edge.onBusDisconnect(sub, reason)
}

// singleLoop retries unanswered commands on a single node.
func (s *Server) singleLoop() {
	defer close(s.loopDone)
	t := time.NewTicker(s.cfg.ClusterTick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.edge.retryPending(time.Now())
		}
	}
}

// URL is the node's base URL (pages and API); the WebSocket endpoint is URL
// with ws:// and path /ws.
func (s *Server) URL() string { return s.url }

// OpsURL is the base URL of the ops endpoints (their own listener).
func (s *Server) OpsURL() string {
	if s.opsLn != nil {
		return "http://" + s.opsLn.Addr().String()
	}
	return ""
}

// WSURL is the WebSocket endpoint.
func (s *Server) WSURL() string {
	return "ws" + strings.TrimPrefix(s.url, "http") + gateway.DefaultPath
}

// NodeID returns the node's ID.
func (s *Server) NodeID() string { return s.cfg.NodeID }

// IsCore reports whether this node runs the core.
func (s *Server) IsCore() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.core != nil
}

// Token signs claims with the server's secret (tests and the dev endpoint).
func (s *Server) Token(c auth.Claims) (string, error) { return s.signer.Sign(c) }

func (s *Server) startCore(f session.Fence) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.core != nil {
		return nil
	}
	onFenced := func() {
		select {
		case s.fenced <- struct{}{}:
		default:
		}
	}
	c, err := newCore(s.ctx, &s.cfg, s.bus, s.cfg.Store, s.data, f, onFenced, s.isLive)
	if err != nil {
		return err
	}
	s.core = c
	s.log.Info("core started", "fence", f.Token)
	return nil
}

// Shutdown drains the gateway (1001 to every client, in batches), stops the
// core and the bus, and returns when everything is released or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		var errs []error
		if err := s.gw.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		close(s.stop)
		close(s.edge.stopped)
		s.edge.restoring.Wait()
		if !s.started.IsZero() {
			<-s.loopDone
		}
		s.data.close()
		if s.cfg.Broker != nil {
			_ = s.bus.Leave(ctx, topicNodes, s.cfg.NodeID)
		}
		// Hand the partition over at once (the lease is released).
		s.stopCore("shutting down")
		if err := s.bus.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		_ = s.ring.Close()
		s.cfg.Observer.RemoveReadyCheck("store")
		s.cfg.Observer.RemoveReadyCheck("cluster")
		if err := s.signer.Close(); err != nil {
			errs = append(errs, err)
		}
		if s.ops != nil {
			if err := s.ops.Shutdown(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		s.cancel()
		s.shutErr = errors.Join(errs...)
	})
	return s.shutErr
}

// authenticate reads the token from the "token" query parameter or an
// Authorization: Bearer header.
func (s *Server) authenticate(r *http.Request) (gateway.Identity, error) {
	tok := r.URL.Query().Get("token")
	if tok == "" {
		tok = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	if tok == "" {
		return gateway.Identity{}, errors.New("missing token")
	}
	c, err := s.signer.Verify(tok)
	if err != nil {
		return gateway.Identity{}, err
	}
	return gateway.Identity{UserID: c.UserID, Role: gateway.Role(c.Role), Value: c}, nil
}

var nameRE = regexp.MustCompile(`[^a-z0-9_-]+`)

type tokenRequest struct {
	User     string   `json:"user"`
	Name     string   `json:"name"`
	Role     string   `json:"role"`
	Tier     string   `json:"tier"`
	Skills   []string `json:"skills"`
	Capacity int      `json:"capacity"`
}

type tokenResponse struct {
	Token string `json:"token"`
	User  string `json:"user"`
	Role  string `json:"role"`
	Tier  string `json:"tier,omitempty"`
	WS    string `json:"ws"`
	Node  string `json:"node"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := sonic.ConfigStd.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/dev/token", s.devToken)
	mux.HandleFunc("GET /api/route", s.route)
	mux.HandleFunc("GET /api/info", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"node": s.cfg.NodeID, "dev": s.cfg.Dev, "core": s.IsCore(), "ws": s.WSURL()})
	})
	mountPages(mux)
	return mux
}

// devToken issues a token for any user (dev mode only).
func (s *Server) devToken(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Dev {
		http.Error(w, "dev tokens are disabled (start with -dev)", http.StatusNotFound)
		return
	}
	var req tokenRequest
	body := http.MaxBytesReader(w, r.Body, 4096)
	if err := sonic.ConfigStd.NewDecoder(body).Decode(&req); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.Role == "" {
		req.Role = auth.RoleCustomer
	}
	if req.User == "" {
		slug := nameRE.ReplaceAllString(strings.ToLower(req.Name), "-")
		if slug == "" || slug == "-" {
			slug = randomHex(4)
		}
		req.User = req.Role[:1] + "-" + strings.Trim(slug, "-")
	}
	if req.Name == "" {
		req.Name = req.User
	}
	c := auth.Claims{UserID: req.User, Name: req.Name, Role: req.Role, Tier: req.Tier, Skills: req.Skills, Capacity: req.Capacity, Expires: time.Now().Add(24 * time.Hour).Unix()}
	tok, err := s.signer.Sign(c)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	_ = c.Validate()
	node, ws := s.placement(c.UserID)
	writeJSON(w, http.StatusOK, tokenResponse{Token: tok, User: c.UserID, Role: c.Role, Tier: c.Tier, WS: ws, Node: node})
}

// placement returns the node that owns user on the ring and its WebSocket URL.
func (s *Server) placement(user string) (node, ws string) {
	if n, ok := s.ring.Lookup(user); ok && n.Addr != "" {
		return n.ID, "ws" + strings.TrimPrefix(n.Addr, "http") + gateway.DefaultPath
	}
	return s.cfg.NodeID, s.WSURL()
}

// route tells a client which node to connect to (users → nodes on the ring).
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if user == "" {
		http.Error(w, "missing user", http.StatusBadRequest)
		return
	}
	node, ws := s.placement(user)
	writeJSON(w, http.StatusOK, map[string]string{"node": node, "ws": ws})
}
