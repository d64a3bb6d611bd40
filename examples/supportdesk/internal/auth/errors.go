package auth

import (
	"errors"
	"fmt"

	"github.com/golang-jwt/jwt/v5"
)

// Errors returned by Verifier.Verify. Every Verify error matches exactly one
// of ErrInvalidToken, ErrExpired and ErrBadClaims with errors.Is; it also
// wraps the jwt library's error (e.g. jwt.ErrTokenExpired,
// jwt.ErrTokenSignatureInvalid) when the library reported it.
var (
	// ErrInvalidToken: malformed, badly signed, signed with an algorithm
	// that is not accepted, without exp, not yet valid (nbf, iat), or for
	// another issuer or audience.
	ErrInvalidToken = errors.New("auth: invalid token")
	// ErrExpired: valid except that exp has passed (beyond the leeway).
	ErrExpired = errors.New("auth: token expired")
	// ErrBadClaims: validly signed, but the application claims are
	// missing, of the wrong type, or fail Claims.Validate.
	ErrBadClaims = errors.New("auth: bad claims")
	// ErrUnknownKey refines ErrInvalidToken: no key in the JWKS has the
	// token's kid (and algorithm), even after re-reading the JWKS.
	ErrUnknownKey = errors.New("auth: unknown signing key")
)

// classify maps an error from the jwt parser onto the package's sentinels.
// A token is "expired" only when expiry is its sole defect, so that a
// client is never told to refresh a token that is wrong in another way.
func classify(err error) error {
	if errors.Is(err, jwt.ErrTokenExpired) && !otherClaimError(err) {
		return fmt.Errorf("%w: %w", ErrExpired, err)
	}
	return fmt.Errorf("%w: %w", ErrInvalidToken, err)
}

func otherClaimError(err error) bool {
	for _, e := range []error{
		jwt.ErrTokenNotValidYet, jwt.ErrTokenUsedBeforeIssued, jwt.ErrTokenInvalidIssuer,
		jwt.ErrTokenInvalidAudience, jwt.ErrTokenRequiredClaimMissing, jwt.ErrInvalidType,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
