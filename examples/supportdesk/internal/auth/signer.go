package auth

// Signer is the name of the HS256-only token signer this package had
// before it verified IdP JWTs.
//
// Deprecated: use Verifier.
type Signer = Verifier

// NewSigner is NewVerifier(Config{HMACSecret: secret}): a Verifier that
// signs and accepts HS256 tokens only. The secret must be at least 16 bytes.
//
// Deprecated: use NewVerifier.
func NewSigner(secret []byte) (*Signer, error) {
	return NewVerifier(Config{HMACSecret: secret})
}
