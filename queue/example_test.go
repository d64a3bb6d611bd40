package queue_test

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/queue"
)

// A worker pool over a queue: items are handed out by tier quota.
func ExampleNewPool() {
	q, err := queue.New(queue.Config[string]{})
	if err != nil {
		panic(err)
	}
	done := make(chan string, 3)
	p, err := queue.NewPool(q, queue.PoolConfig[string]{
		Workers: 1,
		Run: func(ctx context.Context, it queue.Item[string]) error {
			done <- fmt.Sprintf("%s:%s", q.Tiers()[it.Tier].Name, it.Value)
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	_ = q.Push("", 2, "newsletter")
	_ = q.Push("", 0, "vip reply")
	p.Start()
	fmt.Println(<-done)
	fmt.Println(<-done)
	// Shutdown stops intake, drains and waits for the workers; whatever a
	// Shutdown that gives up leaves behind stays in the queue.
	err = p.Shutdown(context.Background())
	fmt.Println(err, q.Len())
	// Output:
	// P0:vip reply
	// P2:newsletter
	// <nil> 0
}

// A waiting room: conversations wait minutes for an agent, customers see
// their place in line, and a conversation no agent can take goes back to its
// original place.
func ExampleQueue_Position() {
	tiers := queue.DefaultTiers()
	for i := range tiers {
		tiers[i].MaxWait = 10 * time.Minute
	}
	room, err := queue.New(queue.Config[string]{Tiers: tiers})
	if err != nil {
		panic(err)
	}
	defer room.Close()
	room.SetWorkers(2)                  // agents serving
	room.RecordService(4 * time.Minute) // average handling time so far
	_ = room.Push("conv-1", 2, "alice")
	_ = room.Push("conv-2", 2, "bob")
	_ = room.Push("conv-3", 0, "vip carol")
	_ = room.Push("conv-4", 2, "dave")

	pos, _ := room.Position("conv-4")
	wait, _ := room.EstimatedWait("conv-4")
	fmt.Printf("conv-4: %d ahead (%d in its tier), about %v\n", pos.Overall, pos.InTier, wait)

	it, _ := room.TryPop() // an agent frees up: the VIP goes first
	fmt.Println("offered:", it.ID)
	_ = room.Requeue(it) // the agent declined: back to the front of P0
	it, _ = room.TryPop()
	fmt.Println("offered again:", it.ID)
	room.Cancel("conv-2") // bob left
	pos, _ = room.Position("conv-4")
	fmt.Println("conv-4 now:", pos.Overall)
	// Output:
	// conv-4: 3 ahead (2 in its tier), about 8m0s
	// offered: conv-3
	// offered again: conv-3
	// conv-4 now: 1
}

// Hand a freed agent the first waiting conversation it can take, in queue
// order, without head-of-line blocking: a VIP who needs a skill nobody free
// has keeps their place (and their Position) while a standard billing
// customer gets the idle billing agent. The claim callback stands in for
// router.Assigner: in a real host it calls Assigner.CanServe for the class
// and Assigner.Offer for the item, and answers Take when the offer is made.
func ExampleQueue_Match() {
	room, err := queue.New(queue.WaitingRoom[string]())
	if err != nil {
		panic(err)
	}
	defer room.Close()
	// The class is the canonical set of required skills
	// (router.Request.Class).
	_ = room.PushClass("conv-1", 0, "japanese", "vip needing japanese")
	_ = room.PushClass("conv-2", 1, "japanese", "premium needing japanese")
	_ = room.PushClass("conv-3", 2, "billing", "standard billing question")
	_ = room.PushClass("conv-4", 2, "billing", "another billing question")

	freeSlots := map[string]int{"billing": 1} // one billing agent is idle
	claim := func(it queue.Item[string]) queue.Verdict {
		fmt.Println("  considering", it.ID)
		if freeSlots[it.Class] == 0 {
			return queue.SkipClass // nobody for "japanese": skip conv-2 too
		}
		freeSlots[it.Class]-- // the atomic claim (router: Offer or Assign)
		return queue.Take
	}

	it, err := room.Match(claim)
	fmt.Println("matched:", it.ID, err)
	pos, _ := room.Position("conv-1")
	fmt.Println("conv-1 still first:", pos.Overall == 0)
	_, err = room.Match(claim)
	fmt.Println("next:", err)
	// Output:
	//   considering conv-1
	//   considering conv-3
	// matched: conv-3 <nil>
	// conv-1 still first: true
	//   considering conv-1
	//   considering conv-4
	// next: queue: no match
}
