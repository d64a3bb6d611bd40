package auth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
)

// A development server signs and verifies HS256 tokens with one secret.
func ExampleNewVerifier() {
	v, err := auth.NewVerifier(auth.Config{HMACSecret: []byte("dev-secret-at-least-16-bytes")})
	if err != nil {
		panic(err)
	}
	defer v.Close()

	tok, err := v.Sign(auth.Claims{UserID: "a-bob", Name: "Bob", Role: auth.RoleAgent, Skills: []string{"billing"}, Capacity: 3})
	if err != nil {
		panic(err)
	}
	c, err := v.Verify(tok)
	if err != nil {
		panic(err)
	}
	fmt.Println(c.UserID, c.Role, c.Skills, c.Capacity, time.Until(time.Unix(c.Expires, 0)) > 23*time.Hour)

	expired, _ := v.Sign(auth.Claims{UserID: "a-bob", Role: auth.RoleAgent, Expires: time.Now().Add(-time.Hour).Unix()})
	_, err = v.Verify(expired)
	fmt.Println(errors.Is(err, auth.ErrExpired), errors.Is(err, jwt.ErrTokenExpired))
	// Output:
	// a-bob agent [billing] 3 true
	// true true
}

// In production the identity provider signs the tokens and publishes its
// public keys as a JWKS (here a file; usually Config.JWKSURL, the IdP's
// jwks_uri), and the deployment names the claims its IdP emits.
func ExampleVerifier_Verify_jwks() {
	// The IdP's side: a signing key, its JWKS, and a token.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	dir, _ := os.MkdirTemp("", "jwks")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "jwks.json")
	jwks := fmt.Sprintf(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"2025-06","use":"sig","x":%q}]}`,
		base64.RawURLEncoding.EncodeToString(pub))
	if err := os.WriteFile(path, []byte(jwks), 0o600); err != nil {
		panic(err)
	}
	idToken := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
		"iss": "https://idp.example", "aud": "supportdesk",
		"sub": "248289761001", "name": "Jane Doe",
		"groups": []string{"staff", "agent"}, "support_queues": "billing refunds",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
	})
	idToken.Header["kid"] = "2025-06"
	tok, _ := idToken.SignedString(priv)

	// The host's side.
	v, err := auth.NewVerifier(auth.Config{
		JWKSFile:    path,
		Issuer:      "https://idp.example",
		Audience:    "supportdesk",
		RoleClaim:   "groups",
		SkillsClaim: "support_queues",
	})
	if err != nil {
		panic(err)
	}
	defer v.Close()
	c, err := v.Verify(tok)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s %q %s %q\n", c.UserID, c.Name, c.Role, c.Skills)
	// Output: 248289761001 "Jane Doe" agent ["billing" "refunds"]
}
