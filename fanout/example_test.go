package fanout_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/fanout"
)

func Example() {
	ctx := context.Background() // a request's or connection's context in a server
	bus, err := fanout.New(fanout.Config{History: fanout.HistoryOptions{Size: 100}})
	if err != nil {
		panic(err)
	}
	defer bus.Close()

	// The agent's connection receives through a non-blocking callback,
	// run on the bus's delivery goroutine.
	agent, _ := bus.Subscribe(ctx, "conversation:42", fanout.SubscribeOptions{
		OnPublication: func(p fanout.Publication) {
			fmt.Printf("agent got #%d: %s\n", p.Offset, p.Payload)
		},
	})
	defer agent.Close()

	// The customer's connection reads a channel.
	customer, _ := bus.Subscribe(ctx, "conversation:42", fanout.SubscribeOptions{})
	_, _ = bus.Publish(ctx, "conversation:42", []byte("hello"))
	p := <-customer.C()
	fmt.Printf("customer got #%d: %s\n", p.Offset, p.Payload)
	// Output:
	// agent got #1: hello
	// customer got #1: hello
}

func ExampleBus_Recover() {
	ctx := context.Background()
	bus, _ := fanout.New(fanout.Config{History: fanout.HistoryOptions{Size: 3}})
	defer bus.Close()

	seen, _ := bus.Publish(ctx, "conversation:7", []byte("one"))
	// The customer's connection drops; two messages arrive meanwhile.
	_, _ = bus.Publish(ctx, "conversation:7", []byte("two"))
	_, _ = bus.Publish(ctx, "conversation:7", []byte("three"))

	missed, err := bus.Recover(ctx, "conversation:7", seen.Offset, seen.Epoch)
	fmt.Println(len(missed), err)
	for _, p := range missed {
		fmt.Printf("#%d %s\n", p.Offset, p.Payload)
	}

	// Too far behind: the client must reload instead.
	for range 5 {
		_, _ = bus.Publish(ctx, "conversation:7", []byte("more"))
	}
	_, err = bus.Recover(ctx, "conversation:7", seen.Offset, seen.Epoch)
	fmt.Println(errors.Is(err, fanout.ErrRecoveryGap))
	// Output:
	// 2 <nil>
	// #2 two
	// #3 three
	// true
}

func ExampleBus_Join() {
	ctx := context.Background()
	bus, _ := fanout.New(fanout.Config{})
	defer bus.Close()
	events := make(chan fanout.PresenceEvent, 4)
	_, _ = bus.Subscribe(ctx, "conversation:9", fanout.SubscribeOptions{
		OnPresence: func(ev fanout.PresenceEvent) { events <- ev },
	})
	_ = bus.Join(ctx, "conversation:9", fanout.Member{ID: "supervisor-1", Info: []byte("Dana")}, 30*time.Second)
	ev := <-events
	fmt.Println(ev.Kind, ev.Member.ID, string(ev.Member.Info))
	members, _ := bus.Members(ctx, "conversation:9")
	fmt.Println(len(members))
	_ = bus.Leave(ctx, "conversation:9", "supervisor-1")
	fmt.Println((<-events).Kind)
	// Output:
	// join supervisor-1 Dana
	// 1
	// leave
}

// Shutdown drains what was published, closes every subscription with
// ErrShutdown and, once it returns, no callback runs any more. Ready backs
// a readiness probe.
func ExampleBus_Shutdown() {
	ctx := context.Background()
	bus, _ := fanout.New(fanout.Config{})
	sub, _ := bus.Subscribe(ctx, "conversation:1", fanout.SubscribeOptions{})
	_, _ = bus.Publish(ctx, "conversation:1", []byte("bye"))
	fmt.Println(bus.Ready())

	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fmt.Println(bus.Shutdown(sctx))
	for p := range sub.C() {
		fmt.Printf("still readable: %s\n", p.Payload)
	}
	fmt.Println(sub.Err(), bus.Ready())
	// Output:
	// <nil>
	// <nil>
	// still readable: bye
	// fanout: shutdown fanout: closed
}
