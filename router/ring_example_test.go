package router_test

import (
	"context"
	"fmt"

	"github.com/switchboard-go/switchboard/router"
)

// Gateways shard users by ID: every gateway builds the same ring from the
// same member list and agrees on who owns whom.
func ExampleRing() {
	ring, err := router.NewRing(router.RingConfig{Nodes: []router.Node{
		{ID: "gw-a", Addr: "10.0.0.1:7000"},
		{ID: "gw-b", Addr: "10.0.0.2:7000"},
		{ID: "gw-c", Addr: "10.0.0.3:7000", Weight: 2}, // a bigger machine
	}})
	if err != nil {
		panic(err)
	}
	defer ring.Close()

	owner, _ := ring.Lookup("user-42")
	fmt.Println("user-42 lives on", owner.ID, owner.Addr)
	for _, n := range ring.LookupN("user-42", 3) {
		fmt.Println("failover:", n.ID)
	}
	// Output:
	// user-42 lives on gw-c 10.0.0.3:7000
	// failover: gw-c
	// failover: gw-a
	// failover: gw-b
}

// Service discovery pushes the live member list; OnChange tells each gateway
// which users it must hand over.
func ExampleRing_SetMembers() {
	ring, err := router.NewRing(router.RingConfig{
		Nodes: []router.Node{{ID: "gw-a"}, {ID: "gw-b"}},
		OnChange: func(ch router.RingChange) {
			fmt.Println("joined:", len(ch.Added), "left:", len(ch.Removed))
			for _, s := range ch.Lost {
				fmt.Printf("%s lost %.0f%% of the key space\n", s.ID, 100*s.Fraction)
			}
			for _, s := range ch.Gained {
				fmt.Printf("%s gained %.0f%% of the key space\n", s.ID, 100*s.Fraction)
			}
			// Each gateway walks its own users and hands over the moved ones.
			handOver := 0
			for i := range 1000 {
				if from, _, moved := ch.Moved(fmt.Sprintf("user-%d", i)); moved && from.ID == "gw-a" {
					handOver++
				}
			}
			fmt.Println("gw-a hands over", handOver, "of its users")
		},
	})
	if err != nil {
		panic(err)
	}

	// gw-c joined: keys move only to it.
	if err := ring.SetMembers([]router.Node{{ID: "gw-a"}, {ID: "gw-b"}, {ID: "gw-c"}}); err != nil {
		panic(err)
	}
	// OnChange runs on the ring's goroutine; Shutdown waits for it.
	if err := ring.Shutdown(context.Background()); err != nil {
		panic(err)
	}
	// Output:
	// joined: 1 left: 0
	// gw-a lost 18% of the key space
	// gw-b lost 16% of the key space
	// gw-c gained 35% of the key space
	// gw-a hands over 199 of its users
}

// Acquire spreads a hot key instead of piling it onto one node: no node
// holds more than ⌈1.25 × average⌉ when it is given a key.
func ExampleRing_Acquire() {
	ring, err := router.NewRing(router.RingConfig{
		Nodes:      []router.Node{{ID: "worker-1"}, {ID: "worker-2"}, {ID: "worker-3"}, {ID: "worker-4"}},
		LoadFactor: 1.25,
	})
	if err != nil {
		panic(err)
	}
	defer ring.Close()

	var releases []func()
	for range 8 {
		_, release, err := ring.Acquire("tenant-with-a-flash-sale")
		if err != nil {
			panic(err)
		}
		releases = append(releases, release)
	}
	for _, l := range ring.Loads() {
		fmt.Printf("%s holds %d\n", l.Node.ID, l.Load)
	}
	for _, release := range releases {
		release()
	}
	// Output:
	// worker-1 holds 3
	// worker-2 holds 2
	// worker-3 holds 3
	// worker-4 holds 0
}
