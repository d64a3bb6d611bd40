// Package auth issues and verifies the supportdesk's signed identity tokens.
//
// A token is base64url(JSON claims) + "." + base64url(HMAC-SHA256(secret,
// first part)). Claims carry the user ID, the role (customer, agent,
// supervisor), the customer's tier and an expiry. Tokens are verified in
// constant time; any malformed, tampered or expired token is rejected with an
// error wrapping ErrInvalidToken or ErrExpired.
package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Roles a token may carry.
const (
	RoleCustomer   = "customer"
	RoleAgent      = "agent"
	RoleSupervisor = "supervisor"
)

// Tiers a customer token may carry, from highest to lowest priority.
const (
	TierVIP      = "vip"
	TierPremium  = "premium"
	TierStandard = "standard"
)

// Errors returned by Verify.
var (
	ErrInvalidToken = errors.New("auth: invalid token")
	ErrExpired      = errors.New("auth: token expired")
	ErrBadClaims    = errors.New("auth: bad claims")
)

// Claims are what a token asserts about its bearer.
type Claims struct {
	UserID string   `json:"sub"`
	Name   string   `json:"name,omitempty"`
	Role   string   `json:"role"`
	Tier   string   `json:"tier,omitempty"`
	Skills []string `json:"skills,omitempty"`
	// Capacity is an agent's maximum of concurrent conversations; 0 means
	// the server's default.
	Capacity int `json:"cap,omitempty"`
	// Expires is a Unix time in seconds; 0 never expires.
	Expires int64 `json:"exp,omitempty"`
}

// Validate checks the claims' fields and fills the default tier.
func (c *Claims) Validate() error {
	if c.UserID == "" || len(c.UserID) > 128 {
		return fmt.Errorf("%w: sub must be 1..128 bytes", ErrBadClaims)
	}
	switch c.Role {
	case RoleCustomer:
		switch c.Tier {
		case "":
			c.Tier = TierStandard
		case TierVIP, TierPremium, TierStandard:
		default:
			return fmt.Errorf("%w: unknown tier %q", ErrBadClaims, c.Tier)
		}
	case RoleAgent, RoleSupervisor:
		if c.Capacity < 0 || c.Capacity > 1000 {
			return fmt.Errorf("%w: capacity %d outside 0..1000", ErrBadClaims, c.Capacity)
		}
	default:
		return fmt.Errorf("%w: unknown role %q", ErrBadClaims, c.Role)
	}
	return nil
}

// Signer signs and verifies tokens with one HMAC secret.
type Signer struct {
	secret []byte
	now    func() time.Time
}

// NewSigner returns a Signer; the secret must be at least 16 bytes.
func NewSigner(secret []byte) (*Signer, error) {
	if len(secret) < 16 {
		return nil, fmt.Errorf("auth: secret must be at least 16 bytes, got %d", len(secret))
	}
	return &Signer{secret: append([]byte(nil), secret...), now: time.Now}, nil
}

var b64 = base64.RawURLEncoding

// Sign validates c and returns its token.
func (s *Signer) Sign(c Claims) (string, error) {
	if err := c.Validate(); err != nil {
		return "", err
	}
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("auth: encode claims: %w", err)
	}
	p := b64.EncodeToString(body)
	return p + "." + b64.EncodeToString(s.mac(p)), nil
}

func (s *Signer) mac(p string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(p))
	return m.Sum(nil)
}

// Verify checks token's signature and expiry and returns its claims.
func (s *Signer) Verify(token string) (Claims, error) {
	var c Claims
	if len(token) > 4096 {
		return c, fmt.Errorf("%w: too long", ErrInvalidToken)
	}
	p, sig, ok := strings.Cut(token, ".")
	if !ok || p == "" || sig == "" {
		return c, fmt.Errorf("%w: malformed", ErrInvalidToken)
	}
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(p)) {
		return c, fmt.Errorf("%w: bad signature", ErrInvalidToken)
	}
	body, err := b64.DecodeString(p)
	if err != nil {
		return c, fmt.Errorf("%w: bad encoding", ErrInvalidToken)
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: bad claims: %v", ErrInvalidToken, err)
	}
	if c.Expires != 0 && s.now().Unix() >= c.Expires {
		return Claims{}, ErrExpired
	}
	if err := c.Validate(); err != nil {
		return Claims{}, err
	}
	return c, nil
}
