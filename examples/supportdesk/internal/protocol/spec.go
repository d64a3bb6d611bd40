package protocol

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// specJSON is spec.json: PROTOCOL.md in machine-readable form.
//
//go:embed spec.json
var specJSON []byte

// Spec is the machine-readable form of PROTOCOL.md: every client type with
// who may send it, every server type with its fields, every error code and
// close code, and the limits. The server's authorization and the
// conformance tests read the same Spec, so they cannot disagree; spec_test.go
// checks it against PROTOCOL.md and this package's constants.
//
// A Spec is read-only once parsed; its methods are safe for concurrent use.
type Spec struct {
	Version int `json:"version"`
	// Roles are the roles a token may carry.
	Roles []string `json:"roles"`
	// Scopes say which relation to a conversation each scope requires and
	// what a sender without it is answered.
	Scopes map[Scope]ScopeRule `json:"scopes"`
	// ClientTypes are the types a client may send, by type.
	ClientTypes map[string]Rule `json:"client"`
	// ServerTypes are the types the server sends, by type.
	ServerTypes map[string]ServerType `json:"server"`
	// ErrorCodes maps each error code to when it is sent.
	ErrorCodes map[string]string `json:"errors"`
	// CloseCodes are the WebSocket close codes the server sends.
	CloseCodes map[int]CloseCode `json:"close"`
	// Limits are the documented limits.
	Limits Limits `json:"limits"`

	Doc   string `json:"doc"`
	Order string `json:"order"`
}

// Scope names the relation to a conversation a request requires.
type Scope string

// Scopes of spec.json.
const (
	// ScopeAny needs no relation; a conversation the request names must exist.
	ScopeAny Scope = "any"
	// ScopeOwn is the conversation's customer.
	ScopeOwn Scope = "own"
	// ScopeParticipant is the conversation's customer or its assigned agent.
	ScopeParticipant Scope = "participant"
	// ScopeMember is a participant or a supervisor watching the conversation.
	ScopeMember Scope = "member"
	// ScopeAssignedOrSupervisor is the assigned agent or any supervisor.
	ScopeAssignedOrSupervisor Scope = "assigned-or-supervisor"
	// ScopeOfferee is the agent the conversation's pending offer is for.
	ScopeOfferee Scope = "offeree"
)

// ScopeRule describes one Scope.
type ScopeRule struct {
	Means string `json:"means"`
	// Error is the code answering a sender outside the scope ("" for
	// ScopeAny, which admits everyone).
	Error string `json:"error"`
	// Unknown is the code answering a request naming a conversation that
	// does not exist.
	Unknown string `json:"unknown"`
}

// Rule is one client type: who may send it, its fields, and its answer.
type Rule struct {
	// Who is PROTOCOL.md's "who" cell, verbatim.
	Who string `json:"who"`
	// Roles may send the type; a sender of another role gets forbidden.
	Roles []string `json:"roles"`
	// Scope is the relation to the named conversation the sender needs.
	Scope Scope `json:"scope"`
	// Required fields (JSON names): a request without one gets bad_request.
	Required []string `json:"required"`
	// Optional fields (JSON names).
	Optional []string `json:"optional"`
	// OmitConv are roles that may leave out a required conv (a customer's
	// first message opens the conversation); the scope is then not checked.
	OmitConv []string `json:"omit_conv"`
	// Reply is the type a successful request is answered with ("" none).
	Reply string `json:"reply"`
	// ReplyTo is "requester" when Reply goes to the requester alone, and
	// "members" when it goes to everyone in the conversation (the requester
	// gets it as one of them).
	ReplyTo string `json:"reply_to"`
	// Notify are the types the conversation's other members receive, in
	// order (typing: not the sender).
	Notify []string `json:"notify"`
}

// ServerType is one server → client type.
type ServerType struct {
	// To is PROTOCOL.md's "to" cell, verbatim.
	To string `json:"to"`
	// Fields the type carries (JSON names).
	Fields []string `json:"fields"`
}

// CloseCode is one WebSocket close code.
type CloseCode struct {
	Name  string `json:"name"`
	Means string `json:"means"`
}

// Limits are PROTOCOL.md's numeric limits.
type Limits struct {
	MaxFrame       int `json:"max_frame"`        // bytes per frame (close 1009 beyond)
	MaxText        int `json:"max_text"`         // bytes of a message's text (bad_json beyond)
	FrameRate      int `json:"frame_rate"`       // frames/s per connection (close 1008 beyond)
	FrameBurst     int `json:"frame_burst"`      // burst of FrameRate
	MessageRate    int `json:"message_rate"`     // messages/s per sender and conversation (rate_limited beyond)
	MessageBurst   int `json:"message_burst"`    // burst of MessageRate
	WaitingRoom    int `json:"waiting_room"`     // conversations per waiting-room tier (queue_full beyond)
	MaxQueuedBytes int `json:"max_queued_bytes"` // bytes queued for a slow reader (close 4008 beyond)
}

// Reply destinations of Rule.ReplyTo.
const (
	ReplyToRequester = "requester"
	ReplyToMembers   = "members"
)

// ErrBadSpec wraps every inconsistency ParseSpec finds.
var ErrBadSpec = errors.New("protocol: invalid spec")

// envelopeFields maps Envelope's JSON names to their field indexes.
var envelopeFields = sync.OnceValue(func() map[string]int {
	m := map[string]int{}
	t := reflect.TypeFor[Envelope]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[name] = i
		}
	}
	return m
})

// EnvelopeField reports whether name is the JSON name of an Envelope field.
func EnvelopeField(name string) bool {
	_, ok := envelopeFields()[name]
	return ok
}

// ParseSpec parses and checks a spec: every role, scope, field, reply type
// and error code a rule names must be defined.
func ParseSpec(data []byte) (*Spec, error) {
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSpec, err)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSpec, err)
	}
	return &s, nil
}

func (s *Spec) check() error {
	if len(s.Roles) == 0 || len(s.ClientTypes) == 0 || len(s.ServerTypes) == 0 || len(s.ErrorCodes) == 0 || len(s.CloseCodes) == 0 {
		return errors.New("roles, client, server, errors and close must not be empty")
	}
	code := func(where, c string) error {
		if _, ok := s.ErrorCodes[c]; !ok {
			return fmt.Errorf("%s: unknown error code %q", where, c)
		}
		return nil
	}
	for name, sc := range s.Scopes {
		if sc.Error != "" || name != ScopeAny {
			if err := code("scope "+string(name), sc.Error); err != nil {
				return err
			}
		}
		if err := code("scope "+string(name), sc.Unknown); err != nil {
			return err
		}
	}
	for typ, r := range s.ClientTypes {
		where := "client type " + typ
		if len(r.Roles) == 0 {
			return fmt.Errorf("%s: no roles", where)
		}
		for _, role := range append(slices.Clone(r.Roles), r.OmitConv...) {
			if !slices.Contains(s.Roles, role) {
				return fmt.Errorf("%s: unknown role %q", where, role)
			}
		}
		if _, ok := s.Scopes[r.Scope]; !ok {
			return fmt.Errorf("%s: unknown scope %q", where, r.Scope)
		}
		for _, f := range append(slices.Clone(r.Required), r.Optional...) {
			if !EnvelopeField(f) {
				return fmt.Errorf("%s: %q is not an envelope field", where, f)
			}
		}
		for _, f := range r.Required {
			if slices.Contains(r.Optional, f) {
				return fmt.Errorf("%s: %q is both required and optional", where, f)
			}
		}
		if len(r.OmitConv) > 0 && !slices.Contains(r.Required, "conv") {
			return fmt.Errorf("%s: omit_conv without a required conv", where)
		}
		if r.Scope != ScopeAny && !slices.Contains(r.Required, "conv") {
			return fmt.Errorf("%s: scope %q needs a required conv", where, r.Scope)
		}
		switch {
		case r.Reply == "" && r.ReplyTo != "":
			return fmt.Errorf("%s: reply_to without reply", where)
		case r.Reply != "" && r.ReplyTo != ReplyToRequester && r.ReplyTo != ReplyToMembers:
			return fmt.Errorf("%s: reply_to %q is neither %q nor %q", where, r.ReplyTo, ReplyToRequester, ReplyToMembers)
		}
		for _, t := range append([]string{r.Reply}, r.Notify...) {
			if _, ok := s.ServerTypes[t]; t != "" && !ok {
				return fmt.Errorf("%s: answer %q is not a server type", where, t)
			}
		}
	}
	for typ, st := range s.ServerTypes {
		for _, f := range st.Fields {
			if !EnvelopeField(f) {
				return fmt.Errorf("server type %s: %q is not an envelope field", typ, f)
			}
		}
	}
	for c, cc := range s.CloseCodes {
		if c < 1000 || c > 4999 || cc.Name == "" {
			return fmt.Errorf("close code %d: out of range or unnamed", c)
		}
	}
	return nil
}

var embedded = sync.OnceValues(func() (*Spec, error) { return ParseSpec(specJSON) })

// Embedded returns the spec compiled into the binary (spec.json), parsed on
// first use and shared: treat it as read-only. It panics if spec.json is
// invalid, which TestEmbeddedSpec rules out.
func Embedded() *Spec {
	s, err := embedded()
	if err != nil {
		panic(err)
	}
	return s
}

// Relation is what the server knows of a request's sender and the
// conversation the request names.
type Relation struct {
	// Exists: the named conversation exists.
	Exists bool
	// Customer: the sender is the conversation's customer.
	Customer bool
	// Assigned: the sender is its assigned agent.
	Assigned bool
	// Watching: the sender is a supervisor watching it.
	Watching bool
	// Offeree: the conversation's pending offer is for the sender (and the
	// request names that offer).
	Offeree bool
}

// Missing returns the JSON name of the first required field e lacks ("" if
// none). A zero value counts as missing, as it does on the wire, where empty
// fields are omitted; a conv that role may omit does not count.
func (r *Rule) Missing(e *Envelope, role string) string {
	v := reflect.ValueOf(e).Elem()
	fields := envelopeFields()
	for _, f := range r.Required {
		if f == "conv" && slices.Contains(r.OmitConv, role) {
			continue
		}
		if v.Field(fields[f]).IsZero() {
			return f
		}
	}
	return ""
}

// Admit returns the error code for what can be decided about request e from
// a sender of role without looking at its conversation — unknown_type,
// forbidden, bad_request — or "".
func (s *Spec) Admit(e *Envelope, role string) string {
	r, ok := s.ClientTypes[e.Type]
	switch {
	case !ok:
		return ErrCodeUnknownType
	case !slices.Contains(r.Roles, role):
		return ErrCodeForbidden
	case r.Missing(e, role) != "":
		return ErrCodeBadRequest
	}
	return ""
}

// Authorize returns the error code the protocol answers request e from a
// sender of role with relation rel to e's conversation, or "" when the
// request is allowed. Checks run in the spec's order: type, role, required
// fields, the conversation's existence, the sender's scope. A request
// without conv that role may omit it (a customer's first message) is not
// checked against a conversation.
func (s *Spec) Authorize(e *Envelope, role string, rel Relation) string {
	if c := s.Admit(e, role); c != "" {
		return c
	}
	r := s.ClientTypes[e.Type]
	if e.Conv == "" || !slices.Contains(r.Required, "conv") {
		return "" // no conversation to check against
	}
	sc := s.Scopes[r.Scope]
	if !rel.Exists {
		return sc.Unknown
	}
	if inScope(r.Scope, role, rel) {
		return ""
	}
	return sc.Error
}

func inScope(sc Scope, role string, rel Relation) bool {
	switch sc {
	case ScopeAny:
		return true
	case ScopeOwn:
		return rel.Customer
	case ScopeParticipant:
		return rel.Customer || rel.Assigned
	case ScopeMember:
		return rel.Customer || rel.Assigned || rel.Watching
	case ScopeAssignedOrSupervisor:
		return rel.Assigned || role == "supervisor"
	case ScopeOfferee:
		return rel.Offeree
	}
	return false
}
