package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/gorilla/websocket"
	"github.com/switchboard-go/switchboard/gateway"
)

// A gateway on its own listener: authenticate from a query token, echo
// every message back, drain on shutdown.
func Example() {
	g, err := gateway.New(gateway.Config{
		Addrs: []string{"127.0.0.1:0"},
		Authenticate: func(r *http.Request) (gateway.Identity, error) {
			if r.URL.Query().Get("token") != "secret" {
				return gateway.Identity{}, errors.New("bad token")
			}
			return gateway.Identity{UserID: "alice", Role: gateway.RoleCustomer}, nil
		},
		OnMessage: func(c *gateway.Conn, typ gateway.MessageType, data []byte) {
			_ = c.Send(typ, append([]byte(c.Identity().UserID+": "), data...))
		},
	})
	if err != nil {
		panic(err)
	}
	if err := g.Start(); err != nil {
		panic(err)
	}
	url := "ws://" + g.Addrs()[0].String() + "/ws?token=secret"
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		panic(err)
	}
	_ = ws.WriteMessage(websocket.TextMessage, []byte("hello"))
	_, reply, _ := ws.ReadMessage()
	fmt.Println(string(reply))

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = g.Shutdown(ctx)
	_, _, err = ws.ReadMessage()
	fmt.Println(websocket.IsCloseError(err, gateway.CloseGoingAway))
	_ = ws.Close()
	// Output:
	// alice: hello
	// true
}

// Broadcasting one prepared frame to every connection of a gateway.
func ExampleGateway_Broadcast() {
	g, _ := gateway.New(gateway.Config{Addrs: []string{"127.0.0.1:0"}})
	_ = g.Start()
	defer func() { _ = g.Shutdown(context.Background()) }()
	var clients []*websocket.Conn
	for range 3 {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addrs()[0].String()+"/ws", nil)
		if err != nil {
			panic(err)
		}
		defer ws.Close()
		clients = append(clients, ws)
	}
	for g.Len() < 3 { // OnOpen runs just after the client's handshake returns
		time.Sleep(time.Millisecond)
	}
	pm, _ := gateway.NewPreparedMessage(gateway.TextMessage, []byte("queue position: 1"))
	fmt.Println("sent to", g.Broadcast(pm, nil))
	for _, ws := range clients {
		_, msg, _ := ws.ReadMessage()
		fmt.Println(string(msg))
	}
	// Output:
	// sent to 3
	// queue position: 1
	// queue position: 1
	// queue position: 1
}

// Mounting the gateway inside an existing net/http server.
func ExampleGateway_ServeHTTP() {
	g, _ := gateway.New(gateway.Config{}) // no Addrs: mount-only
	_ = g.Start()
	mux := http.NewServeMux()
	mux.Handle("/chat", g)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	_ = srv
	fmt.Println(len(g.Addrs()))
	_ = g.Shutdown(context.Background())
	// Output: 0
}

// subscription stands for what a fan-out bus's Subscribe returns: the
// connection receives a conversation's events until it is closed.
type subscription struct {
	topic  string
	closed chan<- string
}

// Close unsubscribes.
func (s *subscription) Close() error {
	s.closed <- s.topic
	return nil
}

// Tying a connection's subscriptions to the connection: the host keeps its
// per-connection state in the Conn (SetValue) and binds the subscriptions it
// opens, which the gateway closes exactly once after the connection closed.
// A Bind that races the close closes the subscription at once, so none
// leaks. A host that unsubscribes by itself calls the unbind func first,
// and closes the subscription only if unbind reports true.
func ExampleConn_Bind() {
	unsubscribed := make(chan string, 1)
	g, err := gateway.New(gateway.Config{
		Addrs: []string{"127.0.0.1:0"},
		OnOpen: func(c *gateway.Conn) {
			topic := "conversation/42"
			c.SetValue(topic)
			sub := &subscription{topic: topic, closed: unsubscribed}
			if _, err := c.Bind(sub); err != nil {
				return // the connection closed meanwhile; Bind closed sub
			}
		},
		OnMessage: func(c *gateway.Conn, _ gateway.MessageType, _ []byte) {
			_ = c.Send(gateway.TextMessage, []byte(c.Value().(string)))
		},
	})
	if err != nil {
		panic(err)
	}
	if err := g.Start(); err != nil {
		panic(err)
	}
	defer func() { _ = g.Close() }()
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+g.Addrs()[0].String()+"/ws", nil)
	if err != nil {
		panic(err)
	}
	_ = ws.WriteMessage(websocket.TextMessage, []byte("where am I?"))
	_, reply, _ := ws.ReadMessage()
	fmt.Println("in", string(reply))

	_ = ws.Close() // the client goes away without a close frame
	fmt.Println("unsubscribed from", <-unsubscribed)
	// Output:
	// in conversation/42
	// unsubscribed from conversation/42
}
