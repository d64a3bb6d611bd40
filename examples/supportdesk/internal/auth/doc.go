// Package auth verifies the JSON Web Tokens (JWT, RFC 7519) that identify
// supportdesk users, and signs HS256 tokens for development.
//
// Hosts authenticate users with their identity provider (IdP), which signs
// JWTs with keys it publishes as a JWK Set (JWKS, RFC 7517). A [Verifier],
// built by [NewVerifier] from a [Config], checks a token's signature
// against those keys (or, for development and single-secret deployments,
// against a shared HMAC secret), checks its registered claims, and maps the
// deployment's claim names onto [Claims]. A Verifier with a JWKS owns one
// goroutine that keeps the keys fresh; [Verifier.Close] stops it.
//
// # Token format
//
// A token is a compact JWS: base64url(header) "." base64url(payload) "."
// base64url(signature), at most [MaxTokenLen] bytes, sent by clients as the
// "token" query parameter or an "Authorization: Bearer" header.
//
// # Algorithms
//
// Only the algorithms in Config.Algorithms are accepted; "none" and every
// other alg are rejected before a key is looked up, and each algorithm is
// only ever given a key of its own type, so a public key can never be used
// as an HMAC secret (algorithm confusion).
//
//	alg    key                                   enabled by default when
//	HS256  Config.HMACSecret (≥ 16 bytes)        only HMACSecret is set
//	RS256  JWK kty "RSA" (n, e), 2048..8192 bits a JWKS is set
//	ES256  JWK kty "EC", crv "P-256" (x, y)      a JWKS is set
//	EdDSA  JWK kty "OKP", crv "Ed25519" (x)      a JWKS is set
//
// With both a secret and a JWKS, HS256 is accepted only if listed in
// Config.Algorithms. JWKS keys are selected by the token's "kid" header; a
// token without kid is accepted only when the JWKS has a single key for its
// algorithm. JWKs with "use" other than "sig", "key_ops" without "verify",
// an "alg" other than the one their type verifies, or another type or curve
// are ignored. A JWKS file is re-read when it changes; a JWKS URL is
// re-fetched every Config.JWKSRefresh (default 5 min, shortened by
// Cache-Control max-age, not below 30 s). A token with an unknown kid
// triggers a re-read at once (for a URL at most once per 30 s), so keys the
// IdP rotates in are picked up on first use; keys it removes stop verifying
// at the next refresh.
//
// # Claims
//
// Registered claims: "exp" is required; "exp", "nbf" and "iat" are checked
// with Config.Leeway (default 30 s); "iss" and "aud" must match
// Config.Issuer and Config.Audience when those are set. The application
// claims have configurable names because IdPs differ:
//
//	Claims field  default claim  Config field   JSON type
//	UserID        sub            UserIDClaim    string, 1..128 bytes (required)
//	Name          name           NameClaim      string
//	Role          role           RoleClaim      "customer", "agent" or "supervisor"; or an array of strings naming one of them (others ignored)
//	Tier          tier           TierClaim      "vip", "premium" or "standard" (customers; default "standard")
//	Skills        skills         SkillsClaim    array of strings, or one string separated by spaces and/or commas
//	Capacity      cap            CapacityClaim  integer 0..1000 (agents; 0 = server default), or a string holding one
//	Expires       exp            -              NumericDate (Unix seconds), required
//
// A missing or empty role, or an array naming none of the three, is
// Config.DefaultRole when set, else an error; an array naming two is an
// error.
// [Verifier.Sign] writes the same names, with iat, exp, and iss and aud when
// configured.
//
// # Errors
//
// Every error of [Verifier.Verify] matches exactly one of
//
//   - [ErrInvalidToken]: malformed, bad signature, algorithm not accepted,
//     exp missing, nbf or iat in the future, wrong iss or aud. Refined by
//     [ErrUnknownKey] when no JWKS key has the token's kid, even after
//     re-reading the JWKS.
//   - [ErrExpired]: exp has passed; expiry is the token's only defect.
//   - [ErrBadClaims]: validly signed, but the application claims are of
//     the wrong type or fail [Claims.Validate].
//
// and, when the github.com/golang-jwt/jwt/v5 parser reported the problem,
// wraps its error too (for example jwt.ErrTokenExpired), so errors.Is works
// for both.
package auth
