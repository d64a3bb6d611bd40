package auth

import (
	"crypto/rand"
	"encoding/json"
	"maps"
	"math/big"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseJWK(t *testing.T) {
	rk, ek, dk := newRSAKey(t, "r"), newECKey(t, "e"), newEdKey(t, "d")
	with := func(k testKey, kv ...string) map[string]any {
		m := maps.Clone(k.jwk)
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "-" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	small, err := rand.Prime(rand.Reader, 1024)
	require.NoError(t, err)
	even := new(big.Int).Lsh(big.NewInt(1), 2047)
	enc := b64u.EncodeToString
	cases := map[string]struct {
		jwk     any
		alg     string // "" means an error
		skipped bool   // unsupported (silently skipped) rather than malformed
	}{
		"RSA":                   {rk.jwk, AlgRS256, false},
		"RSA without alg/use":   {with(rk, "alg", "-", "use", "-"), AlgRS256, false},
		"RSA padded base64":     {with(rk, "e", "AQAB===="), AlgRS256, false},
		"EC P-256":              {ek.jwk, AlgES256, false},
		"Ed25519":               {dk.jwk, AlgEdDSA, false},
		"key_ops verify":        {map[string]any{"kty": "OKP", "crv": "Ed25519", "x": dk.jwk["x"], "key_ops": []string{"verify"}}, AlgEdDSA, false},
		"use enc":               {with(rk, "use", "enc"), "", true},
		"key_ops encrypt":       {map[string]any{"kty": "OKP", "crv": "Ed25519", "x": dk.jwk["x"], "key_ops": []string{"encrypt"}}, "", true},
		"RSA for PS256":         {with(rk, "alg", "PS256"), "", true},
		"RSA for RSA-OAEP":      {with(rk, "alg", "RSA-OAEP"), "", true},
		"EC for ES384 on P-256": {with(ek, "alg", "ES384"), "", true},
		"EC P-384":              {with(ek, "crv", "P-384"), "", true},
		"OKP X25519":            {with(dk, "crv", "X25519"), "", true},
		"oct (HMAC) key":        {map[string]any{"kty": "oct", "k": enc([]byte("0123456789abcdef0123"))}, "", true},
		"no kty":                {map[string]any{"n": rk.jwk["n"]}, "", true},
		"RSA 1024 bits":         {with(rk, "n", enc(small.Bytes())), "", false},
		"RSA even modulus":      {with(rk, "n", enc(even.Bytes())), "", false},
		"RSA n not base64":      {with(rk, "n", "!!!"), "", false},
		"RSA e = 1":             {with(rk, "e", "AQ"), "", false},
		"RSA e even":            {with(rk, "e", "AQAA"), "", false},
		"RSA e 5 bytes":         {with(rk, "e", enc([]byte{1, 0, 0, 0, 1})), "", false},
		"RSA e empty":           {with(rk, "e", ""), "", false},
		"EC x short":            {with(ek, "x", enc(make([]byte, 31))), "", false},
		"EC point off curve":    {with(ek, "x", enc(append(make([]byte, 31), 1)), "y", enc(append(make([]byte, 31), 1))), "", false},
		"EC y missing":          {with(ek, "y", "-"), "", false},
		"Ed25519 x short":       {with(dk, "x", enc(make([]byte, 31))), "", false},
		"not an object":         {[]int{1}, "", false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			raw, err := json.Marshal(tc.jwk)
			require.NoError(t, err)
			k, err := parseJWK(raw)
			if tc.alg != "" {
				require.NoError(t, err)
				assert.Equal(t, tc.alg, k.alg)
				assert.NotNil(t, k.key)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tc.skipped, strings.Contains(err.Error(), errUnsupported.Error()), "%v", err)
		})
	}
}

func TestParseJWKS(t *testing.T) {
	r, e, d1, d2 := newRSAKey(t, "r"), newECKey(t, "e"), newEdKey(t, "d1"), newEdKey(t, "d2")
	ks, err := parseJWKS(jwksJSON(t, r, e, d1, d2))
	require.NoError(t, err)
	assert.Equal(t, 4, ks.len())
	assert.NotNil(t, ks.find(AlgRS256, "r"))
	assert.NotNil(t, ks.find(AlgRS256, ""), "the only RSA key serves tokens without kid")
	assert.Nil(t, ks.find(AlgEdDSA, ""), "two Ed25519 keys: a kid is needed")
	assert.NotNil(t, ks.find(AlgEdDSA, "d2"))
	assert.Nil(t, ks.find(AlgES256, "r"), "kid of another key type")
	assert.Nil(t, (*keySet)(nil).find(AlgEdDSA, "d1"))

	// Unusable keys are skipped, and a duplicate kid keeps the first key.
	dup := d2
	dup.jwk = maps.Clone(d2.jwk)
	dup.jwk["kid"] = "d1"
	broken := testKey{jwk: map[string]any{"kty": "RSA", "kid": "bad", "n": "AQAB", "e": "AQAB"}}
	enc := testKey{jwk: map[string]any{"kty": "RSA", "use": "enc", "n": r.jwk["n"], "e": "AQAB"}}
	ks, err = parseJWKS(jwksJSON(t, d1, dup, broken, enc))
	require.NoError(t, err)
	assert.Equal(t, 1, ks.len())
	assert.Equal(t, ks.find(AlgEdDSA, "d1"), ks.find(AlgEdDSA, ""))

	for name, doc := range map[string]string{
		"not JSON":        "{",
		"no keys member":  `{"kty":"RSA"}`,
		"empty set":       `{"keys":[]}`,
		"only broken":     string(jwksJSON(t, broken)),
		"only unusable":   string(jwksJSON(t, enc)),
		"keys not array":  `{"keys":{}}`,
		"too many keys":   `{"keys":[` + strings.Repeat(`{},`, maxJWKSKeys) + `{}]}`,
		"array, not set":  `[]`,
		"null":            `null`,
		"key is a string": `{"keys":["RSA"]}`,
	} {
		_, err := parseJWKS([]byte(doc))
		assert.Error(t, err, name)
	}
	_, err = parseJWKS(jwksJSON(t, broken))
	assert.ErrorContains(t, err, "modulus has 17 bits", "the reason a key was skipped is reported")
}

func FuzzParseJWKS(f *testing.F) {
	f.Add(jwksJSON(f, newRSAKey(f, "r"), newECKey(f, "e"), newEdKey(f, "d")))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, err := parseJWKS(data)
		if err == nil && ks.len() == 0 {
			t.Fatal("accepted a JWKS without keys")
		}
	})
}
