package gateway

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// nbio's package-level websocket.DefaultEngine starts two task-pool
	// goroutines at init; gateways never create task pools (they bring
	// their own executor), so anything else left running is a leak.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/lesismal/nbio/taskpool.New.func3"))
}

// frozenRate is a RateLimit.PerSecond of one token a week: a bucket that
// does not refill during a test.
const frozenRate = 1.0 / (7 * 24 * 3600)

// manualSweeps makes cfg's sweeper tick once a day, so that a test runs the
// sweeps itself with sweepClock at times of its choosing (the gateway reads
// the time of its timeouts from the sweeps: see Gateway.sweep).
func manualSweeps(cfg Config) Config {
	cfg.SweepInterval = 24 * time.Hour
	return cfg
}

// sweepClock is a test's own time line for a gateway's sweeps.
type sweepClock struct {
	g   *Gateway
	now time.Time
}

func newSweepClock(g *Gateway) *sweepClock { return &sweepClock{g: g, now: time.Now()} }

// advance moves the time line forward by d and runs one sweep at its end,
// synchronously: the test knows exactly which sweeps happened.
func (s *sweepClock) advance(d time.Duration) {
	s.now = s.now.Add(d)
	s.g.sweep(s.now)
}

// closeEvent is one OnClose call.
type closeEvent struct {
	conn   *Conn
	code   int
	reason string
}

// testInline makes start turn on Config.InlineHandlers; TestInlineSuite
// sets it to re-run behaviour tests with handlers on the event loops. Tests
// in this package do not run in parallel.
var testInline bool

// harness is a started gateway on a loopback port with recorded callbacks.
type harness struct {
	t      testing.TB
	g      *Gateway
	url    string
	opened chan *Conn
	closed chan closeEvent
}

// start builds and starts a gateway; cfg's OnOpen/OnClose are wrapped to
// record events. The gateway is shut down at test cleanup.
func start(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, opened: make(chan *Conn, 1024), closed: make(chan closeEvent, 1024)}
	if cfg.Addrs == nil {
		cfg.Addrs = []string{"127.0.0.1:0"}
	}
	if cfg.HandlerWorkers == 0 {
		cfg.HandlerWorkers = 8
	}
	if testInline {
		cfg.InlineHandlers = true
	}
	userOpen, userClose := cfg.OnOpen, cfg.OnClose
	cfg.OnOpen = func(c *Conn) {
		if userOpen != nil {
			userOpen(c)
		}
		h.opened <- c
	}
	cfg.OnClose = func(c *Conn, code int, reason string) {
		if userClose != nil {
			userClose(c, code, reason)
		}
		h.closed <- closeEvent{c, code, reason}
	}
	g, err := New(cfg)
	require.NoError(t, err)
	require.NoError(t, g.Start())
	h.g = g
	if len(cfg.Addrs) > 0 {
		scheme := "ws://"
		if cfg.TLSConfig != nil {
			scheme = "wss://"
		}
		h.url = scheme + g.Addrs()[0].String() + g.cfg.Path
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, g.Shutdown(ctx))
	})
	return h
}

// dial connects a gorilla client; it fails the test on error.
func (h *harness) dial(hdr http.Header) *websocket.Conn {
	h.t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(h.url, hdr)
	require.NoError(h.t, err)
	if resp != nil && resp.Body != nil {
		_ = resp.Body.Close()
	}
	h.t.Cleanup(func() { _ = ws.Close() })
	return ws
}

// dialOpen dials and waits for the server-side OnOpen.
func (h *harness) dialOpen(hdr http.Header) (*websocket.Conn, *Conn) {
	h.t.Helper()
	ws := h.dial(hdr)
	return ws, h.nextOpen()
}

func (h *harness) nextOpen() *Conn {
	h.t.Helper()
	select {
	case c := <-h.opened:
		return c
	case <-time.After(5 * time.Second):
		h.t.Fatal("no OnOpen")
		return nil
	}
}

func (h *harness) nextClose() closeEvent {
	h.t.Helper()
	select {
	case e := <-h.closed:
		return e
	case <-time.After(5 * time.Second):
		h.t.Fatal("no OnClose")
		return closeEvent{}
	}
}

// readClose reads until the server's close frame and returns its code.
func readClose(t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		require.ErrorAs(t, err, &ce, "want a close frame")
		return ce.Code
	}
}
