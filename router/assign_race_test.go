package router

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAssignConcurrentNeverExceedsCapacity has many goroutines assign tens of
// thousands of conversations to agents with capacities of 1–3 while others
// release them and flip agents between online and busy. The test's own
// count of an agent's conversations rises only after Assign returns and falls
// before Release is called, so it never exceeds what the agent really holds:
// it must never exceed the capacity. An auditor also checks the Assigner's
// snapshots while the workers run, and every conversation must have at most
// one holder at a time.
func TestAssignConcurrentNeverExceedsCapacity(t *testing.T) {
	const (
		agents    = 16
		workers   = 16
		perWorker = 2500 // 40,000 conversations in all
	)
	capacity := map[string]int64{}
	a, err := NewAssigner(AssignerConfig{Strategy: LeastLoaded()})
	require.NoError(t, err)
	defer a.Close()
	for i := range agents {
		id := fmt.Sprintf("ag%d", i)
		c := 1 + i%3
		capacity[id] = int64(c)
		require.NoError(t, a.UpsertAgent(online(id, c, []string{"x", "y"}[i%2])))
	}

	// holders[conv] counts agents holding conv right now (must stay ≤ 1);
	// load[agent] counts conversations the test believes the agent holds.
	var holders sync.Map
	load := make([]atomic.Int64, agents)
	agentIdx := func(id string) int { var n int; fmt.Sscanf(id, "ag%d", &n); return n }
	var assigned, noAgent, violations atomic.Int64

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			var mine []string
			for i := range perWorker {
				conv := fmt.Sprintf("w%d-c%d", w, i)
				req := Request{ConversationID: conv}
				if rng.IntN(4) == 0 {
					req.RequiredSkills = []string{"x"}
				}
				var agentID string
				var err error
				if rng.IntN(3) == 0 {
					var o Offer
					if o, err = a.Offer(req); err == nil {
						agentID = o.AgentID
						if err = a.Accept(o.ID); err != nil {
							violations.Add(1)
						}
					}
				} else {
					agentID, err = a.Assign(req)
				}
				if err != nil {
					noAgent.Add(1)
				} else {
					assigned.Add(1)
					if load[agentIdx(agentID)].Add(1) > capacity[agentID] {
						violations.Add(1)
					}
					if _, dup := holders.LoadOrStore(conv, agentID); dup {
						violations.Add(1)
					}
					mine = append(mine, conv)
				}
				// Release about as fast as we assign so capacity keeps cycling.
				for len(mine) > 0 && rng.IntN(3) != 0 {
					j := rng.IntN(len(mine))
					c := mine[j]
					mine[j] = mine[len(mine)-1]
					mine = mine[:len(mine)-1]
					v, _ := holders.LoadAndDelete(c)
					load[agentIdx(v.(string))].Add(-1)
					if err := a.Release(c); err != nil {
						violations.Add(1)
					}
				}
			}
			for _, c := range mine {
				v, _ := holders.LoadAndDelete(c)
				load[agentIdx(v.(string))].Add(-1)
				if err := a.Release(c); err != nil {
					violations.Add(1)
				}
			}
		}()
	}
	// An auditor checks the Assigner's own view while the workers run, and
	// flips agents between online and busy.
	stop := make(chan struct{})
	auditDone := make(chan struct{})
	go func() {
		defer close(auditDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("ag%d", i%agents)
			if err := a.SetPresence(id, Busy); err != nil {
				violations.Add(1)
			}
			if err := a.SetPresence(id, Online); err != nil {
				violations.Add(1)
			}
			for _, inf := range a.Agents() {
				if inf.Capacity > 0 && inf.Active+inf.Reserved > inf.Capacity {
					violations.Add(1)
				}
				if len(inf.Conversations) != inf.Active {
					violations.Add(1)
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-auditDone

	assert.Zero(t, violations.Load(), "capacity exceeded, double assignment or failed release")
	assert.Equal(t, int64(workers*perWorker), assigned.Load()+noAgent.Load())
	assert.Greater(t, assigned.Load(), int64(workers*perWorker/4), "most conversations found an agent")
	st := a.Stats()
	assert.Zero(t, st.Conversations)
	assert.Zero(t, st.CapacityInUse)
	assert.Zero(t, st.PendingOffers)
	for _, inf := range a.Agents() {
		assert.Zero(t, inf.Active, inf.ID)
	}
}
