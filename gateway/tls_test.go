package gateway

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// selfSigned returns a server certificate for 127.0.0.1 (ECDSA P-256) and a
// pool trusting it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "switchboard gateway test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// dialTLS connects a gorilla client over wss, trusting pool only.
func dialTLS(t *testing.T, h *harness, pool *x509.CertPool) (*websocket.Conn, *Conn) {
	t.Helper()
	d := websocket.Dialer{
		TLSClientConfig:  &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		HandshakeTimeout: 10 * time.Second,
	}
	ws, resp, err := d.Dial(h.url, nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	t.Cleanup(func() { _ = ws.Close() })
	return ws, h.nextOpen()
}

func TestTLS(t *testing.T) {
	before := goleak.IgnoreCurrent()
	cert, pool := selfSigned(t)
	h := start(t, Config{
		TLSConfig:      &tls.Config{Certificates: []tls.Certificate{cert}},
		OnMessage:      echo,
		MaxMessageSize: 1 << 20,
		// More than all the concurrent writers below queue in total, so a
		// reader lagging on a loaded machine is not a slow consumer.
		MaxOutgoingBytes: 16 << 20,
		DrainBatch:       2,
		DrainInterval:    time.Millisecond,
	})
	require.True(t, strings.HasPrefix(h.url, "wss://"))

	// A plain-text client is not served on a TLS listener.
	_, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(h.url, "wss"), nil)
	require.Error(t, err)

	var clients []*websocket.Conn
	var conns []*Conn
	for range 3 {
		ws, c := dialTLS(t, h, pool)
		clients = append(clients, ws)
		conns = append(conns, c)
	}

	// Echo both ways; the large messages span many TLS records in each
	// direction (16 KiB of plaintext at most per record).
	big := bytes.Repeat([]byte("0123456789abcdef"), 20_000) // 320,000 bytes
	msgs := []struct {
		typ  int
		data []byte
	}{
		{websocket.TextMessage, []byte("hello over tls")},
		{websocket.BinaryMessage, big},
		{websocket.TextMessage, []byte(strings.Repeat("é", 9000))}, // 18,000 bytes
		{websocket.BinaryMessage, []byte{0}},
	}
	ws := clients[0]
	for _, m := range msgs {
		require.NoError(t, ws.WriteMessage(m.typ, m.data))
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, m := range msgs {
		typ, data, err := ws.ReadMessage()
		require.NoError(t, err)
		assert.Equal(t, m.typ, typ)
		assert.True(t, bytes.Equal(m.data, data), "echo of %d bytes", len(m.data))
	}

	// Concurrent writers on one TLS connection never interleave records of
	// different frames.
	const writers, each = 4, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := bytes.Repeat([]byte{byte('a' + w)}, 20_000)
			for range each {
				assert.NoError(t, conns[1].Send(BinaryMessage, payload))
			}
		}()
	}
	got := map[byte]int{}
	_ = clients[1].SetReadDeadline(time.Now().Add(10 * time.Second))
	for range writers * each {
		_, data, err := clients[1].ReadMessage()
		require.NoError(t, err)
		require.Len(t, data, 20_000)
		require.Equal(t, bytes.Repeat(data[:1], len(data)), data, "frame bytes interleaved")
		got[data[0]]++
	}
	wg.Wait()
	assert.Equal(t, map[byte]int{'a': each, 'b': each, 'c': each, 'd': each}, got)

	// A prepared message reaches every TLS client, small and large.
	for _, payload := range [][]byte{[]byte("to everyone"), big} {
		pm, err := NewPreparedMessage(BinaryMessage, payload)
		require.NoError(t, err)
		assert.Equal(t, len(clients), h.g.Broadcast(pm, nil))
		for _, ws := range clients {
			_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := ws.ReadMessage()
			require.NoError(t, err)
			assert.True(t, bytes.Equal(payload, data), "broadcast of %d bytes", len(payload))
		}
	}
	for _, c := range conns {
		require.Eventually(t, func() bool { return c.Buffered() == 0 }, 5*time.Second, time.Millisecond)
	}

	// Shutdown closes every TLS client with 1001 and releases everything.
	var ctxs []context.Context
	for _, c := range conns {
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
		assert.Error(t, c.Err())
	}
	assert.Zero(t, h.g.Len())
	for _, ws := range clients {
		_ = ws.Close()
	}
	goleak.VerifyNone(t, before)
}

func TestTLSGetCertificateAndValidation(t *testing.T) {
	cert, pool := selfSigned(t)
	var hellos atomic.Int32
	h := start(t, Config{
		TLSConfig: &tls.Config{GetCertificate: func(hi *tls.ClientHelloInfo) (*tls.Certificate, error) {
			hellos.Add(1)
			if len(hi.SupportedVersions) == 0 || len(hi.CipherSuites) == 0 {
				return nil, errors.New("hello fields not converted")
			}
			return &cert, nil
		}},
		OnMessage: echo,
	})
	ws, _ := dialTLS(t, h, pool)
	require.NoError(t, ws.WriteMessage(websocket.TextMessage, []byte("sni-less")))
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := ws.ReadMessage()
	require.NoError(t, err)
	assert.Equal(t, "sni-less", string(data))
	assert.Equal(t, int32(1), hellos.Load())

	// Clients below TLS 1.2 are refused by default, as with crypto/tls.
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}
	_, _, err = d.Dial(h.url, nil)
	require.Error(t, err)

	for _, cfg := range []Config{
		{Addrs: []string{"127.0.0.1:0"}, TLSConfig: &tls.Config{}},
		{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}},
		{Addrs: []string{"127.0.0.1:0"}, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert},
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, nil }}},
	} {
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrInvalidConfig)
		assert.Contains(t, err.Error(), "TLSConfig")
	}
}

// A client that opens TCP on a TLS listener and never finishes the TLS
// handshake is closed after HandshakeTimeout.
func TestTLSSlowHandshakeClosed(t *testing.T) {
	cert, _ := selfSigned(t)
	h := start(t, Config{HandshakeTimeout: 300 * time.Millisecond,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	for _, partial := range [][]byte{nil, {0x16, 0x03, 0x01}} { // nothing; a truncated ClientHello
		conn, err := net.Dial("tcp", h.g.Addrs()[0].String())
		require.NoError(t, err)
		if partial != nil {
			_, err = conn.Write(partial)
			require.NoError(t, err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "server kept the stalled TLS handshake: %v", err)
		_ = conn.Close()
	}
}
