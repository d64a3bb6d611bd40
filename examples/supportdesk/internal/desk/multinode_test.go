package desk_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/bytedance/sonic"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/desk"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/fanout/redisbroker"
	"github.com/switchboard-go/switchboard/internal/pgtest"
	"github.com/switchboard-go/switchboard/internal/redistest"
	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/pgstore"
)

// pgStore starts a real PostgreSQL and opens the conversation store on it.
func pgStore(t *testing.T) session.Repository {
	t.Helper()
	dsn := pgtest.Start(t).DSN("postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, st.Close()) })
	return st
}

// startNode starts one node of a cluster sharing the Redis at addr and the
// PostgreSQL conversation store st.
func startNode(t *testing.T, addr string, st session.Repository, id string) *desk.Server {
	t.Helper()
	b, err := redisbroker.New(redisbroker.Config{Addr: addr, Prefix: "sd-test"})
	require.NoError(t, err)
	cfg := testConfig()
	cfg.NodeID = id
	cfg.Broker = b
	cfg.Leases = b
	cfg.Store = st
	if cfg.Observer == nil {
		cfg.Observer = testObserver(t)
	}
	cfg.NodeTTL = time.Second
	return startServer(t, cfg)
}

// TestTwoNodesOverRedis: a customer on node A and an agent on node B talk
// through a real redis-server started by the test.
func TestTwoNodesOverRedis(t *testing.T) {
	addr, _ := redistest.Start(t)
	st := pgStore(t)
	a := startNode(t, addr, st, "a")
	require.Eventually(t, a.IsCore, waitFor, 10*time.Millisecond, "the only node takes the partition's lease")
	b := startNode(t, addr, st, "b")
	cust0 := dial(t, b, customer("probe", auth.TierStandard))
	cust0.send(protocol.Envelope{Type: protocol.TypePing, ID: "p"})
	cust0.expect(protocol.TypePong)
	assert.False(t, b.IsCore(), "a second node does not take a held lease")

	cust := dial(t, a, customer("zoe", auth.TierPremium))
	ag := dial(t, b, agent("yan", 2))
	firstID := cust.say("", "hello from node A")
	conv := cust.expect(protocol.TypeQueued).Conv
	cust.expect(protocol.TypeAck, func(e protocol.Envelope) bool { return e.ID == firstID })

	o := ag.expect(protocol.TypeOffer, convIs(conv))
	ag.send(protocol.Envelope{Type: protocol.TypeAccept, Conv: conv, Offer: o.Offer})
	as := ag.expect(protocol.TypeAssigned, convIs(conv))
	require.GreaterOrEqual(t, as.Offset, uint64(1))
	cust.expect(protocol.TypeAssigned, convIs(conv))

	// The agent on B recovers the customer's first message from the shared history.
	ag.send(protocol.Envelope{Type: protocol.TypeResume, Conv: conv})
	first := ag.expect(protocol.TypeMessage, convIs(conv))
	assert.Equal(t, "hello from node A", first.Text)

	id := ag.say(conv, "hi from node B")
	got := cust.expect(protocol.TypeMessage, func(e protocol.Envelope) bool { return e.ID == id })
	assert.Equal(t, "yan", got.From)
	id2 := cust.say(conv, "thanks")
	back := ag.expect(protocol.TypeMessage, func(e protocol.Envelope) bool { return e.ID == id2 })
	assert.Equal(t, got.Offset+1, back.Offset)

	cust.send(protocol.Envelope{Type: protocol.TypeTyping, Conv: conv, State: "on"})
	ag.expect(protocol.TypeTyping, func(e protocol.Envelope) bool { return e.From == "zoe" })

	// Both nodes are on the ring: /api/route places users on one of them.
	resp, err := http.Get(a.URL() + "/api/route?user=someone")
	require.NoError(t, err)
	var route map[string]string
	require.NoError(t, sonic.ConfigStd.NewDecoder(resp.Body).Decode(&route))
	_ = resp.Body.Close()
	assert.Contains(t, []string{"a", "b"}, route["node"])
	seen := map[string]bool{}
	for _, u := range []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"} {
		r, err := http.Get(b.URL() + "/api/route?user=" + u)
		require.NoError(t, err)
		var m map[string]string
		require.NoError(t, sonic.ConfigStd.NewDecoder(r.Body).Decode(&m))
		_ = r.Body.Close()
		seen[m["node"]] = true
	}
	assert.Len(t, seen, 2, "users are spread over both nodes")

	ag.send(protocol.Envelope{Type: protocol.TypeResolve, Conv: conv})
	cust.expect(protocol.TypeResolved, convIs(conv))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, b.Shutdown(ctx))
}
