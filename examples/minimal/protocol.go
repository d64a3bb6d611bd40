package main

import (
	"errors"
	"fmt"
	"log/slog"
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
		if r := q.Get("role"); r != string(gateway.RoleCustomer) && r != string(gateway.RoleAgent) {
			return gateway.Identity{}, fmt.Errorf("role %q: want customer or agent", r)
		}
		p := profile{tier: 2, capacity: 1, skills: strings.FieldsFunc(q.Get("skills"), func(r rune) bool { return r == ',' })}
		var err error
		if t := q.Get("tier"); t != "" {
			if p.tier, err = strconv.Atoi(t); err != nil || p.tier < 0 || p.tier > 2 {
				return gateway.Identity{}, fmt.Errorf("tier %q: want 0, 1 or 2", t)
			}
		}
		if n := q.Get("capacity"); n != "" {
			if p.capacity, err = strconv.Atoi(n); err != nil || p.capacity < 1 {
				return gateway.Identity{}, fmt.Errorf("capacity %q: want a positive number", n)
			}
		}
		return gateway.Identity{UserID: q.Get("user"), Role: gateway.Role(q.Get("role")), Value: p}, nil
	}
}

func (s *app) open(c *gateway.Conn) {
	id, p := c.Identity().UserID, c.Identity().Value.(profile)
	if c.Identity().Role == gateway.RoleAgent {
		s.check("agent online", s.a.UpsertAgent(router.Agent{ID: id, Presence: router.Online, Capacity: p.capacity, Skills: p.skills}))
		return
	}
	req := router.Request{ConversationID: id, CustomerID: id, RequiredSkills: p.skills, WaitingSince: time.Now()}
	if err := s.enqueue(c, id, p.tier, req); err != nil { // the conversation is named after its customer
		s.check("refuse", c.Close(gateway.ClosePolicyViolation, err.Error()))
	}
}

// message: a customer's frame is a chat line; an agent's is
// "<conversation> <text>" or "<conversation> /resolve".
func (s *app) message(c *gateway.Conn, _ gateway.MessageType, data []byte) {
	id, conv, text := c.Identity().UserID, c.Identity().UserID, string(data)
	if c.Identity().Role == gateway.RoleAgent {
		conv, text, _ = strings.Cut(text, " ")
		if info, ok := s.a.Conversation(conv); !ok || info.AgentID != id {
			s.send(c, "error not your conversation "+conv)
			return
		}
		if text == "/resolve" {
			s.release(conv)
			s.publish(conv, "resolved "+conv)
			s.send(c, "resolved "+conv)
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
		s.check("agent offline", s.a.SetPresence(id, router.Offline)) // OnAgentOffline after OfflineGrace
	}
}

func (s *app) positions(ups []queue.PositionUpdate) {
	for _, u := range ups {
		s.g.SendToUser(u.ID, gateway.TextMessage, []byte("queued "+strconv.Itoa(u.Position.Overall+1)))
	}
}

func (s *app) send(c *gateway.Conn, text string) {
	s.check("send", c.Send(gateway.TextMessage, []byte(text)))
}

// check logs a failed call and reports whether it succeeded. Sends to a
// connection that closed meanwhile are expected and logged at debug level.
func (s *app) check(what string, err error) bool {
	if err != nil {
		level := slog.LevelWarn
		if errors.Is(err, gateway.ErrClosed) {
			level = slog.LevelDebug
		}
		s.log.Log(s.ctx, level, "minimal: "+what, "err", err)
	}
	return err == nil
}
