package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/switchboard-go/switchboard/observe"
)

func echo(c *Conn, typ MessageType, data []byte) { _ = c.Send(typ, data) }

func TestEcho(t *testing.T) {
	var order atomic.Int32 // 1 after OnOpen; OnMessage must see it
	h := start(t, Config{
		OnOpen: func(c *Conn) { order.Store(1) },
		OnMessage: func(c *Conn, typ MessageType, data []byte) {
			if order.Load() != 1 {
				_ = c.Send(TextMessage, []byte("message before open"))
				return
			}
			echo(c, typ, data)
		},
		Subprotocols: []string{"switchboard.v1"},
	})
	d := websocket.Dialer{Subprotocols: []string{"other", "switchboard.v1"}}
	ws, resp, err := d.Dial(h.url, nil)
	require.NoError(t, err)
	defer ws.Close()
	_ = resp.Body.Close()
	assert.Equal(t, "switchboard.v1", ws.Subprotocol())
	c := h.nextOpen()
	assert.Equal(t, "switchboard.v1", c.Subprotocol())
	assert.NotZero(t, c.ID())
	assert.NotNil(t, c.RemoteAddr())

	msgs := []struct {
		typ  int
		data string
	}{{websocket.TextMessage, "hello"}, {websocket.BinaryMessage, "\x00\x01\xff"}, {websocket.TextMessage, strings.Repeat("é", 100)}}
	for i := range 200 {
		msgs = append(msgs, struct {
			typ  int
			data string
		}{websocket.TextMessage, fmt.Sprint(i)})
	}
	for _, m := range msgs {
		require.NoError(t, ws.WriteMessage(m.typ, []byte(m.data)))
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, m := range msgs { // per-connection order is preserved
		typ, data, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, m.typ, typ)
		assert.Equal(t, m.data, string(data))
	}
	require.NoError(t, ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye")))
	e := h.nextClose()
	assert.Equal(t, CloseNormal, e.code)
	assert.Equal(t, "bye", e.reason)
	assert.Same(t, c, e.conn)
	require.Eventually(t, func() bool { return h.g.Len() == 0 }, 5*time.Second, time.Millisecond)
}

func TestLargeEcho(t *testing.T) {
	h := start(t, Config{OnMessage: echo, MaxMessageSize: 1 << 20})
	ws := h.dial(nil)
	big := []byte(strings.Repeat("0123456789", 20_000))
	require.NoError(t, ws.WriteMessage(websocket.BinaryMessage, big))
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := ws.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, big, data)
}

func TestAuthReject(t *testing.T) {
	h := start(t, Config{
		Authenticate: func(r *http.Request) (Identity, error) {
			switch r.URL.Query().Get("token") {
			case "good":
				return Identity{UserID: "u1", Role: RoleAgent, Attrs: map[string]string{"tier": "vip"}}, nil
			case "banned":
				return Identity{}, fmt.Errorf("user banned: %w", ErrForbidden)
			}
			return Identity{}, errors.New("bad token")
		},
	})
	for _, tc := range []struct {
		token  string
		status int
	}{{"bad", http.StatusUnauthorized}, {"", http.StatusUnauthorized}, {"banned", http.StatusForbidden}} {
		_, resp, err := websocket.DefaultDialer.Dial(h.url+"?token="+tc.token, nil)
		require.ErrorIs(t, err, websocket.ErrBadHandshake, tc.token)
		require.NotNil(t, resp)
		assert.Equal(t, tc.status, resp.StatusCode, tc.token)
		_ = resp.Body.Close()
	}
	assert.Equal(t, 0, h.g.Len())
	ws, resp, err := websocket.DefaultDialer.Dial(h.url+"?token=good", nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	defer ws.Close()
	c := h.nextOpen()
	assert.Equal(t, "u1", c.Identity().UserID)
	assert.Equal(t, "vip", c.Identity().Attrs["tier"])
	assert.Equal(t, 1, h.g.Count(RoleAgent))
	assert.Equal(t, 0, h.g.Count(RoleCustomer))
}

func TestOriginCheck(t *testing.T) {
	h := start(t, Config{AllowedOrigins: []string{"https://app.example.com", "https://*.support.example"}})
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"https://app.example.com", true},
		{"HTTPS://APP.EXAMPLE.COM", true},
		{"https://eu.support.example", true},
		{"https://evil.com", false},
		{"https://support.example", false},
		{"https://x.evil.com/.support.example", false},
		{"http://app.example.com", false},
		{"", true}, // non-browser clients send no Origin
	} {
		hdr := http.Header{}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		ws, resp, err := websocket.DefaultDialer.Dial(h.url, hdr)
		if tc.ok {
			require.NoError(t, err, tc.origin)
			_ = ws.Close()
		} else {
			require.Error(t, err, tc.origin)
			assert.Equal(t, http.StatusForbidden, resp.StatusCode, tc.origin)
		}
		if resp != nil {
			_ = resp.Body.Close()
		}
	}

	same := start(t, Config{}) // default: same origin only
	hdr := http.Header{"Origin": {"http://" + same.g.Addrs()[0].String()}}
	ws, resp, err := websocket.DefaultDialer.Dial(same.url, hdr)
	require.NoError(t, err)
	_ = resp.Body.Close()
	_ = ws.Close()
	_, resp, err = websocket.DefaultDialer.Dial(same.url, http.Header{"Origin": {"http://elsewhere"}})
	require.Error(t, err)
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)
	_ = resp.Body.Close()
}

func TestMaxConns503(t *testing.T) {
	h := start(t, Config{MaxConns: 2})
	h.dialOpen(nil)
	ws2, _ := h.dialOpen(nil)
	_, resp, err := websocket.DefaultDialer.Dial(h.url, nil)
	require.Error(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	_ = resp.Body.Close()
	assert.Equal(t, 2, h.g.Len())

	_ = ws2.Close() // a slot frees up when a connection closes
	h.nextClose()
	h.dialOpen(nil)
}

func TestMessageTooBig1009(t *testing.T) {
	h := start(t, Config{MaxMessageSize: 1024, OnMessage: echo})
	ws, _ := h.dialOpen(nil)
	require.NoError(t, ws.WriteMessage(websocket.BinaryMessage, make([]byte, 1024))) // at the limit: fine
	_, _, err := ws.ReadMessage()
	require.NoError(t, err)
	require.NoError(t, ws.WriteMessage(websocket.BinaryMessage, make([]byte, 1025)))
	assert.Equal(t, CloseMessageTooBig, readClose(t, ws))
	assert.Equal(t, CloseMessageTooBig, h.nextClose().code)
}

func TestInvalidUTF8_1007(t *testing.T) {
	var got atomic.Int32
	h := start(t, Config{OnMessage: func(*Conn, MessageType, []byte) { got.Add(1) }})
	ws, _ := h.dialOpen(nil)
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte{0xff, 0xfe, 'a'}))
	assert.Equal(t, CloseInvalidPayload, readClose(t, ws))
	assert.Equal(t, CloseInvalidPayload, h.nextClose().code)
	assert.Zero(t, got.Load(), "invalid text must not reach OnMessage")
}

func TestRateLimit(t *testing.T) {
	t.Run("close 1008", func(t *testing.T) {
		var got atomic.Int32
		h := start(t, Config{RateLimit: RateLimit{PerSecond: frozenRate, Burst: 5},
			OnMessage: func(*Conn, MessageType, []byte) { got.Add(1) }})
		ws, _ := h.dialOpen(nil)
		for range 6 {
			require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("m")))
		}
		assert.Equal(t, ClosePolicyViolation, readClose(t, ws))
		assert.Equal(t, ClosePolicyViolation, h.nextClose().code)
		assert.Equal(t, int32(5), got.Load())
	})
	t.Run("drop and report", func(t *testing.T) {
		// Real time: a token every 250ms. The five messages go in one
		// write, so they are checked in one read, microseconds apart.
		var dropped atomic.Int32
		h := start(t, Config{
			RateLimit: RateLimit{PerSecond: 4, Burst: 2, Policy: RateDrop, OnDrop: func(*Conn) { dropped.Add(1) }},
			OnMessage: echo})
		ws, _ := h.dialOpen(nil)
		var five []byte
		for i := range 5 {
			five = append(five, maskedFrame(0x81, []byte(fmt.Sprint(i)))...)
		}
		_, err := ws.NetConn().Write(five)
		require.NoError(t, err)
		echoes := make(chan string, 64)
		go func() {
			defer close(echoes)
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return
				}
				echoes <- string(data)
			}
		}()
		require.Eventually(t, func() bool { return dropped.Load() == 3 }, 5*time.Second, time.Millisecond)
		for _, want := range []string{"0", "1"} {
			assert.Equal(t, want, <-echoes)
		}
		// The bucket refills with time: a message is admitted again
		// within a few token periods, and the drops before it were
		// reported, not delivered.
		deadline := time.Now().Add(5 * time.Second)
		for got := ""; got == ""; {
			require.True(t, time.Now().Before(deadline), "the bucket never refilled")
			require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("later")))
			select {
			case got = <-echoes:
				assert.Equal(t, "later", got)
			case <-time.After(100 * time.Millisecond):
			}
		}
		assert.GreaterOrEqual(t, dropped.Load(), int32(3))
	})
}

func TestSlowConsumerDisconnected(t *testing.T) {
	h := start(t, Config{MaxOutgoingBytes: 256 << 10})
	_, slow := h.dialOpen(nil) // never reads
	fastWS, fast := h.dialOpen(nil)

	pm, err := NewPreparedMessage(BinaryMessage, make([]byte, 64<<10))
	require.NoError(t, err)
	received := make(chan struct{}, 1)
	done := make(chan int, 1)
	go func() {
		n := 0
		_ = fastWS.SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, _, err := fastWS.ReadMessage(); err != nil {
				done <- n
				return
			}
			n++
			received <- struct{}{}
		}
	}()
	fastSent := 0
	for i := 0; slow.Open(); i++ {
		require.Less(t, i, 10_000, "slow consumer never disconnected")
		err := slow.SendPrepared(pm)
		if err != nil {
			require.ErrorIs(t, err, ErrSlowConsumer)
		}
		require.NoError(t, fast.SendPrepared(pm))
		fastSent++
		<-received // the fast reader keeps up
	}
	e := h.nextClose()
	assert.Equal(t, CloseSlowConsumer, e.code)
	assert.Same(t, slow, e.conn)
	assert.True(t, fast.Open(), "the fast reader keeps its connection")
	assert.ErrorIs(t, slow.SendPrepared(pm), ErrClosed)
	// The fast reader keeps receiving after the slow one is gone.
	for range 10 {
		require.NoError(t, fast.SendPrepared(pm))
		fastSent++
		<-received
	}
	require.NoError(t, fast.Close(CloseNormal, "done"))
	assert.Equal(t, fastSent, <-done)
}

func TestIdleReaping(t *testing.T) {
	h := start(t, manualSweeps(Config{PingInterval: 10 * time.Second, IdleTimeout: 30 * time.Second,
		CloseGracePeriod: 200 * time.Millisecond}))
	clk := newSweepClock(h.g)
	ws, c := h.dialOpen(nil) // gorilla answers pings only while reading: it stops answering
	var pings atomic.Int32
	ws.SetPingHandler(func(string) error { pings.Add(1); return nil }) // reads, but never pongs

	// The sweeper leaves a connection silent for less than PingInterval alone...
	opened := c.lastPing.Load()
	clk.advance(9 * time.Second)
	assert.Equal(t, opened, c.lastPing.Load(), "pinged before PingInterval")
	// ...pings it once it is silent for longer...
	clk.advance(2 * time.Second)
	go func() { _, _, _ = ws.ReadMessage() }()
	require.Eventually(t, func() bool { return pings.Load() >= 1 }, 5*time.Second, time.Millisecond)
	assert.True(t, c.Open())
	// ...and reaps it when nothing (no pong) came back within IdleTimeout.
	clk.advance(10 * time.Second)
	assert.True(t, c.Open(), "reaped before IdleTimeout")
	clk.advance(10 * time.Second)
	e := h.nextClose()
	assert.Equal(t, CloseIdleTimeout, e.code)
}

func TestPongKeepsAlive(t *testing.T) {
	h := start(t, manualSweeps(Config{PingInterval: 10 * time.Second, IdleTimeout: 30 * time.Second}))
	clk := newSweepClock(h.g)
	ws, c := h.dialOpen(nil)
	var pings atomic.Int32
	ws.SetPingHandler(func(s string) error {
		pings.Add(1)
		return ws.WriteControl(websocket.PongMessage, []byte(s), time.Now().Add(time.Second))
	})
	go func() {
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for i := range 6 { // 66 s of sweep time, well past IdleTimeout
		clk.advance(11 * time.Second)
		require.Eventually(t, func() bool { return pings.Load() >= int32(i+1) }, 5*time.Second, time.Millisecond)
		// The pong is processed before the next sweep can count the silence.
		require.Eventually(t, func() bool { return clk.now.UnixNano()-c.lastRead.Load() < int64(time.Second) }, 5*time.Second, time.Millisecond)
	}
	assert.True(t, c.Open())
}

func TestSlowlorisHandshakeClosed(t *testing.T) {
	h := start(t, Config{HandshakeTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", h.g.Addrs()[0].String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")) // never finished
	require.NoError(t, err)
	began := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = bufio.NewReader(conn).ReadByte()
	require.Error(t, err)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "server did not close the slow handshake: %v", err)
	assert.Less(t, time.Since(began), 4*time.Second)
	assert.Equal(t, 0, h.g.Len())
}

func TestHandlerPanic1011(t *testing.T) {
	o, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	h := start(t, Config{Observer: o, OnMessage: func(c *Conn, typ MessageType, data []byte) {
		if string(data) == "boom" {
			panic("handler bug")
		}
		echo(c, typ, data)
	}})
	bad, badConn := h.dialOpen(nil)
	good, _ := h.dialOpen(nil)
	require.NoError(t, bad.WriteMessage(websocket.TextMessage, []byte("boom")))
	assert.Equal(t, CloseInternalError, readClose(t, bad))
	e := h.nextClose()
	assert.Equal(t, CloseInternalError, e.code)
	assert.Same(t, badConn, e.conn)
	// The gateway keeps serving the other connection and new ones.
	require.NoError(t, good.WriteMessage(websocket.TextMessage, []byte("still here")))
	_, data, err := good.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, "still here", string(data))
	fresh, _ := h.dialOpen(nil)
	require.NoError(t, fresh.WriteMessage(websocket.TextMessage, []byte("new")))
	_, data, err = fresh.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, "new", string(data))
	assert.Equal(t, 1.0, counterValue(t, o, "switchboard_gateway_handler_panics_total"))
}

func TestShutdownSends1001(t *testing.T) {
	o, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	require.NoError(t, err)
	var ctxs []context.Context
	h := start(t, Config{Observer: o, DrainBatch: 3, DrainInterval: time.Millisecond})
	require.NoError(t, o.Ready(context.Background()))
	var clients []*websocket.Conn
	for range 10 {
		ws, c := h.dialOpen(nil)
		clients = append(clients, ws)
		ctxs = append(ctxs, c.Context())
	}
	codes := make(chan int, len(clients))
	for _, ws := range clients {
		go func() { codes <- readClose(t, ws) }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, h.g.Shutdown(ctx))
	for range clients {
		assert.Equal(t, CloseGoingAway, <-codes)
	}
	for range clients {
		assert.Equal(t, CloseGoingAway, h.nextClose().code)
	}
	for _, c := range ctxs {
		assert.Error(t, c.Err(), "connection context cancelled")
	}
	var nr *observe.NotReadyError
	require.ErrorAs(t, o.Ready(context.Background()), &nr)
	assert.ErrorIs(t, nr, ErrClosed)
	assert.Equal(t, 0, h.g.Len())
	_, _, err = websocket.DefaultDialer.Dial(h.url, nil)
	assert.Error(t, err, "listener closed")
	// goleak in TestMain checks that nothing outlived Shutdown.
}

func TestMountInsideNetHTTP(t *testing.T) {
	g, err := New(Config{HandlerWorkers: 4, OnMessage: echo, Authenticate: func(r *http.Request) (Identity, error) {
		return Identity{UserID: r.URL.Query().Get("u"), Role: RoleCustomer}, nil
	}})
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/chat", g)
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	srv := httptest.NewServer(mux)
	defer srv.Close()

	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/chat?u=alice"
	_, resp, err := websocket.DefaultDialer.Dial(url, nil)
	require.Error(t, err, "before Start")
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	_ = resp.Body.Close()

	require.NoError(t, g.Start())
	assert.Empty(t, g.Addrs())
	var clients []*websocket.Conn
	for range 5 {
		ws, resp, err := websocket.DefaultDialer.Dial(url, nil)
		require.NoError(t, err)
		_ = resp.Body.Close()
		clients = append(clients, ws)
	}
	for i, ws := range clients { // messages are sent right after the handshake
		require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(i))))
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprint(i), string(data))
	}
	assert.Len(t, g.UserConns("alice"), 5)
	assert.Equal(t, 5, g.SendToUser("alice", TextMessage, []byte("to all tabs")))
	for _, ws := range clients {
		_, data, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, "to all tabs", string(data))
	}
	hr, err := http.Get(srv.URL + "/health") // the host's other routes still work
	require.NoError(t, err)
	_ = hr.Body.Close()
	assert.Equal(t, http.StatusOK, hr.StatusCode)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, g.Shutdown(ctx))
	for _, ws := range clients {
		assert.Equal(t, CloseGoingAway, readClose(t, ws))
		_ = ws.Close()
	}
	srv.CloseClientConnections()
}

func TestOwnListenerServesHostRoutes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/api/ping", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("pong")) })
	h := start(t, Config{Handler: mux})
	base := "http://" + h.g.Addrs()[0].String()
	resp, err := http.Get(base + "/api/ping")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp2, err := http.Get(base + "/ws") // not an upgrade request
	require.NoError(t, err)
	defer resp2.Body.Close()
	assert.Equal(t, http.StatusBadRequest, resp2.StatusCode)
	http.DefaultClient.CloseIdleConnections()
}

func TestRegistryAndSendToUser(t *testing.T) {
	h := start(t, Config{Authenticate: func(r *http.Request) (Identity, error) {
		return Identity{UserID: r.URL.Query().Get("u"), Role: Role(r.URL.Query().Get("r"))}, nil
	}})
	dial := func(u, r string) (*websocket.Conn, *Conn) {
		ws, resp, err := websocket.DefaultDialer.Dial(h.url+"?u="+u+"&r="+r, nil)
		require.NoError(t, err)
		_ = resp.Body.Close()
		t.Cleanup(func() { _ = ws.Close() })
		return ws, h.nextOpen()
	}
	a1, ca1 := dial("alice", "customer")
	a2, _ := dial("alice", "customer")
	_, cb := dial("bob", "agent")
	dial("sue", "supervisor")
	dial("bot", "bot") // free-form role

	assert.Equal(t, 5, h.g.Len())
	assert.Equal(t, 2, h.g.Count(RoleCustomer))
	assert.Equal(t, 1, h.g.Count(RoleAgent))
	assert.Equal(t, 1, h.g.Count(RoleSupervisor))
	assert.Equal(t, 1, h.g.Count("bot"))
	assert.Equal(t, map[Role]int{"customer": 2, "agent": 1, "supervisor": 1, "bot": 1}, h.g.Counts())
	got, ok := h.g.Conn(cb.ID())
	require.True(t, ok)
	assert.Same(t, cb, got)
	_, ok = h.g.Conn(999999)
	assert.False(t, ok)
	assert.Len(t, h.g.UserConns("alice"), 2)
	assert.Empty(t, h.g.UserConns("nobody"))
	n := 0
	h.g.Range(func(*Conn) bool { n++; return true })
	assert.Equal(t, 5, n)
	n = 0
	h.g.Range(func(*Conn) bool { n++; return false })
	assert.Equal(t, 1, n)

	assert.Equal(t, 2, h.g.SendToUser("alice", TextMessage, []byte("hi alice")))
	assert.Equal(t, 0, h.g.SendToUser("nobody", TextMessage, []byte("x")))
	for _, ws := range []*websocket.Conn{a1, a2} {
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, "hi alice", string(data))
	}

	ctx := ca1.Context()
	require.NoError(t, ca1.Close(4100, "kicked"))
	assert.ErrorIs(t, ca1.Close(CloseNormal, ""), ErrClosed)
	assert.ErrorIs(t, ca1.Send(TextMessage, []byte("x")), ErrClosed)
	assert.Equal(t, 4100, readClose(t, a1))
	e := h.nextClose()
	assert.Equal(t, 4100, e.code)
	assert.Equal(t, "kicked", e.reason)
	<-ctx.Done()
	assert.Error(t, ca1.Context().Err())
	assert.Len(t, h.g.UserConns("alice"), 1)
	assert.Equal(t, 1, h.g.Count(RoleCustomer))
	assert.ErrorIs(t, cb.Close(1004, ""), ErrCloseCode)
	assert.ErrorIs(t, cb.Send(MessageType(9), nil), ErrMessageType)
}

func TestBroadcast(t *testing.T) {
	h := start(t, Config{})
	var clients []*websocket.Conn
	for range 20 {
		ws, _ := h.dialOpen(nil)
		clients = append(clients, ws)
	}
	pm, err := NewPreparedMessage(TextMessage, []byte("to everyone"))
	require.NoError(t, err)
	assert.Equal(t, 20, h.g.Broadcast(pm, nil))
	for _, ws := range clients {
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, data, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, websocket.TextMessage, typ)
		assert.Equal(t, "to everyone", string(data))
	}
	_, err = NewPreparedMessage(TextMessage, []byte{0xff})
	assert.ErrorIs(t, err, ErrInvalidUTF8)
	_, err = NewPreparedMessage(MessageType(8), nil)
	assert.ErrorIs(t, err, ErrMessageType)
}

func TestBroadcastAllocsPerConn(t *testing.T) {
	h := start(t, Config{})
	var conns []*Conn
	for range 50 {
		// The clients do not read during the measurement (AllocsPerRun counts
		// every goroutine): 3 x 100 frames of 202 bytes fit in the socket buffers.
		_, c := h.dialOpen(nil)
		conns = append(conns, c)
	}
	pm, err := NewPreparedMessage(TextMessage, make([]byte, 200))
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() { h.g.Broadcast(pm, conns) })
	assert.Zero(t, allocs, "explicit list")
	allocs = testing.AllocsPerRun(100, func() { h.g.Broadcast(pm, nil) })
	assert.Zero(t, allocs, "all connections")
	allocs = testing.AllocsPerRun(100, func() { _ = conns[0].Send(TextMessage, make200) })
	assert.Zero(t, allocs, "Conn.Send")
	for _, c := range conns {
		assert.Zero(t, c.Buffered(), "all frames went straight to the kernel")
	}
}

var make200 = make([]byte, 200)

func TestContextCancelledOnPeerClose(t *testing.T) {
	h := start(t, Config{})
	ws, c := h.dialOpen(nil)
	ctx := c.Context()
	require.NoError(t, ws.Close()) // abrupt: no close frame
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled")
	}
	assert.Equal(t, CloseAbnormal, h.nextClose().code)
}

func TestNewValidation(t *testing.T) {
	for _, tc := range []struct {
		field string
		cfg   Config
	}{
		{"Path", Config{Path: "ws"}},
		{"WriteTimeout", Config{WriteTimeout: -1}},
		{"IdleTimeout", Config{PingInterval: time.Minute, IdleTimeout: time.Second}},
		{"MaxConns", Config{MaxConns: -1}},
		{"MaxMessageSize", Config{MaxMessageSize: -2}},
		{"MaxOutgoingBytes", Config{MaxOutgoingBytes: -5}},
		{"MaxFragments", Config{MaxFragments: -2}},
		{"MaxConnsPerUser", Config{MaxConnsPerUser: -2}},
		{"HandshakeRate", Config{HandshakeRate: -1}},
		{"HandshakeBurst", Config{HandshakeBurst: -1}},
		{"RateLimit.PerSecond", Config{RateLimit: RateLimit{PerSecond: -1}}},
		{"RateLimit.Policy", Config{RateLimit: RateLimit{Policy: 7}}},
		{"HandlerWorkers", Config{HandlerWorkers: -1}},
		{"AllowedOrigins", Config{AllowedOrigins: []string{""}}},
		{"Subprotocols", Config{Subprotocols: []string{"a b"}}},
	} {
		_, err := New(tc.cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, tc.field)
		assert.Contains(t, err.Error(), tc.field)
	}
	g, err := New(Config{})
	require.NoError(t, err)
	assert.Equal(t, DefaultPath, g.cfg.Path)
	assert.Equal(t, DefaultIdleTimeout, g.cfg.IdleTimeout)
	assert.Equal(t, int64(DefaultMaxMessageSize), g.cfg.MaxMessageSize)
	assert.Equal(t, DefaultMaxFragments, g.cfg.MaxFragments)
	assert.Equal(t, DefaultMaxConnsPerUser, g.cfg.MaxConnsPerUser)
	assert.Zero(t, g.cfg.HandshakeRate)
	assert.Nil(t, g.ips)
	require.NoError(t, g.Shutdown(context.Background())) // never started

	for _, tc := range []struct {
		cfg   Config
		frags int
	}{
		{Config{MaxMessageSize: 1 << 20}, 256}, // 4 KiB fragments of a 1 MiB message
		{Config{MaxMessageSize: -1}, -1},
		{Config{MaxMessageSize: 1 << 20, MaxFragments: 8}, 8},
	} {
		g, err := New(tc.cfg)
		require.NoError(t, err)
		assert.Equal(t, tc.frags, g.cfg.MaxFragments)
	}
	g, err = New(Config{HandshakeRate: 5})
	require.NoError(t, err)
	assert.Equal(t, DefaultHandshakeBurst, g.cfg.HandshakeBurst)
}

func counterValue(t *testing.T, o *observe.Observer, name string) float64 {
	t.Helper()
	mfs, err := o.Gatherer().Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}
