package session_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/session"
)

// A bounded store of connection state: evicting an entry is where the
// connection would be closed. OnEvict runs on the store's own goroutine, in
// the order of the evictions; Shutdown delivers those still queued.
func ExampleStore() {
	s, err := session.New(session.Config[string, int]{
		Shards:   1, // one shard so the LRU order below is global
		Capacity: 2,
		TTL:      30 * time.Minute,
		Sliding:  true,
		OnEvict: func(user string, conn int, why session.Reason) {
			fmt.Printf("close conn %d of %s (%s)\n", conn, user, why)
		},
	})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	s.Set("alice", 1)
	s.Set("bob", 2)
	s.Get("alice")    // alice is now the most recently used
	s.Set("carol", 3) // full: bob, the least recently used, is evicted
	s.Set("alice", 4) // a reconnect replaces alice's old connection
	s.Delete("carol")
	if err := s.Shutdown(context.Background()); err != nil {
		panic(err)
	}
	fmt.Println("entries:", s.Len())
	// Output:
	// close conn 2 of bob (capacity)
	// close conn 1 of alice (replaced)
	// close conn 3 of carol (deleted)
	// entries: 1
}

// Store.Update is an atomic read-modify-write.
func ExampleStore_Update() {
	s, _ := session.New(session.Config[string, int]{JanitorInterval: -1})
	defer s.Close()
	for range 3 {
		s.Update("unread:alice", func(n int, _ bool) (int, bool) { return n + 1, true })
	}
	n, _ := s.Get("unread:alice")
	fmt.Println(n)
	// Output: 3
}

// Conversations live in a store as immutable snapshots and change through
// Transition, so two agents accepting the same offer cannot both win.
func ExampleTransition() {
	convs, _ := session.New(session.Config[string, *session.Conversation]{Capacity: 10_000, JanitorInterval: -1})
	defer convs.Close()

	t0 := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)
	convs.Set("c-42", session.NewConversation("c-42", t0))
	_, _ = session.Transition(convs, "c-42", session.Change{Event: session.Offer, Actor: "router", Agent: "alice", At: t0})

	c, err := session.Transition(convs, "c-42", session.Change{Event: session.Accept, Actor: "alice", At: t0.Add(5 * time.Second)})
	fmt.Println(c.State, c.Assignee, c.Version, err)

	_, err = session.Transition(convs, "c-42", session.Change{Event: session.Accept, Actor: "alice"})
	var te *session.TransitionError
	fmt.Println(errors.As(err, &te), te.From, te.Event)

	_, err = session.Transition(convs, "c-42", session.Change{Event: session.Resolve, Actor: "alice", IfVersion: 2})
	fmt.Println(errors.Is(err, session.ErrConflict))
	// Output:
	// active alice 3 <nil>
	// true active accept
	// true
}

// SLA figures come from the conversation's timestamps.
func ExampleConversation_FirstResponseTime() {
	t0 := time.Date(2025, 1, 1, 9, 0, 0, 0, time.UTC)
	c := session.NewConversation("c-7", t0)
	_ = c.Apply(session.CustomerReply, "customer", "", t0)
	_ = c.ApplyChange(session.Change{Event: session.Offer, Actor: "router", Agent: "bob", At: t0.Add(10 * time.Second)})
	_ = c.Apply(session.Accept, "bob", "", t0.Add(20*time.Second))
	_ = c.Apply(session.AgentReply, "bob", "", t0.Add(45*time.Second))
	_ = c.Apply(session.CustomerReply, "customer", "", t0.Add(2*time.Minute))

	frt, _ := c.FirstResponseTime()
	nrt, waiting := c.NextResponseTime(t0.Add(3 * time.Minute))
	fmt.Println("first response:", frt)
	fmt.Println("customer waiting:", nrt, waiting)

	_ = c.Apply(session.Resolve, "bob", "answered", t0.Add(5*time.Minute))
	rt, _ := c.ResolutionTime()
	fmt.Println("resolved after:", rt, "history:", len(c.History))
	// Output:
	// first response: 45s
	// customer waiting: 1m0s true
	// resolved after: 5m0s history: 6
}
