// Package protocol defines the supportdesk wire protocol: JSON envelopes
// (encoded with sonic) exchanged over WebSocket text frames. PROTOCOL.md in
// the supportdesk directory documents every type with examples; this package
// is its executable form.
package protocol

import (
	"errors"
	"fmt"

	"github.com/bytedance/sonic"
)

// Client → server message types.
const (
	TypeStart    = "start"    // customer opens a conversation (optional; a first message does it too)
	TypeMessage  = "message"  // chat text in a conversation (also server → client)
	TypeTyping   = "typing"   // ephemeral typing indicator (also server → client)
	TypeRead     = "read"     // read receipt: the reader's read offset (also server → client)
	TypeResume   = "resume"   // recover a conversation from an offset after a reconnect
	TypeCancel   = "cancel"   // customer leaves the queue
	TypeAccept   = "accept"   // agent accepts an offer
	TypeDecline  = "decline"  // agent declines an offer
	TypePresence = "presence" // agent sets online / busy / away
	TypeTransfer = "transfer" // agent transfers to another agent or back to the queue
	TypeResolve  = "resolve"  // agent or customer resolves the conversation
	TypeWatch    = "watch"    // supervisor starts watching a conversation
	TypeUnwatch  = "unwatch"  // supervisor stops watching
	TypePing     = "ping"     // application-level ping; answered with pong
	TypeHistory  = "history"  // agent or supervisor asks for the customer's earlier conversations (also server → client)
)

// Server → client message types.
const (
	TypeHello        = "hello"         // first frame after connecting
	TypeAck          = "ack"           // a client message was stored (carries its offset)
	TypeQueued       = "queued"        // conversation is waiting in the queue
	TypePosition     = "position"      // queue position and wait estimate changed
	TypeOffer        = "offer"         // an agent is offered a conversation
	TypeOfferExpired = "offer_expired" // the offer was not accepted in time
	TypeAssigned     = "assigned"      // an agent holds the conversation
	TypeTransferred  = "transferred"   // conversation moved to another agent or the queue
	TypeResolved     = "resolved"      // conversation resolved
	TypeReload       = "reload"        // history no longer covers the client's offset: reload
	TypeSLA          = "sla"           // SLA warning or breach (supervisors)
	TypeStats        = "stats"         // queue and agent statistics (supervisors)
	TypeError        = "error"         // a request failed; the connection stays up
	TypePong         = "pong"          // answer to ping
	TypeResumed      = "resumed"       // end of a resume batch
	TypeSync         = "sync"          // the server may have missed delivering messages: resume if offset is above yours
)

// Error codes carried in error envelopes.
const (
	ErrCodeBadJSON        = "bad_json"
	ErrCodeUnknownType    = "unknown_type"
	ErrCodeBadRequest     = "bad_request"
	ErrCodeForbidden      = "forbidden"
	ErrCodeNotParticipant = "not_participant"
	ErrCodeNoConversation = "no_conversation"
	ErrCodeQueueFull      = "queue_full"
	ErrCodeOfferGone      = "offer_gone"
	ErrCodeConflict       = "conflict"
	ErrCodeNoAgent        = "no_agent"
	ErrCodeInternal       = "internal"
	ErrCodeUnavailable    = "unavailable"
	ErrCodeRateLimited    = "rate_limited"
)

// Envelope is every frame of the protocol. Fields are optional unless a
// type's documentation requires them; empty fields are omitted on the wire.
type Envelope struct {
	Type string `json:"type"`
	// Conv is the conversation ID.
	Conv string `json:"conv,omitempty"`
	// ID is the client-chosen message ID; a retried send with the same ID
	// is stored once and acknowledged again.
	ID string `json:"id,omitempty"`
	// Offset and Epoch position a message in the conversation's history.
	Offset uint64 `json:"offset,omitempty"`
	Epoch  string `json:"epoch,omitempty"`
	// TS is the server time in Unix milliseconds.
	TS int64 `json:"ts,omitempty"`
	// Traceparent and Tracestate carry W3C trace context.
	Traceparent string `json:"traceparent,omitempty"`
	Tracestate  string `json:"tracestate,omitempty"`

	Text  string `json:"text,omitempty"`
	From  string `json:"from,omitempty"`
	Name  string `json:"name,omitempty"`
	Role  string `json:"role,omitempty"`
	Tier  string `json:"tier,omitempty"`
	Entry string `json:"entry,omitempty"`
	// State is the typing state ("on"/"off"), a presence ("online", "busy",
	// "away"), an SLA status ("warning", "breached") or a conversation state.
	State    string `json:"state,omitempty"`
	Kind     string `json:"kind,omitempty"`
	Offer    string `json:"offer,omitempty"`
	To       string `json:"to,omitempty"`
	Agent    string `json:"agent,omitempty"`
	Customer string `json:"customer,omitempty"`

	Position int   `json:"position,omitempty"`
	InTier   int   `json:"in_tier,omitempty"`
	ETAMs    int64 `json:"eta_ms,omitempty"`
	Expires  int64 `json:"expires,omitempty"`
	Due      int64 `json:"due,omitempty"`

	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	Ref     string `json:"ref,omitempty"`

	Convs []ConvInfo   `json:"convs,omitempty"`
	Tiers []TierStats  `json:"tiers,omitempty"`
	Users []AgentStats `json:"agents,omitempty"`
	// Items carries a batch of message envelopes (resume replies).
	Items []Envelope `json:"items,omitempty"`
	Node  string     `json:"node,omitempty"`
	// Target is internal to the server (never sent to clients): the
	// connection of Node that an event on a user's topic is for.
	Target uint64 `json:"target,omitempty"`
}

// ConvInfo summarises one conversation for hello and stats frames.
type ConvInfo struct {
	Conv     string `json:"conv"`
	State    string `json:"state"`
	Customer string `json:"customer,omitempty"`
	Name     string `json:"name,omitempty"`
	Agent    string `json:"agent,omitempty"`
	Tier     string `json:"tier,omitempty"`
	Offset   uint64 `json:"offset,omitempty"`
	Epoch    string `json:"epoch,omitempty"`
	Read     uint64 `json:"read,omitempty"`
	// Created is when the conversation was opened (Unix ms; history only).
	Created int64 `json:"created,omitempty"`
}

// TierStats is one queue tier in a stats frame.
type TierStats struct {
	Tier          string `json:"tier"`
	Depth         int    `json:"depth"`
	LongestWaitMs int64  `json:"longest_wait_ms"`
}

// AgentStats is one agent in a stats frame.
type AgentStats struct {
	ID       string `json:"id"`
	Presence string `json:"presence"`
	Load     int    `json:"load"`
	Capacity int    `json:"capacity"`
}

// MaxFrame is the largest envelope the server accepts, in bytes.
const MaxFrame = 64 << 10

// MaxText is the largest chat text accepted, in bytes.
const MaxText = 8 << 10

// ErrMalformed wraps every decoding failure.
var ErrMalformed = errors.New("protocol: malformed envelope")

// Decode parses one client frame. It rejects invalid JSON, a missing type,
// and oversized text with an error wrapping ErrMalformed.
func Decode(data []byte) (Envelope, error) {
	var e Envelope
	if len(data) > MaxFrame {
		return e, fmt.Errorf("%w: frame of %d bytes exceeds %d", ErrMalformed, len(data), MaxFrame)
	}
	if err := sonic.ConfigStd.Unmarshal(data, &e); err != nil {
		return Envelope{}, &DecodeError{Reason: "the frame is not a JSON object of the protocol", err: err}
	}
	if e.Type == "" {
		return Envelope{}, &DecodeError{Reason: "missing type"}
	}
	if len(e.Text) > MaxText {
		// Keep type, id and conv so the error can name the request.
		e.Text = ""
		return e, &DecodeError{Reason: fmt.Sprintf("text over %d bytes", MaxText), Partial: true}
	}
	return e, nil
}

// DecodeError is a malformed envelope: Reason is safe to show the client
// (no parser internals). Partial reports that Decode's envelope still holds
// the request's type, id and conv (for the error's ref).
type DecodeError struct {
	Reason  string
	Partial bool
	err     error
}

// Error implements error.
func (e *DecodeError) Error() string {
	if e.err != nil {
		return "protocol: malformed envelope: " + e.Reason + ": " + e.err.Error()
	}
	return "protocol: malformed envelope: " + e.Reason
}

// Unwrap makes errors.Is(err, ErrMalformed) true.
func (e *DecodeError) Unwrap() error { return ErrMalformed }

// PublicReason is what a client is told about a Decode error.
func PublicReason(err error) string {
	var de *DecodeError
	if errors.As(err, &de) {
		return de.Reason
	}
	return "malformed envelope"
}

// Encode serialises e.
func Encode(e *Envelope) ([]byte, error) {
	b, err := sonic.ConfigStd.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("protocol: encode %s: %w", e.Type, err)
	}
	return b, nil
}

// MustEncode is Encode for envelopes built by the server, which always encode.
func MustEncode(e *Envelope) []byte {
	b, err := Encode(e)
	if err != nil {
		panic(err)
	}
	return b
}

// Error builds an error envelope answering a request of type ref.
func Error(code, ref, conv, format string, args ...any) *Envelope {
	return &Envelope{Type: TypeError, Code: code, Ref: ref, Conv: conv, Message: fmt.Sprintf(format, args...)}
}

// RefOf is the ref of an error answering e: its type, and ":" + its id when
// it has one, so every error can be matched to its request.
func RefOf(e *Envelope) string {
	if e == nil {
		return ""
	}
	if e.ID != "" {
		return e.Type + ":" + e.ID
	}
	return e.Type
}
