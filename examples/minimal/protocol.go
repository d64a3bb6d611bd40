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

// auth admits ?user=ID&role=customer&tier=0..2&skills=a,b and
// ?user=ID&role=agent&skills=a,b&capacity=N, with ?token= when one is set.
func auth(token string) func(*http.Request) (gateway.Identity, error) {
	return func(r *http.Request) (gateway.Identity, error) {
		q := r.URL.Query()
		if token != "" && q.Get("token") != token || q.Get("user") == "" {
			return gateway.Identity{}, errors.New("bad token or missing user")
		}
		return gateway.Identity{UserID: q.Get("user"), Role: gateway.Role(q.Get("role")),
			Attrs: map[string]string{"tier": q.Get("tier"), "skills": q.Get("skills"), "capacity": q.Get("capacity")}}, nil
	}
}

func (s *app) open(c *gateway.Conn) {
	id, attrs := c.Identity().UserID, c.Identity().Attrs
	skills := strings.FieldsFunc(attrs["skills"], func(r rune) bool { return r == ',' })
	if c.Identity().Role == gateway.RoleAgent {
		capacity, _ := strconv.Atoi(attrs["capacity"])
		_ = s.a.UpsertAgent(router.Agent{ID: id, Presence: router.Online, Capacity: max(capacity, 1), Skills: skills})
		return
	}
	tier, _ := strconv.Atoi(attrs["tier"])
	req := router.Request{ConversationID: id, CustomerID: id, RequiredSkills: skills, WaitingSince: time.Now()}
	if err := s.enqueue(c, id, tier, req); err != nil { // the conversation is named after its customer
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
