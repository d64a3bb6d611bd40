package desk_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/internal/pgtest"
	"github.com/switchboard-go/switchboard/observe"
	"github.com/switchboard-go/switchboard/session/pgstore"
)

func readyz(t *testing.T, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStoreDownThenBack: with the conversation store (a real PostgreSQL)
// stopped, requests get "unavailable", nothing is acknowledged, /readyz is
// 503 naming the store; when the database comes back the server recovers by
// itself and the retried message is stored once.
func TestStoreDownThenBack(t *testing.T) {
	pg := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := pgstore.Open(ctx, pg.DSN("postgres"), pgstore.Options{WriteTimeout: 2 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, st.Close()) })
	obs, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	cfg := testConfig()
	cfg.Store = st
	cfg.Observer = obs
	cfg.StoreTimeout = 2 * time.Second
	srv := startServer(t, cfg)

	cust := dial(t, srv, customer("sd", auth.TierStandard))
	ag := dial(t, srv, agent("sa", 2))
	conv := startChat(cust, "before the outage")
	cust.expect(protocol.TypeAck, convIs(conv))
	ag.send(protocol.Envelope{Type: protocol.TypeAccept, Conv: conv, Offer: ag.expect(protocol.TypeOffer, convIs(conv)).Offer})
	cust.expect(protocol.TypeAssigned, convIs(conv))
	code, _ := readyz(t, srv.OpsURL())
	require.Equal(t, http.StatusOK, code)

	require.NoError(t, pg.Stop())
	cust.send(protocol.Envelope{Type: protocol.TypeMessage, Conv: conv, ID: "during", Text: "while the store is down"})
	e := cust.expect(protocol.TypeError, func(e protocol.Envelope) bool { return e.Ref == "message:during" })
	assert.Equal(t, protocol.ErrCodeUnavailable, e.Code)
	cust.none(protocol.TypeAck, 300*time.Millisecond)
	ag.send(protocol.Envelope{Type: protocol.TypeResolve, Conv: conv, ID: "r1"})
	e = ag.expect(protocol.TypeError, func(e protocol.Envelope) bool { return e.Ref == "resolve:r1" })
	assert.Equal(t, protocol.ErrCodeUnavailable, e.Code, "a control-plane write fails the same way")
	code, body := readyz(t, srv.OpsURL())
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.True(t, strings.Contains(body, "store"), "readyz names the store: %q", body)

	require.NoError(t, pg.Restart())
	require.Eventually(t, func() bool { c, _ := readyz(t, srv.OpsURL()); return c == http.StatusOK }, 20*time.Second, 100*time.Millisecond, "ready again without a restart")
	cust.send(protocol.Envelope{Type: protocol.TypeMessage, Conv: conv, ID: "during", Text: "while the store is down"})
	a := cust.expect(protocol.TypeAck, func(e protocol.Envelope) bool { return e.ID == "during" })
	assert.Equal(t, uint64(2), a.Offset, "stored once, right after the first message")
	m := ag.expect(protocol.TypeMessage, func(e protocol.Envelope) bool { return e.ID == "during" })
	assert.Equal(t, "while the store is down", m.Text)
}
