package auth

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"

	"github.com/golang-jwt/jwt/v5"
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

// Default claim names; Config's *Claim fields override them per deployment.
const (
	DefaultUserIDClaim   = "sub"
	DefaultNameClaim     = "name"
	DefaultRoleClaim     = "role"
	DefaultTierClaim     = "tier"
	DefaultSkillsClaim   = "skills"
	DefaultCapacityClaim = "cap"
)

// Claims are what a verified token asserts about its bearer, read from the
// claim names the Verifier was configured with.
type Claims struct {
	// UserID is the user's stable ID (claim "sub" by default), 1..128 bytes.
	UserID string
	// Name is the display name (claim "name" by default); optional.
	Name string
	// Role is customer, agent or supervisor (claim "role" by default).
	Role string
	// Tier is a customer's tier (claim "tier" by default); Validate fills
	// TierStandard when a customer has none.
	Tier string
	// Skills are an agent's skills (claim "skills" by default).
	Skills []string
	// Capacity is an agent's maximum of concurrent conversations (claim
	// "cap" by default); 0 means the server's default.
	Capacity int
	// Expires is the token's expiry ("exp"), Unix seconds. Verify always
	// sets it, since tokens without exp are rejected; Sign uses
	// Config.SignTTL from now when it is 0.
	Expires int64
}

// Validate checks the claims' fields and fills the default tier: UserID is
// 1..128 bytes; Role is customer, agent or supervisor; a customer's Tier is
// vip, premium or standard (empty becomes standard); an agent's or
// supervisor's Capacity is 0..1000. Errors wrap ErrBadClaims.
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

func knownRole(r string) bool {
	return r == RoleCustomer || r == RoleAgent || r == RoleSupervisor
}

// claimNames are the JSON member names a deployment's tokens use.
type claimNames struct {
	user, name, role, tier, skills, capacity string
}

// decode reads the application claims from a verified token's payload
// (decoded with json.Number). Type errors wrap ErrBadClaims.
func (n claimNames) decode(m jwt.MapClaims, defaultRole string) (Claims, error) {
	var c Claims
	var err error
	if c.UserID, err = stringClaim(m, n.user); err != nil {
		return Claims{}, err
	}
	if c.Name, err = stringClaim(m, n.name); err != nil {
		return Claims{}, err
	}
	if c.Role, err = roleClaim(m, n.role); err != nil {
		return Claims{}, err
	}
	if c.Role == "" {
		c.Role = defaultRole
	}
	if c.Tier, err = stringClaim(m, n.tier); err != nil {
		return Claims{}, err
	}
	if c.Skills, err = skillsClaim(m, n.skills); err != nil {
		return Claims{}, err
	}
	if c.Capacity, err = intClaim(m, n.capacity); err != nil {
		return Claims{}, err
	}
	exp, err := m.GetExpirationTime()
	if err != nil || exp == nil { // the parser already required a valid exp
		return Claims{}, fmt.Errorf("%w: exp", ErrBadClaims)
	}
	c.Expires = exp.Unix()
	return c, nil
}

// encode is decode's inverse for Sign.
func (n claimNames) encode(c Claims) jwt.MapClaims {
	m := jwt.MapClaims{n.user: c.UserID, n.role: c.Role, "exp": c.Expires}
	if c.Name != "" {
		m[n.name] = c.Name
	}
	if c.Tier != "" {
		m[n.tier] = c.Tier
	}
	if len(c.Skills) > 0 {
		m[n.skills] = c.Skills
	}
	if c.Capacity != 0 {
		m[n.capacity] = c.Capacity
	}
	return m
}

func stringClaim(m jwt.MapClaims, name string) (string, error) {
	switch v := m[name].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	default:
		return "", fmt.Errorf("%w: claim %q must be a string", ErrBadClaims, name)
	}
}

// roleClaim accepts a string or an array of strings; an array must name at
// most one of the known roles (other entries, such as IdP-specific roles,
// are ignored).
func roleClaim(m jwt.MapClaims, name string) (string, error) {
	arr, ok := m[name].([]any)
	if !ok {
		return stringClaim(m, name)
	}
	role := ""
	for _, e := range arr {
		s, ok := e.(string)
		if !ok {
			return "", fmt.Errorf("%w: claim %q must be a string or an array of strings", ErrBadClaims, name)
		}
		if !knownRole(s) || s == role {
			continue
		}
		if role != "" {
			return "", fmt.Errorf("%w: claim %q names both %q and %q", ErrBadClaims, name, role, s)
		}
		role = s
	}
	return role, nil
}

// skillsClaim accepts an array of strings or one string of skills separated
// by spaces and/or commas (OAuth "scope" style).
func skillsClaim(m jwt.MapClaims, name string) ([]string, error) {
	var skills []string
	switch v := m[name].(type) {
	case nil:
	case string:
		skills = strings.FieldsFunc(v, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	case []any:
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%w: claim %q must be a string or an array of strings", ErrBadClaims, name)
			}
			if s = strings.TrimSpace(s); s != "" {
				skills = append(skills, s)
			}
		}
	default:
		return nil, fmt.Errorf("%w: claim %q must be a string or an array of strings", ErrBadClaims, name)
	}
	if len(skills) == 0 {
		return nil, nil
	}
	return skills, nil
}

// intClaim accepts an integer JSON number or a string holding one (some
// IdPs only have string attributes).
func intClaim(m jwt.MapClaims, name string) (int, error) {
	var s string
	switch v := m[name].(type) {
	case nil:
		return 0, nil
	case json.Number:
		s = v.String()
	case string:
		s = strings.TrimSpace(v)
	default:
		return 0, fmt.Errorf("%w: claim %q must be an integer", ErrBadClaims, name)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%w: claim %q must be an integer", ErrBadClaims, name)
	}
	return n, nil
}
