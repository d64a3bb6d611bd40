package main

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/switchboard-go/switchboard/gateway"
	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/router"
)

// The example's own wire protocol (see doc.go): who connects, and what
// their text frames mean.

// profile is what a connection declared, parsed once by auth and kept as
// the gateway.Identity's Value.
type profile struct {
	tier, capacity int
	skills         []string
}

// auth admits ?user=ID&role=customer&tier=0..2&skills=a,b and
// ?user=ID&role=agent&skills=a,b&capacity=N, with ?token= when one is set.
func auth(token string) func(*http.Request) (gateway.Identity, error) {
	return func(r *http.Request) (gateway.Identity, error) {
		q := r.URL.Query()
		if token != "" && q.Get("token") != token || q.Get("user") == "" {
			return gateway.Identity{}, errors.New("bad token or missing user")
		}
		tier, _ := strconv.Atoi(q.Get("tier"))
		capacity, _ := strconv.Atoi(q.Get("capacity"))
		skills := strings.FieldsFunc(q.Get("skills"), func(r rune) bool { return r == ',' })
		return gateway.Identity{UserID: q.Get("user"), Role: gateway.Role(q.Get("role")),
			Value: profile{tier: min(max(tier, 0), 2), capacity: max(capacity, 1), skills: skills}}, nil
	}
}

func (s *app) open(c *gateway.Conn) {
	id, p := c.Identity().UserID, c.Identity().Value.(profile)
	if c.Identity().Role == gateway.RoleAgent {
		_ = s.a.UpsertAgent(router.Agent{ID: id, Presence: router.Online, Capacity: p.capacity, Skills: p.skills})
		return
	}
	req := router.Request{ConversationID: id, CustomerID: id, RequiredSkills: p.skills, WaitingSince: time.Now()}
	if err := s.enqueue(c, id, p.tier, req); err != nil { // the conversation is named after its customer
		_ = c.Close(gateway.ClosePolicyViolation, err.Error())
	}
}

// message: a customer's frame is a chat line; an agent's is
// "<conversation> <text>" or "<conversation> /resolve".
func (s *app) message(c *gateway.Conn, _ gateway.MessageType, data []byte) {
	id, conv, text := c.Identity().UserID, c.Identity().UserID, string(data)
	if c.Identity().Role == gateway.RoleAgent {
		conv, text, _ = strings.Cut(text, " ")
		if info, ok := s.a.Conversation(conv); !ok || info.AgentID != id {
			_ = c.Send(gateway.TextMessage, []byte("error not your conversation "+conv))
			return
		}
		if text == "/resolve" {
			s.release(conv)
			s.publish(conv, "resolved "+conv)
			_ = c.Send(gateway.TextMessage, []byte("resolved "+conv))
			return
		}
	}
	s.publish(conv, conv+" "+id+": "+text)
}

func (s *app) closed(c *gateway.Conn, _ int, _ string) {
	id := c.Identity().UserID
	if c.Identity().Role != gateway.RoleAgent {
		s.leave(id)
	} else if len(s.g.UserConns(id)) == 0 {
		_ = s.a.SetPresence(id, router.Offline) // OnAgentOffline after OfflineGrace
	}
}

func (s *app) positions(ups []queue.PositionUpdate) {
	for _, u := range ups {
		s.g.SendToUser(u.ID, gateway.TextMessage, []byte("queued "+strconv.Itoa(u.Position.Overall+1)))
	}
}
