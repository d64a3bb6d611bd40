package auth

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var fixedNow = time.Unix(1_750_000_000, 0)

func fixedClock() time.Time { return fixedNow }

func TestHS256RoundTrip(t *testing.T) {
	v, err := newVerifier(Config{HMACSecret: secret}, fixedClock)
	require.NoError(t, err)
	defer v.Close()

	tok, err := v.Sign(Claims{UserID: "u1", Name: "Ann", Role: RoleCustomer, Tier: TierVIP})
	require.NoError(t, err)
	c, err := v.Verify(tok)
	require.NoError(t, err)
	assert.Equal(t, Claims{UserID: "u1", Name: "Ann", Role: RoleCustomer, Tier: TierVIP,
		Expires: fixedNow.Add(defaultSignTTL).Unix()}, c, "Expires defaults to now + SignTTL")

	exp := fixedNow.Add(time.Minute).Unix()
	tok, err = v.Sign(Claims{UserID: "a1", Role: RoleAgent, Skills: []string{"billing", "de"}, Capacity: 4, Expires: exp})
	require.NoError(t, err)
	c, err = v.Verify(tok)
	require.NoError(t, err)
	assert.Equal(t, Claims{UserID: "a1", Role: RoleAgent, Skills: []string{"billing", "de"}, Capacity: 4, Expires: exp}, c)

	tok, err = v.Sign(Claims{UserID: "u2", Role: RoleCustomer})
	require.NoError(t, err)
	c, err = v.Verify(tok)
	require.NoError(t, err)
	assert.Equal(t, TierStandard, c.Tier, "default tier")

	// The token is a standard JWT any library can read.
	parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(fixedClock))
	require.NoError(t, err)
	m := parsed.Claims.(jwt.MapClaims)
	assert.Equal(t, "u2", m["sub"])
	assert.Equal(t, "customer", m["role"])
	assert.EqualValues(t, fixedNow.Unix(), m["iat"])
	assert.EqualValues(t, fixedNow.Add(defaultSignTTL).Unix(), m["exp"])

	for _, bad := range []Claims{{Role: RoleAgent}, {UserID: "u", Role: "root"}, {UserID: "u", Role: RoleCustomer, Tier: "gold"},
		{UserID: strings.Repeat("u", 129), Role: RoleAgent}, {UserID: "u", Role: RoleAgent, Capacity: 1001}} {
		_, err := v.Sign(bad)
		assert.ErrorIs(t, err, ErrBadClaims, "%+v", bad)
	}
}

func TestSignNeedsHS256(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, newEdKey(t, "k1"))
	for name, cfg := range map[string]Config{
		"JWKS only":             {JWKSFile: path},
		"HS256 not in defaults": {JWKSFile: path, HMACSecret: secret},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := NewVerifier(cfg)
			require.NoError(t, err)
			defer v.Close()
			_, err = v.Sign(Claims{UserID: "u", Role: RoleCustomer})
			assert.ErrorContains(t, err, "HMACSecret")
		})
	}
	v, err := NewVerifier(Config{JWKSFile: path, HMACSecret: secret, Algorithms: []string{AlgEdDSA, AlgHS256}})
	require.NoError(t, err)
	defer v.Close()
	tok, err := v.Sign(Claims{UserID: "u", Role: RoleCustomer})
	require.NoError(t, err)
	_, err = v.Verify(tok)
	assert.NoError(t, err, "HS256 listed explicitly next to a JWKS")
}

func TestVerifyRejects(t *testing.T) {
	const iss, aud = "https://idp.example", "supportdesk"
	v, err := newVerifier(Config{HMACSecret: secret, Issuer: iss, Audience: aud}, fixedClock)
	require.NoError(t, err)
	defer v.Close()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		m := agentClaims(fixedNow)
		m["iss"], m["aud"] = iss, aud
		if mod != nil {
			mod(m)
		}
		return m
	}
	good := hs256(t, secret, claims(nil))
	_, err = v.Verify(good)
	require.NoError(t, err)
	parts := strings.Split(good, ".")
	otherPayload := strings.Split(hs256(t, secret, claims(func(m jwt.MapClaims) { m["role"] = RoleSupervisor })), ".")[1]
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
	require.NoError(t, err)
	hs384, err := jwt.NewWithClaims(jwt.SigningMethodHS384, claims(nil)).SignedString(secret)
	require.NoError(t, err)
	crit := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil))
	crit.Header["crit"] = []string{"b64"}
	crit.Header["b64"] = false
	critTok, err := crit.SignedString(secret)
	require.NoError(t, err)
	minute := time.Minute

	cases := map[string]struct {
		tok    string
		want   error
		jwtErr error // also matched, when set
	}{
		"empty":           {"", ErrInvalidToken, jwt.ErrTokenMalformed},
		"garbage":         {"a.b.c", ErrInvalidToken, jwt.ErrTokenMalformed},
		"two segments":    {parts[0] + "." + parts[1], ErrInvalidToken, jwt.ErrTokenMalformed},
		"four segments":   {good + ".x", ErrInvalidToken, jwt.ErrTokenMalformed},
		"too long":        {good + strings.Repeat("A", MaxTokenLen), ErrInvalidToken, nil},
		"other secret":    {hs256(t, []byte("fedcba9876543210-other"), claims(nil)), ErrInvalidToken, jwt.ErrTokenSignatureInvalid},
		"swapped payload": {parts[0] + "." + otherPayload + "." + parts[2], ErrInvalidToken, jwt.ErrTokenSignatureInvalid},
		"tampered sig":    {parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-2] + "AA", ErrInvalidToken, jwt.ErrTokenSignatureInvalid},
		"alg none":        {none, ErrInvalidToken, jwt.ErrTokenSignatureInvalid},
		"alg HS384":       {hs384, ErrInvalidToken, jwt.ErrTokenSignatureInvalid},
		"crit header":     {critTok, ErrInvalidToken, jwt.ErrTokenUnverifiable},
		"expired":         {hs256(t, secret, claims(func(m jwt.MapClaims) { m["exp"] = fixedNow.Add(-minute).Unix() })), ErrExpired, jwt.ErrTokenExpired},
		"missing exp":     {hs256(t, secret, claims(func(m jwt.MapClaims) { delete(m, "exp") })), ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing},
		"exp not number":  {hs256(t, secret, claims(func(m jwt.MapClaims) { m["exp"] = "tomorrow" })), ErrInvalidToken, jwt.ErrInvalidType},
		"nbf in future":   {hs256(t, secret, claims(func(m jwt.MapClaims) { m["nbf"] = fixedNow.Add(minute).Unix() })), ErrInvalidToken, jwt.ErrTokenNotValidYet},
		"iat in future":   {hs256(t, secret, claims(func(m jwt.MapClaims) { m["iat"] = fixedNow.Add(minute).Unix() })), ErrInvalidToken, jwt.ErrTokenUsedBeforeIssued},
		"wrong iss":       {hs256(t, secret, claims(func(m jwt.MapClaims) { m["iss"] = "https://evil.example" })), ErrInvalidToken, jwt.ErrTokenInvalidIssuer},
		"missing iss":     {hs256(t, secret, claims(func(m jwt.MapClaims) { delete(m, "iss") })), ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing},
		"wrong aud":       {hs256(t, secret, claims(func(m jwt.MapClaims) { m["aud"] = []string{"billing", "crm"} })), ErrInvalidToken, jwt.ErrTokenInvalidAudience},
		"missing aud":     {hs256(t, secret, claims(func(m jwt.MapClaims) { delete(m, "aud") })), ErrInvalidToken, jwt.ErrTokenRequiredClaimMissing},
		"expired and wrong iss": {hs256(t, secret, claims(func(m jwt.MapClaims) {
			m["exp"], m["iss"] = fixedNow.Add(-minute).Unix(), "https://evil.example"
		})), ErrInvalidToken, jwt.ErrTokenInvalidIssuer},
		"missing sub":     {hs256(t, secret, claims(func(m jwt.MapClaims) { delete(m, "sub") })), ErrBadClaims, nil},
		"sub not string":  {hs256(t, secret, claims(func(m jwt.MapClaims) { m["sub"] = 42 })), ErrBadClaims, nil},
		"unknown role":    {hs256(t, secret, claims(func(m jwt.MapClaims) { m["role"] = "root" })), ErrBadClaims, nil},
		"missing role":    {hs256(t, secret, claims(func(m jwt.MapClaims) { delete(m, "role") })), ErrBadClaims, nil},
		"name not string": {hs256(t, secret, claims(func(m jwt.MapClaims) { m["name"] = []string{"A"} })), ErrBadClaims, nil},
		"capacity 1001":   {hs256(t, secret, claims(func(m jwt.MapClaims) { m["cap"] = 1001 })), ErrBadClaims, nil},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := v.Verify(tc.tok)
			require.ErrorIs(t, err, tc.want)
			assert.Equal(t, 1, sentinels(err), "exactly one sentinel: %v", err)
			if tc.jwtErr != nil {
				assert.ErrorIs(t, err, tc.jwtErr)
			}
			assert.Zero(t, c)
		})
	}

	// An audience array containing ours is fine.
	_, err = v.Verify(hs256(t, secret, claims(func(m jwt.MapClaims) { m["aud"] = []string{"crm", aud} })))
	assert.NoError(t, err)
}

func TestLeeway(t *testing.T) {
	skew := 10 * time.Second
	tokens := map[string]string{
		"expired 10 s ago": hs256(t, secret, jwt.MapClaims{"sub": "u", "role": RoleAgent, "exp": fixedNow.Add(-skew).Unix()}),
		"nbf in 10 s":      hs256(t, secret, jwt.MapClaims{"sub": "u", "role": RoleAgent, "exp": fixedNow.Add(time.Hour).Unix(), "nbf": fixedNow.Add(skew).Unix()}),
		"iat in 10 s":      hs256(t, secret, jwt.MapClaims{"sub": "u", "role": RoleAgent, "exp": fixedNow.Add(time.Hour).Unix(), "iat": fixedNow.Add(skew).Unix()}),
	}
	for _, tc := range []struct {
		leeway time.Duration
		ok     bool
	}{{0, true}, {time.Minute, true}, {5 * time.Second, false}, {-1, false}} {
		v, err := newVerifier(Config{HMACSecret: secret, Leeway: tc.leeway}, fixedClock)
		require.NoError(t, err)
		for name, tok := range tokens {
			_, err := v.Verify(tok)
			if tc.ok {
				assert.NoError(t, err, "leeway %v, %s", tc.leeway, name)
			} else {
				assert.Error(t, err, "leeway %v, %s", tc.leeway, name)
			}
		}
		require.NoError(t, v.Close())
	}
}

// TestAlgConfusion: an attacker who knows an RSA public key from the JWKS
// signs an HS256 token with the key's bytes as the HMAC secret, hoping the
// verifier hands the same "key" to the HMAC check.
func TestAlgConfusion(t *testing.T) {
	rk := newRSAKey(t, "rsa-1")
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, rk)
	pub := rk.priv.Public()
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	pkcs1 := x509.MarshalPKCS1PublicKey(pub.(*rsa.PublicKey))
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	now := time.Now()
	var forged []string
	for _, key := range [][]byte{der, pkcs1, pemBytes, []byte(rk.jwk["n"].(string))} {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, agentClaims(now))
		tok.Header["kid"] = rk.kid
		s, err := tok.SignedString(key)
		require.NoError(t, err)
		forged = append(forged, s)
	}

	for name, cfg := range map[string]Config{
		"JWKS only":                   {JWKSFile: path},
		"JWKS and secret":             {JWKSFile: path, HMACSecret: secret},
		"JWKS and secret, HS256 on":   {JWKSFile: path, HMACSecret: secret, Algorithms: []string{AlgRS256, AlgHS256}},
		"JWKS, only RS256":            {JWKSFile: path, Algorithms: []string{AlgRS256}},
		"JWKS and secret, all listed": {JWKSFile: path, HMACSecret: secret, Algorithms: []string{AlgHS256, AlgRS256, AlgES256, AlgEdDSA}},
	} {
		t.Run(name, func(t *testing.T) {
			v, err := NewVerifier(cfg)
			require.NoError(t, err)
			defer v.Close()
			_, err = v.Verify(rk.sign(t, agentClaims(now)))
			require.NoError(t, err, "the real RS256 token verifies")
			for i, tok := range forged {
				_, err := v.Verify(tok)
				assert.ErrorIs(t, err, ErrInvalidToken, "forgery %d", i)
				assert.ErrorIs(t, err, jwt.ErrTokenSignatureInvalid, "forgery %d", i)
			}
		})
	}

	// The other way round: an HMAC-only verifier rejects RS256 tokens.
	v, err := NewVerifier(Config{HMACSecret: secret})
	require.NoError(t, err)
	defer v.Close()
	_, err = v.Verify(rk.sign(t, agentClaims(now)))
	assert.ErrorIs(t, err, ErrInvalidToken)
}

func TestClaimMapping(t *testing.T) {
	cfg := Config{
		HMACSecret:    secret,
		UserIDClaim:   "preferred_username",
		NameClaim:     "display_name",
		RoleClaim:     "https://desk.example/roles",
		TierClaim:     "plan",
		SkillsClaim:   "queues",
		CapacityClaim: "max_chats",
	}
	v, err := newVerifier(cfg, fixedClock)
	require.NoError(t, err)
	defer v.Close()
	exp := fixedNow.Add(time.Hour).Unix()
	base := func(kv ...any) jwt.MapClaims {
		m := jwt.MapClaims{"preferred_username": "bob", "exp": exp, "https://desk.example/roles": RoleAgent}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
			} else {
				m[kv[i].(string)] = kv[i+1]
			}
		}
		return m
	}
	cases := map[string]struct {
		claims jwt.MapClaims
		want   Claims
		err    error
	}{
		"all custom names": {base("display_name", "Bob", "queues", []string{"billing", "refunds"}, "max_chats", 5, "sub", "ignored", "role", "customer"),
			Claims{UserID: "bob", Name: "Bob", Role: RoleAgent, Skills: []string{"billing", "refunds"}, Capacity: 5, Expires: exp}, nil},
		"customer tier": {base("https://desk.example/roles", RoleCustomer, "plan", TierPremium),
			Claims{UserID: "bob", Role: RoleCustomer, Tier: TierPremium, Expires: exp}, nil},
		"skills space-separated": {base("queues", "billing refunds"),
			Claims{UserID: "bob", Role: RoleAgent, Skills: []string{"billing", "refunds"}, Expires: exp}, nil},
		"skills comma-separated": {base("queues", " billing, refunds ,,de "),
			Claims{UserID: "bob", Role: RoleAgent, Skills: []string{"billing", "refunds", "de"}, Expires: exp}, nil},
		"skills empty array":       {base("queues", []string{}), Claims{UserID: "bob", Role: RoleAgent, Expires: exp}, nil},
		"skills empty string":      {base("queues", ""), Claims{UserID: "bob", Role: RoleAgent, Expires: exp}, nil},
		"skills number":            {base("queues", 42), Claims{}, ErrBadClaims},
		"skills mixed array":       {base("queues", []any{"billing", 1}), Claims{}, ErrBadClaims},
		"capacity string":          {base("max_chats", "7"), Claims{UserID: "bob", Role: RoleAgent, Capacity: 7, Expires: exp}, nil},
		"capacity fraction":        {base("max_chats", 2.5), Claims{}, ErrBadClaims},
		"capacity bool":            {base("max_chats", true), Claims{}, ErrBadClaims},
		"capacity huge":            {base("max_chats", "99999999999999999999999"), Claims{}, ErrBadClaims},
		"capacity negative":        {base("max_chats", -1), Claims{}, ErrBadClaims},
		"role array":               {base("https://desk.example/roles", []string{"offline_access", RoleSupervisor}), Claims{UserID: "bob", Role: RoleSupervisor, Expires: exp}, nil},
		"role array repeated":      {base("https://desk.example/roles", []string{RoleAgent, RoleAgent}), Claims{UserID: "bob", Role: RoleAgent, Expires: exp}, nil},
		"role array ambiguous":     {base("https://desk.example/roles", []string{RoleAgent, RoleSupervisor}), Claims{}, ErrBadClaims},
		"role array none known":    {base("https://desk.example/roles", []string{"offline_access"}), Claims{}, ErrBadClaims},
		"role number":              {base("https://desk.example/roles", 1), Claims{}, ErrBadClaims},
		"default sub ignored":      {base("preferred_username", nil, "sub", "bob"), Claims{}, ErrBadClaims},
		"default role name unused": {base("https://desk.example/roles", nil, "role", RoleAgent), Claims{}, ErrBadClaims},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := v.Verify(hs256(t, secret, tc.claims))
			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c)
		})
	}

	// Sign writes the configured names.
	tok, err := v.Sign(Claims{UserID: "bob", Name: "Bob", Role: RoleAgent, Skills: []string{"billing"}, Capacity: 2})
	require.NoError(t, err)
	m := jwt.MapClaims{}
	_, _, err = jwt.NewParser().ParseUnverified(tok, m)
	require.NoError(t, err)
	assert.Equal(t, "bob", m["preferred_username"])
	assert.Equal(t, "Bob", m["display_name"])
	assert.Equal(t, RoleAgent, m["https://desk.example/roles"])
	assert.Equal(t, []any{"billing"}, m["queues"])
	assert.EqualValues(t, 2, m["max_chats"])
	assert.NotContains(t, m, "sub")
	c, err := v.Verify(tok)
	require.NoError(t, err)
	assert.Equal(t, "bob", c.UserID)
}

func TestDefaultRole(t *testing.T) {
	v, err := newVerifier(Config{HMACSecret: secret, DefaultRole: RoleCustomer, RoleClaim: "groups"}, fixedClock)
	require.NoError(t, err)
	defer v.Close()
	exp := fixedNow.Add(time.Hour).Unix()
	for name, role := range map[string]any{"missing": nil, "empty": "", "array without a known role": []string{"staff"}} {
		m := jwt.MapClaims{"sub": "u", "exp": exp}
		if role != nil {
			m["groups"] = role
		}
		c, err := v.Verify(hs256(t, secret, m))
		require.NoError(t, err, name)
		assert.Equal(t, Claims{UserID: "u", Role: RoleCustomer, Tier: TierStandard, Expires: exp}, c, name)
	}
	_, err = v.Verify(hs256(t, secret, jwt.MapClaims{"sub": "u", "exp": exp, "groups": "staff"}))
	assert.ErrorIs(t, err, ErrBadClaims, "an unknown role string is an error, not the default")
}

func TestConfigErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, newEdKey(t, "k"))
	cases := map[string]struct {
		cfg  Config
		want string
	}{
		"nothing":               {Config{}, "HMACSecret, JWKSFile or JWKSURL"},
		"short secret":          {Config{HMACSecret: []byte("short")}, "Config.HMACSecret"},
		"file and URL":          {Config{JWKSFile: path, JWKSURL: "https://idp.example/jwks"}, "only one of Config.JWKSFile and Config.JWKSURL"},
		"relative URL":          {Config{JWKSURL: "/jwks.json"}, "Config.JWKSURL"},
		"ftp URL":               {Config{JWKSURL: "ftp://idp.example/jwks"}, "Config.JWKSURL"},
		"negative refresh":      {Config{JWKSFile: path, JWKSRefresh: -time.Second}, "Config.JWKSRefresh"},
		"negative sign TTL":     {Config{HMACSecret: secret, SignTTL: -time.Second}, "Config.SignTTL"},
		"alg none":              {Config{HMACSecret: secret, Algorithms: []string{"none"}}, "Config.Algorithms"},
		"alg RS512":             {Config{JWKSFile: path, Algorithms: []string{"RS512"}}, "Config.Algorithms"},
		"HS256 without secret":  {Config{JWKSFile: path, Algorithms: []string{AlgHS256}}, "Config.Algorithms lists HS256"},
		"RS256 without JWKS":    {Config{HMACSecret: secret, Algorithms: []string{AlgRS256}}, "Config.Algorithms lists RS256"},
		"unknown default role":  {Config{HMACSecret: secret, DefaultRole: "admin"}, "Config.DefaultRole"},
		"claim name registered": {Config{HMACSecret: secret, RoleClaim: "iss"}, "Config.RoleClaim"},
		"claim names collide":   {Config{HMACSecret: secret, SkillsClaim: "role"}, "Config.RoleClaim and Config.SkillsClaim"},
		"missing file":          {Config{JWKSFile: path + ".missing"}, "Config.JWKSFile"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			v, err := NewVerifier(tc.cfg)
			assert.ErrorContains(t, err, tc.want)
			assert.Nil(t, v)
		})
	}
}

func TestDeprecatedSigner(t *testing.T) {
	s, err := NewSigner(secret)
	require.NoError(t, err)
	defer s.Close()
	tok, err := s.Sign(Claims{UserID: "u1", Role: RoleCustomer})
	require.NoError(t, err)
	c, err := s.Verify(tok)
	require.NoError(t, err)
	assert.Equal(t, "u1", c.UserID)
	_, err = NewSigner([]byte("short"))
	assert.Error(t, err)
}

func FuzzVerify(f *testing.F) {
	ed, ec := newEdKey(f, "ed"), newECKey(f, "ec")
	path := filepath.Join(f.TempDir(), "jwks.json")
	writeJWKS(f, path, ed, ec)
	v, err := NewVerifier(Config{HMACSecret: secret, JWKSFile: path, Algorithms: []string{AlgHS256, AlgRS256, AlgES256, AlgEdDSA}})
	require.NoError(f, err)
	f.Cleanup(func() { _ = v.Close() })
	now := time.Now()
	f.Add(hs256(f, secret, agentClaims(now)))
	f.Add(ed.sign(f, agentClaims(now)))
	f.Add(ec.sign(f, jwt.MapClaims{"sub": "c", "role": []string{"customer"}, "tier": "vip", "skills": "a b", "exp": json1e300{}}))
	f.Add(testKey{kid: "", method: ed.method, priv: ed.priv}.sign(f, agentClaims(now)))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("eyJhbGciOiJIUzI1NiIsImtpZCI6MX0.e30.AA")
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok)
		if err != nil {
			if sentinels(err) != 1 {
				t.Fatalf("error matches %d sentinels: %v", sentinels(err), err)
			}
			return
		}
		if c.UserID == "" || c.Expires == 0 {
			t.Fatalf("accepted %q as %+v", tok, c)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted %q with invalid claims: %v", tok, err)
		}
	})
}

// json1e300 marshals as an absurd exp.
type json1e300 struct{}

func (json1e300) MarshalJSON() ([]byte, error) { return []byte("1e300"), nil }
