package desk_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/observe"
)

// lockedBuffer is a concurrency-safe log sink.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestTraceparentCarriedIntoLogsAndMetricsServed(t *testing.T) {
	var logs lockedBuffer
	obs, err := observe.New(observe.Config{
		LogHandler: slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}),
		Sampling:   observe.SamplingConfig{Disabled: true},
	})
	require.NoError(t, err)
	cfg := testConfig()
	cfg.Observer = obs
	srv := startServer(t, cfg)
	cust := dial(t, srv, customer("tr", auth.TierStandard))
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	cust.send(protocol.Envelope{Type: protocol.TypeMessage, ID: "t1", Text: "traced", Traceparent: tp})
	m := cust.expect(protocol.TypeMessage, func(e protocol.Envelope) bool { return e.ID == "t1" })
	assert.Equal(t, tp, m.Traceparent, "trace context travels with the message")
	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), `"trace_id":"0af7651916cd43dd8448eb211c80319c"`)
	}, waitFor, 10*time.Millisecond, "the core logs the message with the client's trace ID")

	// The ops endpoints are never on the public listener.
	for _, p := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/cmdline", "/debug/vars", "/readyz"} {
		resp, err := http.Get(srv.URL() + p)
		require.NoError(t, err)
		_ = resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "public %s", p)
	}
	ops, err := url.Parse(srv.OpsURL())
	require.NoError(t, err)
	assert.True(t, net.ParseIP(ops.Hostname()).IsLoopback(), "ops listener binds loopback by default: %s", srv.OpsURL())
	resp, err := http.Get(srv.OpsURL() + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, name := range []string{"switchboard_gateway_connections", "switchboard_queue_depth", "switchboard_fanout_publications_total", "switchboard_desk_conversations_total", "go_sched_latencies_seconds_bucket"} {
		assert.Contains(t, string(body), name)
	}
	resp, err = http.Get(srv.OpsURL() + "/readyz")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

// TestNextResponseSLA checks a next-response breach over real sockets; its
// exact times, and that the first-response clock stopped, are proven in a
// synctest bubble (TestNextResponseSLAFiresAtDueTimes).
func TestNextResponseSLA(t *testing.T) {
	cfg := testConfig()
	cfg.Tiers[1].NextResponse = 150 * time.Millisecond
	srv := startServer(t, cfg)
	sup := dial(t, srv, auth.Claims{UserID: "boss", Role: auth.RoleSupervisor})
	cust := dial(t, srv, customer("nr", auth.TierPremium))
	conv := startChat(cust, "q1")
	ag := dial(t, srv, agent("na", 1))
	acceptNext(ag)
	ag.say(conv, "answer 1") // first response: the first-response clock stops
	cust.expect(protocol.TypeMessage, func(e protocol.Envelope) bool { return e.Text == "answer 1" })
	cust.say(conv, "follow-up") // starts the next-response clock
	b := sup.expect(protocol.TypeSLA, convIs(conv), func(e protocol.Envelope) bool { return e.State == "breached" })
	assert.Equal(t, "next_response", b.Kind)
	assert.Equal(t, "premium", b.Tier)
	assert.Equal(t, "na", b.Agent)
	// No first-response event: it was answered in time.
	for _, e := range sup.seen {
		if e.Type == protocol.TypeSLA {
			assert.NotEqual(t, "first_response", e.Kind)
		}
	}
}

// TestAgentReconnectKeepsConversation: an agent who reconnects within the
// grace period (testConfig's 5s, far longer than a reconnect) finds the
// conversation in hello. That it stays theirs past the deadline, and exact
// deadlines, are proven in a synctest bubble
// (TestAgentGraceKeepsOrRequeuesAtDeadline).
func TestAgentReconnectKeepsConversation(t *testing.T) {
	srv := startServer(t, testConfig())
	cust := dial(t, srv, customer("gc", auth.TierStandard))
	conv := startChat(cust, "help")
	a1 := dial(t, srv, agent("g1", 1))
	acceptNext(a1)
	a1.hangup()
	a1 = dial(t, srv, agent("g1", 1))
	require.Len(t, a1.hello.Convs, 1)
	assert.Equal(t, conv, a1.hello.Convs[0].Conv)
	assert.Equal(t, "active", a1.hello.Convs[0].State)
}

// TestAgentGraceThenRequeueAtFront: an agent who does not come back loses
// the conversation when the grace period ends, and it goes to the front of
// its tier. Nothing here depends on how long a step takes: the later
// customer is queued before the agent leaves.
func TestAgentGraceThenRequeueAtFront(t *testing.T) {
	cfg := testConfig()
	cfg.AgentGrace = 300 * time.Millisecond
	srv := startServer(t, cfg)
	cust := dial(t, srv, customer("gc", auth.TierStandard))
	conv := startChat(cust, "help")
	a1 := dial(t, srv, agent("g1", 1))
	acceptNext(a1)

	// Another customer waits; then the agent leaves for good.
	late := dial(t, srv, customer("later", auth.TierStandard))
	lateConv := startChat(late, "me too")
	a1.hangup()
	cust.expect(protocol.TypeTransferred, func(e protocol.Envelope) bool { return e.State == "queued" })
	// The requeued conversation is at the front of its tier, ahead of the
	// one that arrived after it.
	a2 := dial(t, srv, agent("g2", 1))
	assert.Equal(t, conv, acceptNext(a2))
	a2.send(protocol.Envelope{Type: protocol.TypeResolve, Conv: conv})
	assert.Equal(t, lateConv, acceptNext(a2))
}

func TestShutdownDrainsClientsWith1001(t *testing.T) {
	srv := startServer(t, testConfig())
	c := dial(t, srv, customer("dr", auth.TierStandard))
	ag := dial(t, srv, agent("dra", 1))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx))
	for _, cl := range []*client{c, ag} {
		select {
		case err := <-cl.close:
			var ce *websocket.CloseError
			require.True(t, errors.As(err, &ce), "got %v", err)
			assert.Equal(t, websocket.CloseGoingAway, ce.Code)
		case <-time.After(waitFor):
			t.Fatal("client not closed by Shutdown")
		}
	}
}
