package desk_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/bytedance/sonic"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/desk"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/gateway"
)

// quietFor is how long a test listens to conclude that nothing arrives.
const quietFor = 300 * time.Millisecond

// next returns the first envelope, in arrival order, that satisfies match;
// the others stay for later expects. It fails the test after waitFor.
func (c *client) next(what string, match func(protocol.Envelope) bool) protocol.Envelope {
	c.t.Helper()
	for i, e := range c.seen {
		if match(e) {
			c.seen = append(c.seen[:i:i], c.seen[i+1:]...)
			return e
		}
	}
	deadline := time.After(waitFor)
	for {
		select {
		case e := <-c.in:
			if match(e) {
				return e
			}
			c.seen = append(c.seen, e)
		case err := <-c.close:
			c.t.Fatalf("%s: connection closed while waiting for %s: %v", c.id, what, err)
		case <-deadline:
			c.t.Fatalf("%s: no %s within %v", c.id, what, waitFor)
		}
	}
}

// quiet fails the test if an envelope satisfying match arrives within d
// (or already arrived and was not consumed).
func (c *client) quiet(what string, d time.Duration, match func(protocol.Envelope) bool) {
	c.t.Helper()
	for _, e := range c.seen {
		if match(e) {
			c.t.Errorf("%s: unexpected %s: %s", c.id, what, js(e))
			return
		}
	}
	check := func(e protocol.Envelope) bool {
		if match(e) {
			c.t.Errorf("%s: unexpected %s: %s", c.id, what, js(e))
			return false
		}
		c.seen = append(c.seen, e)
		return true
	}
	for drained := false; !drained; { // what arrived already, even if d is 0
		select {
		case e := <-c.in:
			if !check(e) {
				return
			}
		default:
			drained = true
		}
	}
	deadline := time.After(d)
	for {
		select {
		case e := <-c.in:
			if !check(e) {
				return
			}
		case <-deadline:
			return
		}
	}
}

// alive checks that the connection is open and answering: not closed (in
// particular not with 4008) and a ping gets its pong.
func (c *client) alive() {
	c.t.Helper()
	select {
	case err := <-c.close:
		c.t.Fatalf("%s: connection closed: %v", c.id, err)
	default:
	}
	id := fmt.Sprintf("alive-%d", c.seq.Add(1))
	c.send(protocol.Envelope{Type: protocol.TypePing, ID: id})
	c.next("pong "+id, func(e protocol.Envelope) bool { return e.Type == protocol.TypePong && e.ID == id })
}

func isType(types ...string) func(protocol.Envelope) bool {
	return func(e protocol.Envelope) bool { return slices.Contains(types, e.Type) }
}

func js(e protocol.Envelope) string {
	b, _ := sonic.ConfigStd.Marshal(e)
	return string(b)
}

// expectError waits for the error answering req and checks what PROTOCOL.md
// promises of every error: the code, ref = req's type (+ ":" + its id), and
// the request's conv.
func (c *client) expectError(req protocol.Envelope, code string) protocol.Envelope {
	c.t.Helper()
	e := c.next("error for "+js(req), isType(protocol.TypeError))
	assert.Equal(c.t, code, e.Code, "sent %s, got %s", js(req), js(e))
	assert.Equal(c.t, protocol.RefOf(&req), e.Ref, "every error's ref names its request: sent %s, got %s", js(req), js(e))
	if req.Conv != "" {
		assert.Equal(c.t, req.Conv, e.Conv, "the error names the request's conv: sent %s, got %s", js(req), js(e))
	}
	return e
}

// conformanceConfig keeps offers pending and agents' conversations with
// them for the whole run.
func conformanceConfig() desk.Config {
	cfg := testConfig()
	cfg.OfferTimeout = 2 * time.Minute
	cfg.AgentGrace = 2 * time.Minute
	cfg.StatsInterval = time.Second
	return cfg
}

// sceneKind is the state a conversation must be in for a type to succeed.
type sceneKind int

const (
	noScene  sceneKind = iota // the type names no conversation
	waiting                   // queued, no agent
	offered                   // offered to an agent, not accepted
	assigned                  // accepted by an agent
)

func sceneFor(typ string, rule protocol.Rule) sceneKind {
	switch {
	case !slices.Contains(rule.Required, "conv"):
		return noScene
	case typ == protocol.TypeCancel:
		return waiting // one can only leave the queue
	case rule.Scope == protocol.ScopeOfferee:
		return offered
	}
	return assigned
}

// scene is one conversation with its customer and, unless it is waiting,
// its agent (assigned, or offered it). Every scene has its own skill, so
// its conversation is offered to its agent and nobody else on a shared
// server.
type scene struct {
	t      *testing.T
	srv    *desk.Server
	tag    string
	kind   sceneKind
	conv   string
	offer  string
	cust   *client
	agent  *client
	target string // a free agent a transfer can go to
}

func newScene(t *testing.T, srv *desk.Server, tag string, kind sceneKind) *scene {
	t.Helper()
	s := &scene{t: t, srv: srv, tag: tag, kind: kind, offer: "no-offer-" + tag}
	if kind == noScene {
		return s
	}
	skill := "sk-" + tag
	s.cust = dial(t, srv, customer("c-"+tag, auth.TierStandard))
	s.cust.send(protocol.Envelope{Type: protocol.TypeMessage, ID: "first", Text: "hello from " + tag, Entry: skill})
	s.conv = s.cust.expect(protocol.TypeQueued).Conv
	require.NotEmpty(t, s.conv)
	s.cust.expect(protocol.TypeAck, func(e protocol.Envelope) bool { return e.ID == "first" })
	if kind == waiting {
		return s
	}
	s.agent = dial(t, srv, auth.Claims{UserID: "a-" + tag, Name: "Agent " + tag, Role: auth.RoleAgent, Skills: []string{skill}, Capacity: 5})
	s.offer = s.agent.expect(protocol.TypeOffer, convIs(s.conv)).Offer
	if kind == offered {
		return s
	}
	s.agent.send(protocol.Envelope{Type: protocol.TypeAccept, Conv: s.conv, Offer: s.offer})
	s.agent.expect(protocol.TypeAssigned, convIs(s.conv))
	s.cust.expect(protocol.TypeAssigned, convIs(s.conv))
	// A free agent for transfers (with a skill no conversation needs).
	s.target = "t-" + tag
	dial(t, srv, auth.Claims{UserID: s.target, Role: auth.RoleAgent, Skills: []string{"none-" + s.target}, Capacity: 5})
	return s
}

// situation is a sender's relation to the scene's conversation.
type situation struct {
	name string
	role string
	rel  protocol.Relation
}

func situations(kind sceneKind, rule protocol.Rule) []situation {
	exists := protocol.Relation{Exists: true}
	var out []situation
	for _, role := range []string{auth.RoleCustomer, auth.RoleAgent, auth.RoleSupervisor} {
		if kind == noScene {
			out = append(out, situation{"none", role, protocol.Relation{}})
			continue
		}
		switch {
		case role == auth.RoleCustomer:
			out = append(out, situation{"own", role, protocol.Relation{Exists: true, Customer: true}})
		case role == auth.RoleAgent && kind == assigned:
			out = append(out, situation{"assigned", role, protocol.Relation{Exists: true, Assigned: true}})
		case role == auth.RoleAgent && kind == offered:
			out = append(out, situation{"offeree", role, protocol.Relation{Exists: true, Offeree: true}})
		case role == auth.RoleSupervisor:
			out = append(out, situation{"watching", role, protocol.Relation{Exists: true, Watching: true}})
		}
		out = append(out, situation{"outsider", role, exists}, situation{"unknown", role, protocol.Relation{}})
		if len(rule.OmitConv) > 0 {
			out = append(out, situation{"noconv", role, protocol.Relation{}})
		}
	}
	return out
}

// requester returns the scene's client in situation st, dialing it if needed.
func (s *scene) requester(st situation) *client {
	s.t.Helper()
	switch st.name {
	case "own":
		return s.cust
	case "assigned", "offeree":
		return s.agent
	case "watching":
		w := dial(s.t, s.srv, auth.Claims{UserID: "w-" + s.tag, Role: auth.RoleSupervisor})
		w.send(protocol.Envelope{Type: protocol.TypeWatch, Conv: s.conv})
		w.expect(protocol.TypeWatch, convIs(s.conv))
		return w
	}
	id := st.role[:1] + "-" + st.name + "-" + s.tag
	switch st.role {
	case auth.RoleAgent:
		return dial(s.t, s.srv, auth.Claims{UserID: id, Role: auth.RoleAgent, Skills: []string{"none-" + id}, Capacity: 5})
	case auth.RoleSupervisor:
		return dial(s.t, s.srv, auth.Claims{UserID: id, Role: auth.RoleSupervisor})
	}
	return dial(s.t, s.srv, customer(id, auth.TierStandard))
}

// request builds a complete, valid request of type typ for the scene.
func (s *scene) request(typ string, rule protocol.Rule, st situation) protocol.Envelope {
	e := protocol.Envelope{Type: typ, ID: "r-" + s.tag}
	conv, offer := s.conv, s.offer
	if st.name == "unknown" {
		conv, offer = "c-unknown-"+s.tag, "o-unknown-"+s.tag
	}
	for _, f := range slices.Concat(rule.Required, rule.Optional) {
		switch f {
		case "conv":
			if st.name != "noconv" {
				e.Conv = conv
			}
		case "text":
			e.Text = "hi from " + s.tag
		case "state":
			e.State = map[string]string{protocol.TypeTyping: "on", protocol.TypePresence: "online"}[typ]
		case "offset":
			if slices.Contains(rule.Required, f) {
				e.Offset = 1 // the scene's first message
			}
		case "offer":
			e.Offer = offer
		case "to":
			e.To = s.target
		case "entry":
			e.Entry = "none-" + s.tag // no agent has it: nobody is offered the conversation
		}
	}
	return e
}

// observer is a member of the conversation other than the requester, who
// receives the type's notifications.
func (s *scene) observer(req *client) *client {
	switch {
	case s.cust != nil && s.cust != req:
		return s.cust
	case s.agent != nil && s.agent != req && s.kind == assigned:
		return s.agent
	}
	return nil
}

// checkAllowed checks the answers PROTOCOL.md promises a successful request.
func checkAllowed(t *testing.T, s *scene, st situation, rule protocol.Rule, c *client, req protocol.Envelope) {
	t.Helper()
	// A reply to the conversation's members reaches the requester only if
	// it is one of them (a supervisor may transfer without watching).
	member := slices.Contains([]string{"own", "assigned", "offeree", "watching"}, st.name)
	if rule.Reply != "" && (rule.ReplyTo == protocol.ReplyToRequester || member) {
		got := c.next(rule.Reply+" or error answering "+js(req), isType(rule.Reply, protocol.TypeError))
		require.Equal(t, rule.Reply, got.Type, "sent %s; PROTOCOL.md answers %s, got %s", js(req), rule.Reply, js(got))
		if req.Conv != "" {
			assert.Equal(t, req.Conv, got.Conv, "the answer names the conversation: %s", js(got))
		}
		switch req.Type {
		case protocol.TypePing:
			assert.Equal(t, req.ID, got.ID, "pong carries the ping's id")
		case protocol.TypeCancel:
			assert.Equal(t, "closed", got.State, "cancel → resolved with state closed")
		case protocol.TypePresence:
			assert.Equal(t, req.State, got.State)
		}
	} else {
		c.quiet("error answering "+js(req), quietFor, isType(protocol.TypeError))
	}
	if req.Conv == "" || len(rule.Notify) == 0 {
		return
	}
	obs := s.observer(c)
	if obs == nil {
		return
	}
	for _, typ := range rule.Notify {
		got := obs.next(typ+" after "+js(req), func(e protocol.Envelope) bool {
			return e.Conv == req.Conv && slices.Contains(rule.Notify, e.Type) && (e.Type != protocol.TypeMessage || e.ID == req.ID)
		})
		assert.Equal(t, typ, got.Type, "%s receives %v in order after %s", obs.id, rule.Notify, js(req))
	}
	if req.Type == protocol.TypeTyping {
		c.quiet("typing echoed to its sender", quietFor, isType(protocol.TypeTyping))
	}
}

// checkDenied checks that a request outside the spec's rule gets the error
// the spec names, and nothing the request would have caused.
func checkDenied(t *testing.T, rule protocol.Rule, c *client, req protocol.Envelope, code string) {
	t.Helper()
	types := []string{protocol.TypeError}
	if rule.Reply != "" {
		types = append(types, rule.Reply)
	}
	got := c.next("error or answer to "+js(req), func(e protocol.Envelope) bool {
		return slices.Contains(types, e.Type) && (e.Type == protocol.TypeError || req.Conv == "" || e.Conv == req.Conv)
	})
	if got.Type != protocol.TypeError {
		t.Errorf("sent %s: PROTOCOL.md answers error %s, but the request succeeded: %s", js(req), code, js(got))
		return
	}
	c.seen = append([]protocol.Envelope{got}, c.seen...)
	c.expectError(req, code)
}

// TestConformance sends every client type of the spec, from every role, in
// and out of its scope, to a real server over real sockets, and checks that
// the server answers what the spec (PROTOCOL.md) says.
func TestConformance(t *testing.T) {
	spec := protocol.Embedded()
	srv := startServer(t, conformanceConfig())
	n := 0
	for _, typ := range slices.Sorted(maps.Keys(spec.ClientTypes)) {
		rule := spec.ClientTypes[typ]
		kind := sceneFor(typ, rule)
		for _, st := range situations(kind, rule) {
			n++
			tag := fmt.Sprintf("k%d", n)
			t.Run(typ+"/"+st.role+"/"+st.name, func(t *testing.T) {
				s := newScene(t, srv, tag, kind)
				c := s.requester(st)
				req := s.request(typ, rule, st)
				want := spec.Authorize(&req, st.role, st.rel)
				c.send(req)
				if want == "" {
					checkAllowed(t, s, st, rule, c, req)
				} else {
					checkDenied(t, rule, c, req, want)
				}
			})
		}
	}
}

// TestConformanceRequiredFields sends every client type without each of its
// required fields, from a sender the spec allows: PROTOCOL.md answers
// bad_request.
func TestConformanceRequiredFields(t *testing.T) {
	spec := protocol.Embedded()
	srv := startServer(t, conformanceConfig())
	n := 0
	for _, typ := range slices.Sorted(maps.Keys(spec.ClientTypes)) {
		rule := spec.ClientTypes[typ]
		kind := sceneFor(typ, rule)
		for _, field := range rule.Required {
			n++
			tag := fmt.Sprintf("f%d", n)
			t.Run(typ+"/without_"+field, func(t *testing.T) {
				// The first situation in which the complete request is
				// allowed and the field may not be left out.
				var st situation
				for _, cand := range situations(kind, rule) {
					full := (&scene{tag: tag, conv: "c", offer: "o", target: "t"}).request(typ, rule, cand)
					if spec.Authorize(&full, cand.role, cand.rel) == "" && cand.name != "noconv" &&
						(field != "conv" || !slices.Contains(rule.OmitConv, cand.role)) {
						st = cand
						break
					}
				}
				require.NotEmpty(t, st.name, "no sender may send %s", typ)
				s := newScene(t, srv, tag, kind)
				c := s.requester(st)
				req := s.request(typ, rule, st)
				clearField(&req, field)
				require.Equal(t, protocol.ErrCodeBadRequest, spec.Authorize(&req, st.role, st.rel))
				c.send(req)
				checkDenied(t, rule, c, req, protocol.ErrCodeBadRequest)
			})
		}
	}
}

func clearField(e *protocol.Envelope, field string) {
	switch field {
	case "conv":
		e.Conv = ""
	case "id":
		e.ID = ""
	case "text":
		e.Text = ""
	case "state":
		e.State = ""
	case "offset":
		e.Offset = 0
	case "offer":
		e.Offer = ""
	default:
		panic("clearField: add " + field)
	}
}

// TestSpecCloseCodesMatchServer: the close codes of the spec are the ones
// the gateway and the server send, and the slow-consumer limit is the
// gateway's.
func TestSpecCloseCodesMatchServer(t *testing.T) {
	spec := protocol.Embedded()
	want := map[string]int{
		"normal":           gateway.CloseNormal,
		"going_away":       gateway.CloseGoingAway,
		"protocol_error":   gateway.CloseProtocolError,
		"invalid_payload":  gateway.CloseInvalidPayload,
		"policy_violation": gateway.ClosePolicyViolation,
		"message_too_big":  gateway.CloseMessageTooBig,
		"internal_error":   gateway.CloseInternalError,
		"idle_timeout":     gateway.CloseIdleTimeout,
		"write_timeout":    gateway.CloseWriteTimeout,
		"token_expired":    desk.CloseTokenExpired,
		"slow_consumer":    gateway.CloseSlowConsumer,
		"try_again_later":  desk.CloseTryAgainLater,
		"abnormal_closure": 1006, // never sent: what a client sees without a close frame
	}
	got := map[string]int{}
	for code, cc := range spec.CloseCodes {
		got[cc.Name] = code
	}
	assert.Equal(t, want, got)
	assert.Equal(t, gateway.DefaultMaxOutgoingBytes, spec.Limits.MaxQueuedBytes)
}
