package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/gorilla/websocket"
)

// The whole flow over real sockets: an agent with the billing skill
// connects, a premium customer needing billing is assigned to them at once,
// they chat, the agent resolves, and the server shuts down in the
// documented order when its context ends.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, Options{Addr: "127.0.0.1:0", OpsAddr: "127.0.0.1:0"}, func(ws, _ string) { up <- ws })
	}()
	addr := <-up
	dial := func(q url.Values) *websocket.Conn {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?"+q.Encode(), nil)
		if err != nil {
			panic(err)
		}
		return ws
	}
	read := func(who string, ws *websocket.Conn) {
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				panic(err)
			}
			if !strings.HasPrefix(string(msg), "queued ") { // position updates are timing-dependent
				fmt.Printf("%s <- %s\n", who, msg)
				return
			}
		}
	}
	bob := dial(url.Values{"user": {"bob"}, "role": {"agent"}, "skills": {"billing"}, "capacity": {"1"}})
	alice := dial(url.Values{"user": {"alice"}, "role": {"customer"}, "tier": {"1"}, "skills": {"billing"}})
	read("alice", alice)
	read("bob", bob)
	_ = alice.WriteMessage(websocket.TextMessage, []byte("I was charged twice"))
	read("bob", bob)
	read("alice", alice)
	_ = bob.WriteMessage(websocket.TextMessage, []byte("alice /resolve"))
	read("alice", alice)
	read("bob", bob)
	_ = alice.Close()
	_ = bob.Close()
	cancel()
	fmt.Println("shutdown:", <-done)
	// Output:
	// alice <- assigned alice bob
	// bob <- assigned alice bob
	// bob <- alice alice: I was charged twice
	// alice <- alice alice: I was charged twice
	// alice <- resolved alice
	// bob <- resolved alice
	// shutdown: <nil>
}
