package gateway

import (
	"net"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nbhttp's accept path arms the handshake read deadline after it hands the
// connection to a poller. On a loaded machine the accept goroutine can be
// descheduled in between while the request is read and the connection
// upgraded, which clears the deadline; the late deadline then dropped the
// healthy WebSocket connection HandshakeTimeout after accept, without a
// close frame (0.1-0.5 % of connections in bench/cmd/wsbench runs). This
// test replays that interleaving step by step on the gateway's accept path.
func TestLateHandshakeDeadlineCleared(t *testing.T) {
	// nbhttp arms the default HandshakeTimeout (10s), so a slow upgrade on a
	// loaded machine does not time out; the late deadline replayed below is
	// short so that the test sees it fire.
	const late = 200 * time.Millisecond
	h := start(t, Config{OnMessage: echo})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	type dialed struct {
		ws  *websocket.Conn
		err error
	}
	dialc := make(chan dialed, 1)
	go func() {
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+ln.Addr().String()+"/ws", nil)
		if err == nil {
			_ = resp.Body.Close()
		}
		dialc <- dialed{ws, err}
	}()
	tc, err := ln.Accept()
	require.NoError(t, err)

	// What addConn does, with the accept goroutine "descheduled" between
	// nbhttp registering the connection and arming its deadline.
	nbc, err := nbio.NBConn(tc)
	require.NoError(t, err)
	h.g.settling.begin(nbc)
	h.g.engine.AddConnNonTLSNonBlocking(&nbhttp.Conn{Conn: nbc}, nil, func() {})
	c := h.nextOpen() // read, upgraded (deadline cleared) and opened meanwhile
	require.NoError(t, nbc.SetReadDeadline(time.Now().Add(late)), "the late deadline")
	h.g.settled(nbc)

	d := <-dialc
	require.NoError(t, d.err)
	defer d.ws.Close()
	// Well past the late deadline the connection is still served.
	<-time.After(3 * late)
	require.NoError(t, d.ws.WriteMessage(websocket.TextMessage, []byte("still here")))
	_ = d.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := d.ws.ReadMessage()
	require.NoError(t, err, "connection dropped by a stale handshake deadline")
	assert.Equal(t, "still here", string(data))
	assert.True(t, c.Open())
	select {
	case e := <-h.closed:
		t.Fatalf("closed with %d", e.code)
	default:
	}
}
