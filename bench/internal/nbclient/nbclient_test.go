package nbclient

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	nbws "github.com/lesismal/nbio/nbhttp/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A server that speaks first (its greeting may arrive with the 101
// response) and then echoes; it refuses a missing token with 401.
func greetingServer(t *testing.T) *httptest.Server {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("token") != "ok" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.WriteMessage(websocket.TextMessage, []byte("hello "+r.Header.Get("X-Test")))
		for {
			typ, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			_ = c.WriteMessage(typ, b)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestDialGreetingEchoAndRefusal(t *testing.T) {
	srv := greetingServer(t)
	got := make(chan string, 8)
	closed := make(chan error, 1)
	c, err := New(Config{
		Pollers:   1,
		OnMessage: func(_ *nbws.Conn, _ nbws.MessageType, b []byte) { got <- string(b) },
		OnClose:   func(_ *nbws.Conn, err error) { closed <- err },
	})
	require.NoError(t, err)
	defer c.Close()
	dst := strings.TrimPrefix(srv.URL, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ws, err := c.Dial(ctx, Dial{Dst: dst, Src: "127.0.0.1", Path: "/ws?token=ok", Header: http.Header{"X-Test": {"t1"}}, Session: "s"})
	require.NoError(t, err)
	assert.Equal(t, "s", ws.Session())
	assert.Equal(t, "hello t1", <-got)
	require.NoError(t, ws.WriteMessage(nbws.TextMessage, []byte("ping")))
	select {
	case m := <-got:
		assert.Equal(t, "ping", m)
	case <-ctx.Done():
		t.Fatal("no echo")
	}
	require.NoError(t, ws.Close())
	<-closed

	_, err = c.Dial(ctx, Dial{Dst: dst, Path: "/ws"})
	var he *HandshakeError
	require.True(t, errors.As(err, &he), "%v", err)
	assert.Equal(t, http.StatusUnauthorized, he.Status)
	assert.Equal(t, 1, Pollers(2))
	assert.Equal(t, 1, Pollers(0))
	_, err = New(Config{})
	assert.Error(t, err)
}
