package fanout_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/fanout"
)

func Example() {
	bus, err := fanout.New(fanout.Config{History: fanout.HistoryOptions{Size: 100}})
	if err != nil {
		panic(err)
	}
	defer bus.Close()

	// The agent's connection receives through a non-blocking callback.
	agent, _ := bus.Subscribe("conversation:42", fanout.SubscribeOptions{
		OnPublication: func(p fanout.Publication) {
			fmt.Printf("agent got #%d: %s\n", p.Offset, p.Payload)
		},
	})
	defer agent.Close()

	// The customer's connection reads a channel.
	customer, _ := bus.Subscribe("conversation:42", fanout.SubscribeOptions{})
	_, _ = bus.Publish("conversation:42", []byte("hello"))
	p := <-customer.C()
	fmt.Printf("customer got #%d: %s\n", p.Offset, p.Payload)
	// Output:
	// agent got #1: hello
	// customer got #1: hello
}

func ExampleBus_Recover() {
	bus, _ := fanout.New(fanout.Config{History: fanout.HistoryOptions{Size: 3}})
	defer bus.Close()

	seen, _ := bus.Publish("conversation:7", []byte("one"))
	// The customer's connection drops; two messages arrive meanwhile.
	_, _ = bus.Publish("conversation:7", []byte("two"))
	_, _ = bus.Publish("conversation:7", []byte("three"))

	missed, err := bus.Recover("conversation:7", seen.Offset, seen.Epoch)
	fmt.Println(len(missed), err)
	for _, p := range missed {
		fmt.Printf("#%d %s\n", p.Offset, p.Payload)
	}

	// Too far behind: the client must reload instead.
	for range 5 {
		_, _ = bus.Publish("conversation:7", []byte("more"))
	}
	_, err = bus.Recover("conversation:7", seen.Offset, seen.Epoch)
	fmt.Println(errors.Is(err, fanout.ErrRecoveryGap))
	// Output:
	// 2 <nil>
	// #2 two
	// #3 three
	// true
}

func ExampleBus_Join() {
	bus, _ := fanout.New(fanout.Config{})
	defer bus.Close()
	events := make(chan fanout.PresenceEvent, 4)
	_, _ = bus.Subscribe("conversation:9", fanout.SubscribeOptions{
		OnPresence: func(ev fanout.PresenceEvent) { events <- ev },
	})
	_ = bus.Join("conversation:9", fanout.Member{ID: "supervisor-1", Info: []byte("Dana")}, 30*time.Second)
	ev := <-events
	fmt.Println(ev.Kind, ev.Member.ID, string(ev.Member.Info))
	members, _ := bus.Members("conversation:9")
	fmt.Println(len(members))
	_ = bus.Leave("conversation:9", "supervisor-1")
	fmt.Println((<-events).Kind)
	// Output:
	// join supervisor-1 Dana
	// 1
	// leave
}
