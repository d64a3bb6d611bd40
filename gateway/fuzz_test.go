package gateway

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// maskedFrame builds a client frame (masked with a zero key for readability).
func maskedFrame(b0 byte, payload []byte) []byte {
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n <= 0xFFFF:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	f = append(f, 0, 0, 0, 0)
	return append(f, payload...)
}

// rawHandshake opens a TCP connection and completes a WebSocket handshake by hand.
func rawHandshake(tb testing.TB, addr string) net.Conn {
	conn, err := net.Dial("tcp", addr)
	require.NoError(tb, err)
	upgradeRaw(tb, conn, addr)
	return conn
}

// upgradeRaw sends an upgrade request on conn and requires 101. The server
// sends nothing after its response before the client's first frame, so
// reading the response through a bufio.Reader loses no frame bytes.
func upgradeRaw(tb testing.TB, conn net.Conn, addr string) {
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	_, err := conn.Write([]byte(req))
	require.NoError(tb, err)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(tb, err)
	require.Equal(tb, http.StatusSwitchingProtocols, resp.StatusCode)
	_ = conn.SetReadDeadline(time.Time{})
}

// FuzzRawBytesAfterHandshake feeds arbitrary bytes to a connection after a
// valid handshake: the server must neither crash nor keep the connection
// (or anything else) once the client goes away.
func FuzzRawBytesAfterHandshake(f *testing.F) {
	f.Add(maskedFrame(0x81, []byte("hello")))
	f.Add(maskedFrame(0x82, make([]byte, 300)))
	f.Add(maskedFrame(0x81, []byte{0xff, 0xfe}))                                               // invalid UTF-8
	f.Add(maskedFrame(0x89, []byte("ping")))                                                   // ping
	f.Add(maskedFrame(0x88, []byte{0x03, 0xe8, 'o', 'k'}))                                     // close 1000
	f.Add(maskedFrame(0x88, []byte{0x00, 0x05}))                                               // invalid close code
	f.Add(maskedFrame(0x88, []byte{0x03}))                                                     // 1-byte close payload
	f.Add(maskedFrame(0x09, []byte("x")))                                                      // fragmented control
	f.Add(maskedFrame(0xC1, []byte("rsv")))                                                    // RSV1 without extension
	f.Add(maskedFrame(0x83, nil))                                                              // reserved opcode
	f.Add([]byte{0x81, 0x02, 'h', 'i'})                                                        // unmasked
	f.Add(append(maskedFrame(0x01, []byte("a")), bytes.Repeat(maskedFrame(0x00, nil), 70)...)) // too many fragments
	f.Add(maskedFrame(0x82, make([]byte, 70000))[:20])                                         // 64-bit length, cut short
	f.Add(maskedFrame(0x80, []byte("cont")))                                                   // continuation first
	f.Add(append(maskedFrame(0x01, []byte("frag")), maskedFrame(0x80, []byte("ment"))...))
	f.Add([]byte{0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}) // 2^63 length
	f.Add([]byte{0x81, 0x7E, 0x00})                                           // truncated length
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{})

	h := start(f, Config{OnMessage: echo, MaxMessageSize: 4096, CloseGracePeriod: 100 * time.Millisecond})
	addr := h.g.Addrs()[0].String()
	go func() { // keep the recorded events from filling up
		for {
			select {
			case <-h.closed:
			case <-h.opened:
			case <-h.g.sweepDone:
				return
			}
		}
	}()
	f.Fuzz(func(t *testing.T, data []byte) {
		conn := rawHandshake(t, addr)
		_, _ = conn.Write(data)
		_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		_, _ = bufio.NewReader(conn).ReadString(0) // whatever the server answers
		_ = conn.Close()
		require.Eventually(t, func() bool { return h.g.Len() == 0 }, 5*time.Second, time.Millisecond,
			"connection not released after %q", data)
		// The gateway still serves.
		probe := rawHandshake(t, addr)
		_, err := probe.Write(maskedFrame(0x81, []byte("probe")))
		require.NoError(t, err)
		_ = probe.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 7)
		_, err = io.ReadFull(probe, buf)
		require.NoError(t, err)
		require.True(t, strings.HasSuffix(string(buf), "probe"))
		_ = probe.Close()
		require.Eventually(t, func() bool { return h.g.Len() == 0 }, 5*time.Second, time.Millisecond)
	})
}
