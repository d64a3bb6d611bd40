package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

const (
	maxJWKSKeys    = 100
	minRSABits     = 2048
	maxRSABits     = 8192
	p256CoordBytes = 32
)

// errUnsupported marks a JWK this package does not use (another key type,
// curve, algorithm or use); such keys are skipped without complaint.
var errUnsupported = errors.New("unsupported key")

// verificationKey is one usable JWK: the algorithm it verifies and the
// public key in the type the jwt library expects for it.
type verificationKey struct {
	kid string
	alg string
	key any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

type kidAlg struct{ kid, alg string }

// keySet is an immutable snapshot of a JWKS's usable keys.
type keySet struct {
	byKID map[kidAlg]any
	byAlg map[string][]any
}

// find returns the key for a token's alg and kid, or nil. A token without
// kid is accepted only when the set has a single key for its algorithm.
func (s *keySet) find(alg, kid string) any {
	if s == nil {
		return nil
	}
	if kid == "" {
		if keys := s.byAlg[alg]; len(keys) == 1 {
			return keys[0]
		}
		return nil
	}
	return s.byKID[kidAlg{kid, alg}]
}

func (s *keySet) len() int {
	if s == nil {
		return 0
	}
	n := 0
	for _, keys := range s.byAlg {
		n += len(keys)
	}
	return n
}

// parseJWKS parses a JWK Set (RFC 7517 §5). Keys of unsupported types,
// curves, uses or algorithms, and malformed keys, are skipped; a set
// without any usable key is an error (naming why keys were skipped).
func parseJWKS(data []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS is not JSON: %w", err)
	}
	if len(doc.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("JWKS has %d keys, more than %d", len(doc.Keys), maxJWKSKeys)
	}
	s := &keySet{byKID: make(map[kidAlg]any), byAlg: make(map[string][]any)}
	var problems []error
	for i, raw := range doc.Keys {
		k, err := parseJWK(raw)
		if err != nil {
			if !errors.Is(err, errUnsupported) {
				problems = append(problems, fmt.Errorf("key %d: %w", i, err))
			}
			continue
		}
		if k.kid != "" {
			ka := kidAlg{k.kid, k.alg}
			if _, dup := s.byKID[ka]; dup {
				problems = append(problems, fmt.Errorf("key %d: duplicate kid %q for %s", i, k.kid, k.alg))
				continue
			}
			s.byKID[ka] = k.key
		}
		s.byAlg[k.alg] = append(s.byAlg[k.alg], k.key)
	}
	if s.len() == 0 {
		return nil, fmt.Errorf("JWKS has no usable RSA, EC P-256 or Ed25519 signing key: %w", errors.Join(problems...))
	}
	return s, nil
}

// parseJWK parses one JWK (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2) into a
// verification key with the standard library only.
func parseJWK(raw []byte) (verificationKey, error) {
	var j struct {
		Kty    string   `json:"kty"`
		Kid    string   `json:"kid"`
		Use    string   `json:"use"`
		KeyOps []string `json:"key_ops"`
		Alg    string   `json:"alg"`
		Crv    string   `json:"crv"`
		N      string   `json:"n"`
		E      string   `json:"e"`
		X      string   `json:"x"`
		Y      string   `json:"y"`
	}
	if err := json.Unmarshal(raw, &j); err != nil {
		return verificationKey{}, err
	}
	if j.Use != "" && j.Use != "sig" {
		return verificationKey{}, errUnsupported
	}
	if j.KeyOps != nil && !slices.Contains(j.KeyOps, "verify") {
		return verificationKey{}, errUnsupported
	}
	k := verificationKey{kid: j.Kid}
	var err error
	switch {
	case j.Kty == "RSA":
		k.alg = AlgRS256
		k.key, err = rsaKey(j.N, j.E)
	case j.Kty == "EC" && j.Crv == "P-256":
		k.alg = AlgES256
		k.key, err = p256Key(j.X, j.Y)
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		k.alg = AlgEdDSA
		k.key, err = ed25519Key(j.X)
	default:
		return verificationKey{}, errUnsupported
	}
	// A key restricted to another algorithm (say PS256 or RSA-OAEP) must
	// not verify this one.
	if j.Alg != "" && j.Alg != k.alg {
		return verificationKey{}, errUnsupported
	}
	if err != nil {
		return verificationKey{}, fmt.Errorf("%s kid %q: %w", j.Kty, j.Kid, err)
	}
	return k, nil
}

// b64 decodes a base64url member; RFC 7518 forbids padding, but some
// publishers add it, so it is tolerated.
func b64(member, s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%s is not base64url: %w", member, err)
	}
	return b, nil
}

func rsaKey(n, e string) (*rsa.PublicKey, error) {
	nb, err := b64("n", n)
	if err != nil {
		return nil, err
	}
	eb, err := b64("e", e)
	if err != nil {
		return nil, err
	}
	mod := new(big.Int).SetBytes(nb)
	if bits := mod.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, fmt.Errorf("modulus has %d bits, want %d..%d", bits, minRSABits, maxRSABits)
	}
	if mod.Bit(0) == 0 {
		return nil, errors.New("modulus is even")
	}
	if len(eb) == 0 || len(eb) > 4 {
		return nil, fmt.Errorf("exponent has %d bytes, want 1..4", len(eb))
	}
	exp := 0
	for _, b := range eb {
		exp = exp<<8 | int(b)
	}
	if exp < 3 || exp&1 == 0 || exp > 1<<31-1 {
		return nil, fmt.Errorf("exponent %d is not an odd number in 3..2^31-1", exp)
	}
	return &rsa.PublicKey{N: mod, E: exp}, nil
}

func p256Key(x, y string) (*ecdsa.PublicKey, error) {
	xb, err := b64("x", x)
	if err != nil {
		return nil, err
	}
	yb, err := b64("y", y)
	if err != nil {
		return nil, err
	}
	if len(xb) != p256CoordBytes || len(yb) != p256CoordBytes {
		return nil, fmt.Errorf("x and y must be %d bytes each, got %d and %d", p256CoordBytes, len(xb), len(yb))
	}
	point := make([]byte, 0, 1+2*p256CoordBytes)
	point = append(point, 4) // uncompressed (SEC 1 §2.3.3)
	point = append(point, xb...)
	point = append(point, yb...)
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, fmt.Errorf("point not on P-256: %w", err)
	}
	return key, nil
}

func ed25519Key(x string) (ed25519.PublicKey, error) {
	xb, err := b64("x", x)
	if err != nil {
		return nil, err
	}
	if len(xb) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("x must be %d bytes, got %d", ed25519.PublicKeySize, len(xb))
	}
	return ed25519.PublicKey(xb), nil
}
