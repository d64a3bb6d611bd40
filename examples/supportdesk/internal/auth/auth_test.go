package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSignVerify(t *testing.T) {
	s, err := NewSigner([]byte("0123456789abcdef"))
	require.NoError(t, err)
	tok, err := s.Sign(Claims{UserID: "u1", Role: RoleCustomer, Tier: TierVIP})
	require.NoError(t, err)
	c, err := s.Verify(tok)
	require.NoError(t, err)
	assert.Equal(t, "u1", c.UserID)
	assert.Equal(t, TierVIP, c.Tier)

	c2, err := s.Verify(mustSign(t, s, Claims{UserID: "u2", Role: RoleCustomer}))
	require.NoError(t, err)
	assert.Equal(t, TierStandard, c2.Tier, "default tier")
}

func mustSign(t *testing.T, s *Signer, c Claims) string {
	t.Helper()
	tok, err := s.Sign(c)
	require.NoError(t, err)
	return tok
}

func TestVerifyRejects(t *testing.T) {
	s, _ := NewSigner([]byte("0123456789abcdef"))
	other, _ := NewSigner([]byte("fedcba9876543210"))
	good := mustSign(t, s, Claims{UserID: "u", Role: RoleAgent})
	p, sig, _ := strings.Cut(good, ".")
	expired := mustSign(t, s, Claims{UserID: "u", Role: RoleAgent, Expires: time.Now().Add(-time.Minute).Unix()})
	cases := map[string]struct {
		tok  string
		want error
	}{
		"empty":          {"", ErrInvalidToken},
		"no dot":         {"abc", ErrInvalidToken},
		"other secret":   {mustSign(t, other, Claims{UserID: "u", Role: RoleAgent}), ErrInvalidToken},
		"tampered body":  {p + "x." + sig, ErrInvalidToken},
		"tampered sig":   {p + "." + sig[:len(sig)-2] + "AA", ErrInvalidToken},
		"expired":        {expired, ErrExpired},
		"huge":           {strings.Repeat("a", 5000), ErrInvalidToken},
		"sig not base64": {p + ".!!!", ErrInvalidToken},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := s.Verify(tc.tok)
			assert.ErrorIs(t, err, tc.want)
		})
	}
}

func TestClaimsValidate(t *testing.T) {
	s, _ := NewSigner([]byte("0123456789abcdef"))
	for _, c := range []Claims{{Role: RoleAgent}, {UserID: "u", Role: "root"}, {UserID: "u", Role: RoleCustomer, Tier: "gold"}} {
		_, err := s.Sign(c)
		assert.ErrorIs(t, err, ErrBadClaims, "%+v", c)
	}
	_, err := NewSigner([]byte("short"))
	assert.Error(t, err)
}

func FuzzVerify(f *testing.F) {
	s, _ := NewSigner([]byte("0123456789abcdef"))
	f.Add(mustSignF(s))
	f.Add("a.b")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := s.Verify(tok)
		if err == nil && c.UserID == "" {
			t.Fatalf("accepted token without subject: %q", tok)
		}
	})
}

func mustSignF(s *Signer) string {
	tok, _ := s.Sign(Claims{UserID: "u", Role: RoleCustomer})
	return tok
}
