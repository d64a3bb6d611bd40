package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serverFrame is one frame read from the server (server frames are unmasked).
type serverFrame struct {
	op      byte
	payload []byte
}

// readServerFrame reads one server frame.
func readServerFrame(r *bufio.Reader) (serverFrame, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return serverFrame{}, err
	}
	n := uint64(h[1] & 0x7F)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return serverFrame{}, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return serverFrame{}, err
	}
	return serverFrame{op: h[0] & 0x0F, payload: p}, nil
}

// readCloseCode reads server frames until the close frame and returns its
// code; it fails the test when none arrives before the deadline.
func readCloseCode(t *testing.T, conn net.Conn, within time.Duration) int {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(within)))
	r := bufio.NewReaderSize(conn, 64<<10)
	for {
		f, err := readServerFrame(r)
		require.NoError(t, err, "no close frame")
		if f.op == 0x8 {
			require.GreaterOrEqual(t, len(f.payload), 2)
			return int(binary.BigEndian.Uint16(f.payload))
		}
	}
}

// flood writes batch until the connection fails, from its own goroutine.
func flood(conn net.Conn, batch []byte) <-chan int64 {
	sent := make(chan int64, 1)
	go func() {
		var n int64
		for {
			if _, err := conn.Write(batch); err != nil {
				sent <- n
				return
			}
			n++
		}
	}()
	return sent
}

// assertHealthy checks that the gateway still serves a new connection.
func assertHealthy(t *testing.T, h *harness) {
	t.Helper()
	ws := h.dial(nil)
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("still serving")))
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := ws.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, "still serving", string(data))
}

// Every frame counts against the per-connection rate limit: a client that
// floods pings, or empty continuation frames of a message it never ends,
// is closed with 1008 within moments (the reference server's 50/s, burst
// 100), and the gateway keeps serving others.
func TestRateLimitCountsEveryFrame(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start []byte // sent once before the flood
		frame []byte // repeated
	}{
		{"pings", nil, maskedFrame(0x89, []byte("are you there"))},
		{"empty continuations", maskedFrame(0x01, []byte("a")), maskedFrame(0x00, nil)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var messages atomic.Int32
			h := start(t, Config{
				RateLimit:        RateLimit{PerSecond: 50, Burst: 100},
				MaxFragments:     -1, // the rate limit alone must stop the continuations
				CloseGracePeriod: 500 * time.Millisecond,
				OnMessage: func(c *Conn, typ MessageType, data []byte) {
					messages.Add(1)
					echo(c, typ, data)
				},
			})
			conn := rawHandshake(t, h.g.Addrs()[0].String())
			defer conn.Close()
			h.nextOpen()
			_, err := conn.Write(tc.start)
			require.NoError(t, err)
			began := time.Now()
			sent := flood(conn, bytes.Repeat(tc.frame, 1000))
			assert.Equal(t, ClosePolicyViolation, readCloseCode(t, conn, 5*time.Second))
			assert.Less(t, time.Since(began), 2*time.Second, "1008 took too long")
			e := h.nextClose()
			assert.Equal(t, ClosePolicyViolation, e.code)
			assert.Equal(t, "rate limit exceeded", e.reason)
			_ = conn.Close()
			<-sent
			assert.Zero(t, messages.Load())
			assertHealthy(t, h)
		})
	}
}

// With RateDrop, pings over the limit are dropped unanswered and the
// connection stays open.
func TestRateDropPings(t *testing.T) {
	// One token a week: the bucket does not refill during the test (the
	// refill itself is tested in a synctest bubble, TestRateLimitBucket).
	h := start(t, Config{RateLimit: RateLimit{PerSecond: frozenRate, Burst: 3, Policy: RateDrop}})
	conn := rawHandshake(t, h.g.Addrs()[0].String())
	defer conn.Close()
	c := h.nextOpen()
	for i := range 6 {
		_, err := conn.Write(maskedFrame(0x89, []byte{byte('0' + i)}))
		require.NoError(t, err)
	}
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := range 3 {
		f, err := readServerFrame(r)
		require.NoError(t, err)
		assert.Equal(t, byte(0xA), f.op)
		assert.Equal(t, []byte{byte('0' + i)}, f.payload)
	}
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, err := readServerFrame(r)
	var ne net.Error
	require.ErrorAs(t, err, &ne, "a ping over the limit was answered")
	assert.True(t, ne.Timeout())
	assert.True(t, c.Open())
}

// A message may have at most Config.MaxFragments frames (default 64);
// one more closes with 1009, so a message that never ends cannot keep a
// connection busy for free.
func TestMaxFragments1009(t *testing.T) {
	h := start(t, Config{OnMessage: echo, CloseGracePeriod: 200 * time.Millisecond})
	require.Equal(t, DefaultMaxFragments, h.g.cfg.MaxFragments)
	conn := rawHandshake(t, h.g.Addrs()[0].String())
	defer conn.Close()
	h.nextOpen()
	fragmented := func(frames int) []byte {
		b := maskedFrame(0x01, []byte("x"))
		for range frames - 2 {
			b = append(b, maskedFrame(0x00, nil)...)
		}
		return append(b, maskedFrame(0x80, []byte("y"))...)
	}
	_, err := conn.Write(fragmented(DefaultMaxFragments)) // at the limit: fine
	require.NoError(t, err)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(conn)
	f, err := readServerFrame(r)
	require.NoError(t, err)
	assert.Equal(t, "xy", string(f.payload))

	_, err = conn.Write(fragmented(DefaultMaxFragments + 1))
	require.NoError(t, err)
	for {
		f, err = readServerFrame(r)
		require.NoError(t, err)
		if f.op == 0x8 {
			break
		}
	}
	assert.Equal(t, CloseMessageTooBig, int(binary.BigEndian.Uint16(f.payload)))
	e := h.nextClose()
	assert.Equal(t, CloseMessageTooBig, e.code)
	assert.Equal(t, "too many fragments", e.reason)
}

// MaxMessageSize bounds the sum of a fragmented message's payloads.
func TestFragmentedMessageTooBig1009(t *testing.T) {
	h := start(t, Config{MaxMessageSize: 1000, OnMessage: echo, CloseGracePeriod: 200 * time.Millisecond})
	conn := rawHandshake(t, h.g.Addrs()[0].String())
	defer conn.Close()
	h.nextOpen()
	part := make([]byte, 400)
	msg := append(maskedFrame(0x02, part), maskedFrame(0x00, part)...)
	msg = append(msg, maskedFrame(0x80, part)...)
	_, err := conn.Write(msg)
	require.NoError(t, err)
	assert.Equal(t, CloseMessageTooBig, readCloseCode(t, conn, 5*time.Second))
	assert.Equal(t, CloseMessageTooBig, h.nextClose().code)
}

// RFC 6455 §5.1: a server must close the connection on an unmasked client
// frame (1002). nbio's parser accepts them.
func TestUnmaskedFrame1002(t *testing.T) {
	var messages atomic.Int32
	h := start(t, Config{CloseGracePeriod: 200 * time.Millisecond, OnMessage: func(c *Conn, typ MessageType, data []byte) {
		messages.Add(1)
		echo(c, typ, data)
	}})
	conn := rawHandshake(t, h.g.Addrs()[0].String())
	defer conn.Close()
	h.nextOpen()
	_, err := conn.Write(maskedFrame(0x81, []byte("masked"))) // fine
	require.NoError(t, err)
	_, err = conn.Write([]byte{0x81, 0x08, 'u', 'n', 'm', 'a', 's', 'k', 'e', 'd'})
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := readServerFrame(r)
	require.NoError(t, err)
	assert.Equal(t, "masked", string(f.payload))
	f, err = readServerFrame(r)
	require.NoError(t, err)
	require.Equal(t, byte(0x8), f.op, "want a close frame, got opcode %d %q", f.op, f.payload)
	assert.Equal(t, CloseProtocolError, int(binary.BigEndian.Uint16(f.payload)))
	e := h.nextClose()
	assert.Equal(t, CloseProtocolError, e.code)
	assert.Equal(t, "unmasked frame", e.reason)
	assert.Equal(t, int32(1), messages.Load())
}

// Frames split at every byte (headers across reads included) reach the
// handler intact, in order, with control frames interleaved.
func TestFramesSplitAcrossReads(t *testing.T) {
	h := start(t, Config{OnMessage: echo, RateLimit: RateLimit{PerSecond: 1000, Burst: 1000}})
	conn := rawHandshake(t, h.g.Addrs()[0].String())
	defer conn.Close()
	h.nextOpen()
	var stream []byte
	stream = append(stream, maskedFrame(0x01, []byte("he"))...)
	stream = append(stream, maskedFrame(0x89, []byte("p"))...) // ping inside a fragmented message
	stream = append(stream, maskedFrame(0x80, []byte("llo"))...)
	stream = append(stream, maskedFrame(0x82, make([]byte, 300))...) // 16-bit length
	stream = append(stream, maskedFrame(0x81, []byte("end"))...)
	tcp := conn.(*net.TCPConn)
	require.NoError(t, tcp.SetNoDelay(true))
	for _, b := range stream {
		_, err := conn.Write([]byte{b})
		require.NoError(t, err)
	}
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	want := []serverFrame{{0xA, []byte("p")}, {0x1, []byte("hello")}, {0x2, make([]byte, 300)}, {0x1, []byte("end")}}
	for _, w := range want {
		f, err := readServerFrame(r)
		require.NoError(t, err)
		assert.Equal(t, w, f)
	}
}

// Over TLS nbhttp decrypts before parsing; the frame checks apply to the
// decrypted frames: an unmasked one is refused, and pings count against
// the rate limit.
func TestFrameChecksOverTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	h := start(t, Config{OnMessage: echo, CloseGracePeriod: 200 * time.Millisecond,
		RateLimit: RateLimit{PerSecond: 50, Burst: 100},
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	addr := h.g.Addrs()[0].String()
	dial := func() net.Conn {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		upgradeRaw(t, conn, addr)
		h.nextOpen()
		return conn
	}

	conn := dial()
	_, err := conn.Write([]byte{0x82, 0x01, 'x'})
	require.NoError(t, err)
	assert.Equal(t, CloseProtocolError, readCloseCode(t, conn, 5*time.Second))
	assert.Equal(t, CloseProtocolError, h.nextClose().code)

	conn = dial()
	sent := flood(conn, bytes.Repeat(maskedFrame(0x89, []byte("p")), 200))
	assert.Equal(t, ClosePolicyViolation, readCloseCode(t, conn, 5*time.Second))
	assert.Equal(t, ClosePolicyViolation, h.nextClose().code)
	_ = conn.Close()
	<-sent
}
