package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithms ("alg" header values) a Verifier can accept.
const (
	AlgHS256 = "HS256" // HMAC-SHA256 with Config.HMACSecret
	AlgRS256 = "RS256" // RSASSA-PKCS1-v1_5 SHA-256, RSA key (2048..8192 bits) from the JWKS
	AlgES256 = "ES256" // ECDSA P-256 SHA-256, EC key from the JWKS
	AlgEdDSA = "EdDSA" // Ed25519, OKP key from the JWKS
)

// MaxTokenLen is the longest token Verify accepts, in bytes.
const MaxTokenLen = 8 << 10

const (
	minSecretLen       = 16
	defaultLeeway      = 30 * time.Second
	defaultSignTTL     = 24 * time.Hour
	defaultJWKSRefresh = 5 * time.Minute
)

// Config configures a Verifier. Set HMACSecret, one JWKS source (JWKSFile
// or JWKSURL), or both. Zero values mean the documented defaults.
type Config struct {
	// HMACSecret enables HS256 tokens and Sign; at least 16 bytes. Default:
	// none. All nodes of a cluster need the same secret.
	HMACSecret []byte

	// JWKSFile is the path of a JWK Set (RFC 7517) holding the identity
	// provider's public keys. It is read by NewVerifier (an unreadable or
	// keyless file is a configuration error) and re-read when its
	// modification time, size or inode changes; the change is noticed at
	// the next refresh tick or the next token with an unknown kid. Replace
	// it atomically (write a temporary file, then rename). Default: none.
	JWKSFile string
	// JWKSURL is the https (or, for development, http) URL of a JWK Set,
	// usually the IdP's jwks_uri. It is fetched in the background right
	// after NewVerifier, every JWKSRefresh, and when a token names a kid
	// the set lacks (at most once per 30 s). Verify waits for a fetch it
	// triggered; call Refresh to fail fast at startup. Default: none.
	JWKSURL string
	// JWKSRefresh is how often the JWKS is re-fetched (URL) or its file
	// checked for changes. A URL response's Cache-Control max-age shortens
	// it, but never below 30 s. Default: 5 minutes.
	JWKSRefresh time.Duration
	// HTTPClient fetches JWKSURL. Each fetch is also bounded by a 10 s
	// timeout and the response by 1 MiB. Default: a client of the
	// Verifier's own, whose idle connections Close closes.
	HTTPClient *http.Client
	// OnRefreshError, if set, is called from the Verifier's goroutine
	// (never under a lock) when a background JWKS load fails; the previous
	// keys stay in use. Default: none.
	OnRefreshError func(error)

	// Algorithms lists the accepted algorithms, a subset of AlgHS256,
	// AlgRS256, AlgES256 and AlgEdDSA; tokens with any other "alg"
	// (including "none") are rejected before any key is looked up. HS256
	// needs HMACSecret; the others need a JWKS. Default: HS256 with only
	// HMACSecret, RS256+ES256+EdDSA with only a JWKS, and with both also
	// only RS256+ES256+EdDSA: list HS256 explicitly to accept
	// shared-secret tokens next to the IdP's.
	Algorithms []string

	// Issuer, if set, must equal the token's "iss". Default: not checked.
	Issuer string
	// Audience, if set, must be (one of) the token's "aud". Default: not
	// checked.
	Audience string
	// Leeway is the clock skew tolerated when checking exp, nbf and iat.
	// Default (0): 30 s; negative: none.
	Leeway time.Duration

	// SignTTL is the lifetime Sign gives tokens whose Claims.Expires is 0.
	// Default: 24 hours.
	SignTTL time.Duration

	// Claim names, for identity providers that cannot emit the defaults.
	// Each must be distinct and none may be a registered claim other than
	// "sub" (exp, nbf, iat, iss, aud, jti). Defaults: "sub", "name",
	// "role", "tier", "skills", "cap".
	UserIDClaim, NameClaim, RoleClaim, TierClaim, SkillsClaim, CapacityClaim string
	// DefaultRole, if set (customer, agent or supervisor), is the role of
	// a token whose role claim is missing, empty, or an array naming none
	// of the three. Default: none, such tokens fail with ErrBadClaims.
	DefaultRole string
}

// fill validates cfg and applies the defaults; errors name the field.
func (cfg *Config) fill() error {
	if len(cfg.HMACSecret) > 0 && len(cfg.HMACSecret) < minSecretLen {
		return fmt.Errorf("auth: Config.HMACSecret must be at least %d bytes, got %d", minSecretLen, len(cfg.HMACSecret))
	}
	hasHMAC := len(cfg.HMACSecret) > 0
	if cfg.JWKSFile != "" && cfg.JWKSURL != "" {
		return errors.New("auth: set only one of Config.JWKSFile and Config.JWKSURL")
	}
	hasJWKS := cfg.JWKSFile != "" || cfg.JWKSURL != ""
	if !hasHMAC && !hasJWKS {
		return errors.New("auth: Config needs HMACSecret, JWKSFile or JWKSURL")
	}
	if cfg.JWKSURL != "" {
		u, err := url.Parse(cfg.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("auth: Config.JWKSURL must be an absolute https or http URL, got %q", cfg.JWKSURL)
		}
	}
	switch {
	case cfg.JWKSRefresh < 0:
		return fmt.Errorf("auth: Config.JWKSRefresh must not be negative, got %v", cfg.JWKSRefresh)
	case cfg.JWKSRefresh == 0:
		cfg.JWKSRefresh = defaultJWKSRefresh
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = defaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	switch {
	case cfg.SignTTL < 0:
		return fmt.Errorf("auth: Config.SignTTL must not be negative, got %v", cfg.SignTTL)
	case cfg.SignTTL == 0:
		cfg.SignTTL = defaultSignTTL
	}
	if len(cfg.Algorithms) == 0 {
		if hasJWKS {
			cfg.Algorithms = []string{AlgRS256, AlgES256, AlgEdDSA}
		} else {
			cfg.Algorithms = []string{AlgHS256}
		}
	} else {
		algs := make([]string, 0, len(cfg.Algorithms))
		for _, a := range cfg.Algorithms {
			switch a {
			case AlgHS256:
				if !hasHMAC {
					return errors.New("auth: Config.Algorithms lists HS256 but Config.HMACSecret is empty")
				}
			case AlgRS256, AlgES256, AlgEdDSA:
				if !hasJWKS {
					return fmt.Errorf("auth: Config.Algorithms lists %s but no JWKSFile or JWKSURL is set", a)
				}
			default:
				return fmt.Errorf("auth: Config.Algorithms: unsupported algorithm %q (want HS256, RS256, ES256 or EdDSA)", a)
			}
			if !slices.Contains(algs, a) {
				algs = append(algs, a)
			}
		}
		cfg.Algorithms = algs
	}
	if cfg.DefaultRole != "" && !knownRole(cfg.DefaultRole) {
		return fmt.Errorf("auth: Config.DefaultRole must be customer, agent or supervisor, got %q", cfg.DefaultRole)
	}
	names := []struct {
		field string
		name  *string
		def   string
	}{
		{"UserIDClaim", &cfg.UserIDClaim, DefaultUserIDClaim},
		{"NameClaim", &cfg.NameClaim, DefaultNameClaim},
		{"RoleClaim", &cfg.RoleClaim, DefaultRoleClaim},
		{"TierClaim", &cfg.TierClaim, DefaultTierClaim},
		{"SkillsClaim", &cfg.SkillsClaim, DefaultSkillsClaim},
		{"CapacityClaim", &cfg.CapacityClaim, DefaultCapacityClaim},
	}
	seen := make(map[string]string, len(names))
	for _, n := range names {
		if *n.name == "" {
			*n.name = n.def
		}
		switch *n.name {
		case "exp", "nbf", "iat", "iss", "aud", "jti":
			return fmt.Errorf("auth: Config.%s: %q is a registered JWT claim", n.field, *n.name)
		}
		if prev, dup := seen[*n.name]; dup {
			return fmt.Errorf("auth: Config.%s and Config.%s are both %q", prev, n.field, *n.name)
		}
		seen[*n.name] = n.field
	}
	return nil
}

// Verifier verifies JWTs (RFC 7519) signed with a shared HMAC secret or
// with keys from an identity provider's JWKS, and maps their claims onto
// Claims. Its methods are safe for concurrent use. A Verifier with a
// JWKSURL or JWKSFile owns a goroutine that keeps the keys fresh; Close
// stops it.
type Verifier struct {
	secret      []byte // nil unless HS256 is accepted
	parser      *jwt.Parser
	keyfunc     jwt.Keyfunc
	names       claimNames
	defaultRole string
	issuer      string
	audience    string
	signTTL     time.Duration
	now         func() time.Time
	jwks        *jwks // nil without a JWKS
}

// NewVerifier validates cfg, fills its defaults and returns a Verifier. With
// JWKSFile it reads the file (and fails if it holds no usable key); with
// JWKSURL it starts the first fetch in the background. Errors name the
// offending Config field.
func NewVerifier(cfg Config) (*Verifier, error) {
	return newVerifier(cfg, time.Now)
}

// newVerifier is NewVerifier with a clock for tests that use real sockets
// (and therefore cannot run under testing/synctest).
func newVerifier(cfg Config, now func() time.Time) (*Verifier, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	v := &Verifier{
		names: claimNames{
			user: cfg.UserIDClaim, name: cfg.NameClaim, role: cfg.RoleClaim,
			tier: cfg.TierClaim, skills: cfg.SkillsClaim, capacity: cfg.CapacityClaim,
		},
		defaultRole: cfg.DefaultRole,
		issuer:      cfg.Issuer,
		audience:    cfg.Audience,
		signTTL:     cfg.SignTTL,
		now:         now,
	}
	if slices.Contains(cfg.Algorithms, AlgHS256) {
		v.secret = slices.Clone(cfg.HMACSecret)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(cfg.Algorithms),
		jwt.WithJSONNumber(),
		jwt.WithStrictDecoding(),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	v.keyfunc = v.key
	if cfg.JWKSFile != "" || cfg.JWKSURL != "" {
		j, err := newJWKS(cfg, now)
		if err != nil {
			return nil, err
		}
		v.jwks = j
	}
	return v, nil
}

// Verify checks token's signature, algorithm, expiry (required), nbf, iat,
// issuer and audience, then maps and validates its claims (Claims.Validate).
// The returned Claims always carry Expires. Errors match ErrInvalidToken
// (and ErrUnknownKey for an unknown kid), ErrExpired or ErrBadClaims.
//
// A token whose kid is not in the JWKS makes Verify re-read the JWKS (for
// a URL at most once per 30 s) and wait for that, at most the fetch
// timeout; Close ends the wait.
func (v *Verifier) Verify(token string) (Claims, error) {
	if len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, MaxTokenLen)
	}
	m := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, m, v.keyfunc); err != nil {
		return Claims{}, classify(err)
	}
	c, err := v.names.decode(m, v.defaultRole)
	if err != nil {
		return Claims{}, err
	}
	if err := c.Validate(); err != nil {
		return Claims{}, err
	}
	return c, nil
}

// key is the jwt.Keyfunc: the parser has already checked that the token's
// algorithm is one of Config.Algorithms, and each algorithm only ever gets
// a key of its own type, so an HMAC secret is never a public key's bytes.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		return nil, errors.New("auth: critical header extensions are not supported")
	}
	alg := t.Method.Alg()
	if alg == AlgHS256 {
		if v.secret == nil {
			return nil, errors.New("auth: HS256 is not accepted")
		}
		return v.secret, nil
	}
	var kid string
	if raw, ok := t.Header["kid"]; ok {
		if kid, ok = raw.(string); !ok {
			return nil, errors.New("auth: kid header is not a string")
		}
	}
	if v.jwks == nil {
		return nil, fmt.Errorf("%w: no JWKS for %s", ErrUnknownKey, alg)
	}
	return v.jwks.key(alg, kid)
}

// Sign validates c (filling its default tier) and returns it as an HS256
// JWT signed with Config.HMACSecret, using the configured claim names, with
// iat now, exp c.Expires (or now + Config.SignTTL when 0), and iss and aud
// when configured. It fails unless HS256 is among Config.Algorithms, so
// the tokens it issues always pass this Verifier's Verify (until expiry).
func (v *Verifier) Sign(c Claims) (string, error) {
	if v.secret == nil {
		return "", errors.New("auth: Sign needs Config.HMACSecret and HS256 among Config.Algorithms")
	}
	if err := c.Validate(); err != nil {
		return "", err
	}
	now := v.now()
	if c.Expires == 0 {
		c.Expires = now.Add(v.signTTL).Unix()
	}
	m := v.names.encode(c)
	m["iat"] = now.Unix()
	if v.issuer != "" {
		m["iss"] = v.issuer
	}
	if v.audience != "" {
		m["aud"] = v.audience
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, m).SignedString(v.secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return tok, nil
}

// Refresh re-reads the JWKS now (a file only if it changed) and returns
// the load's error; on error the previous keys stay in use. Call it at
// startup to fail fast when a JWKSURL is unreachable. It is not rate
// limited and is a no-op without a JWKS.
func (v *Verifier) Refresh(ctx context.Context) error {
	if v.jwks == nil {
		return nil
	}
	_, err := v.jwks.reload(ctx)
	return err
}

// Close stops the JWKS goroutine, ends Verify calls waiting for a JWKS
// load, and closes the idle connections of the Verifier's own HTTP client.
// Verify keeps working with the keys already loaded. Close is idempotent
// and always returns nil.
func (v *Verifier) Close() error {
	if v.jwks != nil {
		v.jwks.close()
	}
	return nil
}
