package router_test

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/switchboard-go/switchboard/router"
)

// Assign conversations by least load, release one and drain the waiting
// list from the capacity event. The host guards its waiting list with its
// own mutex, holds it around Release and takes it again in OnCapacity: that
// cannot deadlock, because callbacks run on the Assigner's own goroutine,
// never inside the host's call.
func ExampleAssigner() {
	var (
		a       *router.Assigner
		mu      sync.Mutex // the host's lock
		waiting []string
		drained = make(chan struct{}, 1)
	)
	a, _ = router.NewAssigner(router.AssignerConfig{
		Strategy: router.LeastLoaded(),
		OnCapacity: func(router.CapacityEvent) {
			// Any event may find work: earlier ones (agents coming
			// online) can still be in flight when Release frees a slot.
			mu.Lock()
			defer mu.Unlock()
			for len(waiting) > 0 {
				id, err := a.Assign(router.Request{ConversationID: waiting[0]})
				if err != nil {
					return
				}
				fmt.Printf("%s drained to %s\n", waiting[0], id)
				waiting = waiting[1:]
				drained <- struct{}{}
			}
		},
	})
	defer a.Close()
	_ = a.UpsertAgent(router.Agent{ID: "alice", Presence: router.Online, Capacity: 1, Skills: []string{"en"}})
	_ = a.UpsertAgent(router.Agent{ID: "bruno", Presence: router.Online, Capacity: 1, Skills: []string{"en", "de"}})

	mu.Lock()
	for _, c := range []string{"c1", "c2", "c3"} {
		id, err := a.Assign(router.Request{ConversationID: c, RequiredSkills: []string{"en"}})
		if errors.Is(err, router.ErrNoAgent) {
			fmt.Println(c, "waits")
			waiting = append(waiting, c)
			continue
		}
		fmt.Println(c, "→", id)
	}
	_ = a.Release("c1") // under the host's lock: OnCapacity runs later
	mu.Unlock()
	<-drained
	// Output:
	// c1 → alice
	// c2 → bruno
	// c3 waits
	// c3 drained to alice
}

// Offer a conversation; when the agent misses it, offer it to the next one.
func ExampleAssigner_Offer() {
	expired := make(chan router.ExpiredOffer, 1)
	a, _ := router.NewAssigner(router.AssignerConfig{
		OfferTimeout:   10 * time.Millisecond,
		OnOfferExpired: func(e router.ExpiredOffer) { expired <- e },
	})
	defer a.Close()
	_ = a.UpsertAgent(router.Agent{ID: "alice", Presence: router.Online, Capacity: 2})
	_ = a.UpsertAgent(router.Agent{ID: "bruno", Presence: router.Online, Capacity: 2})

	o, _ := a.Offer(router.Request{ConversationID: "c1"})
	fmt.Println("offered to", o.AgentID)
	e := <-expired // alice did not answer in time
	fmt.Println(e.Reason, "excluding", e.Retry.Exclude)
	o, _ = a.Offer(e.Retry)
	fmt.Println("offered to", o.AgentID)
	fmt.Println(a.Accept(o.ID))
	info, _ := a.Agent("alice")
	fmt.Println("alice missed", info.MissedOffers)
	// Output:
	// offered to alice
	// timed_out excluding [alice]
	// offered to bruno
	// <nil>
	// alice missed 1
}

// A returning customer goes back to the agent they last talked to.
func ExampleSticky() {
	a, _ := router.NewAssigner(router.AssignerConfig{
		Strategy: router.Sticky(router.StickyConfig{Fallback: router.RoundRobin()}),
	})
	defer a.Close()
	for _, id := range []string{"alice", "bruno", "chen"} {
		_ = a.UpsertAgent(router.Agent{ID: id, Presence: router.Online, Capacity: 5})
	}
	first, _ := a.Assign(router.Request{ConversationID: "c1", CustomerID: "cust-42"})
	other, _ := a.Assign(router.Request{ConversationID: "c2", CustomerID: "cust-7"})
	_ = a.Release("c1")
	again, _ := a.Assign(router.Request{ConversationID: "c3", CustomerID: "cust-42"})
	fmt.Println(first, other, again)
	// Output: alice bruno alice
}

// Match waiting conversations to agents without head-of-line blocking: a
// conversation whose skills nobody free has is passed over (with its whole
// class), and the first one that an agent can take is offered atomically.
// With package queue this is the claim callback of Queue.Match.
func ExampleAssigner_CanServe() {
	a, _ := router.NewAssigner(router.AssignerConfig{})
	defer a.Close()
	_ = a.UpsertAgent(router.Agent{ID: "bruno", Presence: router.Online, Capacity: 1, Skills: []string{"billing"}})

	waiting := []router.Request{ // in queue order
		{ConversationID: "vip-1", RequiredSkills: []string{"japanese"}},
		{ConversationID: "vip-2", RequiredSkills: []string{"japanese"}},
		{ConversationID: "std-1", RequiredSkills: []string{"billing"}},
	}
	skipped := map[string]bool{}
	for _, req := range waiting {
		class := req.Class()
		if skipped[class] {
			continue
		}
		// One cheap check per class: nobody free can take "japanese".
		if !a.CanServe(router.Request{RequiredSkills: req.RequiredSkills, Team: req.Team}) {
			fmt.Println("skip class", class)
			skipped[class] = true
			continue
		}
		// The claim: Offer picks and reserves the agent's slot atomically.
		o, err := a.Offer(req)
		if err != nil {
			continue // e.g. ErrNoAgent because of req.Exclude: skip this one only
		}
		fmt.Println(req.ConversationID, "offered to", o.AgentID)
		break
	}
	// Output:
	// skip class japanese
	// std-1 offered to bruno
}
