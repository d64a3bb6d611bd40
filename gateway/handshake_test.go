package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// dialStatus dials url and returns the HTTP status of a refused handshake
// with its Retry-After header and body; 101 when it was upgraded (the
// connection is closed at test cleanup).
func dialStatus(t *testing.T, url string) (status int, retryAfter, body string) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err == nil {
		_ = resp.Body.Close()
		t.Cleanup(func() { _ = ws.Close() })
		return http.StatusSwitchingProtocols, "", ""
	}
	require.ErrorIs(t, err, websocket.ErrBadHandshake)
	require.NotNil(t, resp)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	assert.True(t, resp.Close, "refused connections are not kept alive (Connection: close)")
	return resp.StatusCode, resp.Header.Get("Retry-After"), strings.TrimSpace(string(b))
}

// Over Config.HandshakeRate for its address a client is answered 429 with
// Retry-After, before anything else runs; the bucket refills with time
// (real time here: one token every 2s; the bucket's arithmetic is tested
// in a synctest bubble, TestIPLimiterBucket).
func TestHandshakeRatePerIP429(t *testing.T) {
	var authCalls atomic.Int32
	h := start(t, Config{HandshakeRate: 0.5, HandshakeBurst: 3,
		Authenticate: func(*http.Request) (Identity, error) { authCalls.Add(1); return Identity{}, nil }})
	first := time.Now()
	for i := range 3 {
		status, _, _ := dialStatus(t, h.url)
		require.Equal(t, http.StatusSwitchingProtocols, status, "handshake %d within the burst", i)
	}
	status, retry, body := dialStatus(t, h.url)
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, "2", retry, "one token every 2s")
	assert.Equal(t, ErrHandshakeRate.Error(), body)
	assert.Equal(t, int32(3), authCalls.Load(), "Authenticate does not run for a refused handshake")

	// One token back 2s after the bucket was full (a refused handshake
	// takes none), not sooner.
	require.Eventually(t, func() bool {
		status, _, _ := dialStatus(t, h.url)
		return status == http.StatusSwitchingProtocols
	}, 5*time.Second, 100*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(first), 1900*time.Millisecond, "refilled too soon")
	status, _, _ = dialStatus(t, h.url)
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Equal(t, 1, h.g.ips.len(), "one client address tracked")
}

// Config.MaxConnsPerUser bounds the connections of one UserID (429 after
// Authenticate, before the upgrade); a slot frees when one closes.
// Anonymous connections are not counted.
func TestMaxConnsPerUser429(t *testing.T) {
	h := start(t, Config{MaxConnsPerUser: 2, Authenticate: func(r *http.Request) (Identity, error) {
		return Identity{UserID: r.URL.Query().Get("u")}, nil
	}})
	alice := h.url + "?u=alice"
	ws1, _, err := websocket.DefaultDialer.Dial(alice, nil)
	require.NoError(t, err)
	defer ws1.Close()
	h.nextOpen()
	status, _, _ := dialStatus(t, alice)
	require.Equal(t, http.StatusSwitchingProtocols, status)
	h.nextOpen()

	status, retry, body := dialStatus(t, alice)
	assert.Equal(t, http.StatusTooManyRequests, status)
	assert.Empty(t, retry)
	assert.Equal(t, ErrUserConns.Error(), body)
	assert.Len(t, h.g.UserConns("alice"), 2)

	status, _, _ = dialStatus(t, h.url+"?u=bob") // another user
	assert.Equal(t, http.StatusSwitchingProtocols, status)
	h.nextOpen()
	for range 3 { // anonymous
		status, _, _ = dialStatus(t, h.url)
		assert.Equal(t, http.StatusSwitchingProtocols, status)
		h.nextOpen()
	}

	require.NoError(t, ws1.Close())
	h.nextClose()
	status, _, _ = dialStatus(t, alice)
	assert.Equal(t, http.StatusSwitchingProtocols, status, "the closed connection's slot is free again")
}

// The per-IP limiter's table stays bounded whatever the number of client
// addresses, forgets idle addresses and groups IPv6 addresses by /64.
func TestIPLimiterBounded(t *testing.T) {
	const capacity = 1024
	l := newIPLimiter(1, 2, capacity) // an empty bucket refills in 2s
	now := int64(1_700_000_000e9)
	for i := range 100_000 {
		ok, _ := l.allow(fmt.Sprintf("10.%d.%d.%d:1234", i>>16&255, i>>8&255, i&255), now)
		require.True(t, ok)
	}
	assert.LessOrEqual(t, l.len(), capacity)
	assert.Positive(t, l.len())

	// Addresses in one IPv6 /64 share a bucket; IPv4-mapped ones are IPv4.
	for _, a := range []string{"[2001:db8:1:2::1]:1", "[2001:db8:1:2:ffff::9]:2"} {
		ok, _ := l.allow(a, now)
		assert.True(t, ok, a)
	}
	ok, retry := l.allow("[2001:db8:1:2::77]:3", now)
	assert.False(t, ok)
	assert.Equal(t, int64(1), retry)
	ok, _ = l.allow("[2001:db8:1:3::1]:1", now) // another /64
	assert.True(t, ok)
	l.allow("[::ffff:192.0.2.1]:1", now)
	l.allow("192.0.2.1:2", now)
	ok, _ = l.allow("192.0.2.1:3", now)
	assert.False(t, ok, "IPv4-mapped IPv6 is the same client")
	ok, _ = l.allow("not an address", now)
	assert.True(t, ok)

	l.evictIdle(now + 1e9) // not idle yet
	assert.Positive(t, l.len())
	l.evictIdle(now + 2e9) // all buckets full again: forgotten
	assert.Zero(t, l.len())
}
