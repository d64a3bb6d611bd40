package main

import (
	"context"
	"net/http"

	"github.com/switchboard-go/switchboard/gateway"
)

func init() {
	targetFactories["switchboard"] = func() serverTarget { return &switchboardServer{inline: true} }
	targetFactories["switchboard-pool"] = func() serverTarget { return &switchboardServer{} }
}

// switchboardServer is Switchboard's gateway (nbio event loops, no
// goroutine per connection): OnMessage echoes with Conn.Send, Broadcast
// encodes the message once with NewPreparedMessage and writes it to every
// connection. Target "switchboard" sets Config.InlineHandlers, the
// configuration the gateway documents for handlers that never block, as
// this echo does; "switchboard-pool" keeps every default, so handlers run
// on the bounded executor.
type switchboardServer struct {
	inline bool
	g      *gateway.Gateway
}

func (s *switchboardServer) Start(addrs []string) error {
	g, err := gateway.New(gateway.Config{
		Name:           "wsbench",
		Addrs:          addrs,
		Path:           "/ws",
		AllowedOrigins: []string{"*"},
		Handler:        http.NotFoundHandler(),
		InlineHandlers: s.inline,
		OnMessage: func(c *gateway.Conn, typ gateway.MessageType, data []byte) {
			_ = c.Send(typ, data)
		},
	})
	if err != nil {
		return err
	}
	if err := g.Start(); err != nil {
		return err
	}
	s.g = g
	return nil
}

func (s *switchboardServer) Addrs() []string {
	as := s.g.Addrs()
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

func (s *switchboardServer) Len() int { return s.g.Len() }

func (s *switchboardServer) Broadcast(payload []byte) (int, error) {
	pm, err := gateway.NewPreparedMessage(gateway.TextMessage, payload)
	if err != nil {
		return 0, err
	}
	return s.g.Broadcast(pm, nil), nil
}

func (s *switchboardServer) Shutdown(ctx context.Context) error {
	if s.g == nil {
		return nil
	}
	return s.g.Shutdown(ctx)
}
