package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var secret = []byte("0123456789abcdef-test-secret")

// testKey is a freshly generated asymmetric signing key and its public JWK.
type testKey struct {
	kid    string
	method jwt.SigningMethod
	priv   crypto.Signer
	jwk    map[string]any
}

var b64u = base64.RawURLEncoding

func newRSAKey(t testing.TB, kid string) testKey {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	return testKey{kid: kid, method: jwt.SigningMethodRS256, priv: priv, jwk: map[string]any{
		"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64u.EncodeToString(priv.N.Bytes()),
		"e": b64u.EncodeToString(big.NewInt(int64(priv.E)).Bytes()),
	}}
}

func newECKey(t testing.TB, kid string) testKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	point, err := priv.PublicKey.Bytes() // 0x04 || x || y
	require.NoError(t, err)
	return testKey{kid: kid, method: jwt.SigningMethodES256, priv: priv, jwk: map[string]any{
		"kty": "EC", "kid": kid, "crv": "P-256",
		"x": b64u.EncodeToString(point[1:33]), "y": b64u.EncodeToString(point[33:]),
	}}
}

func newEdKey(t testing.TB, kid string) testKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	return testKey{kid: kid, method: jwt.SigningMethodEdDSA, priv: priv, jwk: map[string]any{
		"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64u.EncodeToString(pub),
	}}
}

// sign signs claims with k, naming k.kid in the header unless kid is "".
func (k testKey) sign(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method, claims)
	if k.kid != "" {
		tok.Header["kid"] = k.kid
	}
	s, err := tok.SignedString(k.priv)
	require.NoError(t, err)
	return s
}

func jwksJSON(t testing.TB, keys ...testKey) []byte {
	t.Helper()
	set := struct {
		Keys []map[string]any `json:"keys"`
	}{Keys: []map[string]any{}}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.jwk)
	}
	b, err := json.Marshal(set)
	require.NoError(t, err)
	return b
}

// writeJWKS replaces path atomically, as the Config.JWKSFile doc asks.
func writeJWKS(t testing.TB, path string, keys ...testKey) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".jwks-*")
	require.NoError(t, err)
	_, err = tmp.Write(jwksJSON(t, keys...))
	require.NoError(t, err)
	require.NoError(t, tmp.Close())
	require.NoError(t, os.Rename(tmp.Name(), path))
}

func hs256(t testing.TB, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(key)
	require.NoError(t, err)
	return s
}

// agentClaims are minimal valid claims expiring an hour after now.
func agentClaims(now time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": "a-1", "role": RoleAgent, "exp": now.Add(time.Hour).Unix()}
}

// clock is a settable time source for tests with real sockets, which
// cannot run under testing/synctest.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// sentinels counts how many of the three top-level sentinels err matches.
func sentinels(err error) int {
	n := 0
	for _, s := range []error{ErrInvalidToken, ErrExpired, ErrBadClaims} {
		if errors.Is(err, s) {
			n++
		}
	}
	return n
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
