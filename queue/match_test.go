package queue

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// checkClasses verifies the class index against the tiers: every waiting
// item is in exactly its (tier, class) list, lists are sorted like the tier,
// active lists and reference counts agree, and unused classes are forgotten.
func checkClasses[T any](t *testing.T, q *Queue[T]) {
	t.Helper()
	q.mu.Lock()
	defer q.mu.Unlock()
	refs := make([]int32, len(q.classNames))
	for ti := range q.tiers {
		tr := &q.tiers[ti]
		inTier := map[int32]int32{}
		for r := 0; r < tr.len(); r++ {
			idx := tr.at(r)
			inTier[q.nodes[idx].class]++
			refs[q.nodes[idx].class]++
		}
		nActive := 0
		for c := range tr.cls {
			cl := &tr.cls[c]
			var n int32
			prev := int32(-1)
			for idx := cl.head; idx >= 0; idx = q.nodes[idx].cnext {
				nd := &q.nodes[idx]
				require.Equal(t, int32(c), nd.class, "tier %d class %d", ti, c)
				require.Equal(t, prev, nd.cprev)
				require.Equal(t, uint8(ti), nd.tier)
				if prev >= 0 {
					require.True(t, q.less(&q.nodes[prev], idx) || (q.nodes[prev].dl == nd.dl && q.nodes[prev].seq == nd.seq), "class list out of order")
					require.Less(t, q.nodes[prev].abs, nd.abs, "class list disagrees with the tier order")
				}
				prev = idx
				n++
			}
			require.Equal(t, prev, cl.tail)
			require.Equal(t, inTier[int32(c)], n, "tier %d class %d", ti, c)
			require.Equal(t, n, cl.n)
			if n > 0 {
				nActive++
				require.Equal(t, int32(c), tr.active[cl.ai])
			} else {
				require.Equal(t, int32(-1), cl.ai)
			}
		}
		require.Len(t, tr.active, nActive)
	}
	for c := range refs {
		require.Equal(t, refs[c], q.classRefs[c], "refs of class %d", c)
		if c > 0 && refs[c] == 0 && !q.matching {
			require.Empty(t, q.classNames[c], "class %d not forgotten", c)
		}
		if q.classNames[c] != "" || c == 0 {
			require.Equal(t, int32(c), q.classIDs[q.classNames[c]])
		}
	}
	require.Len(t, q.classIDs, len(q.classNames)-len(q.classFree))
}

// pool is a stand-in for an agent assigner: free slots per class.
type pool struct {
	mu   sync.Mutex
	free map[string]int
}

func (p *pool) claim(it Item[string]) Verdict {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.free[it.Class] == 0 {
		return SkipClass
	}
	p.free[it.Class]--
	return Take
}

// The head-of-line scenario of issue #19: a P0 customer needs a skill no
// online agent has; a P2 billing customer must still get the idle billing
// agent, and the P0 customer keeps its place.
func TestMatchHeadOfLineBlocking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, err := New(Config[string]{})
		require.NoError(t, err)
		defer q.Close()
		require.NoError(t, q.PushClass("vip-1", 0, "japanese", "vip needing japanese"))
		require.NoError(t, q.PushClass("std-1", 2, "billing", "standard billing"))
		agents := &pool{free: map[string]int{"billing": 1}}

		// The naive glue — TryPop, try to assign, Requeue — takes the P0
		// head, finds nobody and stops: the billing agent stays idle.
		it, ok := q.TryPop()
		require.True(t, ok)
		assert.Equal(t, "vip-1", it.ID)
		require.NoError(t, q.Requeue(it))

		var seen []string
		got, err := q.Match(func(it Item[string]) Verdict {
			seen = append(seen, it.ID)
			return agents.claim(it)
		})
		require.NoError(t, err)
		assert.Equal(t, "std-1", got.ID)
		assert.Equal(t, "billing", got.Class)
		assert.Equal(t, []string{"vip-1", "std-1"}, seen, "candidates in queue order")
		assert.Zero(t, agents.free["billing"])
		pos, ok := q.Position("vip-1")
		require.True(t, ok)
		assert.Equal(t, Position{}, pos, "the VIP keeps the front")

		_, err = q.Match(agents.claim)
		require.ErrorIs(t, err, ErrNoMatch)
		assert.Equal(t, 1, q.Len())
		assert.Equal(t, Stats{Pushed: 1, Requeued: 1, Popped: 1, Len: 1}, q.Stats(0))
		assert.Equal(t, Stats{Pushed: 1, Popped: 1}, q.Stats(2))
		checkClasses(t, q)
	})
}

// SkipClass skips a class in every tier with one callback; Skip passes over
// one item and goes on with the next of its class; Stop ends the walk.
func TestMatchVerdicts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, err := New(Config[string]{Tiers: tiers(1, 1)})
		require.NoError(t, err)
		defer q.Close()
		for i, c := range []string{"a", "b", "a", "b", "c"} {
			require.NoError(t, q.PushClass(fmt.Sprint("t0-", i), 0, c, c))
			require.NoError(t, q.PushClass(fmt.Sprint("t1-", i), 1, c, c))
		}
		var seen []string
		got, err := q.Match(func(it Item[string]) Verdict {
			seen = append(seen, it.ID)
			switch {
			case it.Class == "a":
				return SkipClass
			case it.ID == "t0-1":
				return Skip // excluded for this one conversation
			case it.ID == "t0-3":
				return Take
			}
			t.Fatalf("unexpected candidate %s", it.ID)
			return Stop
		})
		require.NoError(t, err)
		assert.Equal(t, "t0-3", got.ID)
		assert.Equal(t, []string{"t0-0", "t0-1", "t0-3"}, seen)

		seen = nil
		_, err = q.Match(func(it Item[string]) Verdict {
			seen = append(seen, it.ID)
			if it.Class == "c" {
				return Stop
			}
			return SkipClass
		})
		require.ErrorIs(t, err, ErrNoMatch)
		// Tier 1 goes first now (tier 0 was charged); "a" and "b" are
		// skipped once for both tiers.
		assert.Equal(t, []string{"t1-0", "t1-1", "t1-4"}, seen)
		assert.Equal(t, 9, q.Len())
		assert.Equal(t, "skip_class", SkipClass.String())
		assert.Equal(t, "verdict(9)", Verdict(9).String())

		empty, err := New(Config[string]{})
		require.NoError(t, err)
		_, err = empty.Match(func(Item[string]) Verdict { t.Fatal("called"); return Stop })
		require.ErrorIs(t, err, ErrNoMatch)
		checkClasses(t, q)
	})
}

// Among the items that can be taken, Match hands out exactly what TryPop
// would if the others were not there: tiers by quota, deadlines within a
// tier. A reference queue holding only the matchable items checks it, on
// random workloads with pushes, requeues, cancels and matches interleaved.
func TestMatchOrderAmongMatchable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 11))
		classes := []string{"", "billing", "billing,french", "tech", "vip-desk"}
		servable := map[string]bool{"": true, "billing": true, "tech": true}
		for round := 0; round < 30; round++ {
			nt := 1 + rng.IntN(4)
			quotas := make([]int, nt)
			for i := range quotas {
				quotas[i] = 1 + rng.IntN(20)
			}
			tcs := tiers(quotas...)
			for i := range tcs {
				tcs[i].MaxWait = time.Duration(1+rng.IntN(5)) * time.Minute
			}
			q, err := New(Config[int]{Tiers: tcs})
			require.NoError(t, err)
			ref, err := New(Config[int]{Tiers: tcs})
			require.NoError(t, err)
			id := 0
			var live []string
			var handed [][2]Item[int] // from q, and the same item from ref
			for op := 0; op < 400; op++ {
				switch r := rng.IntN(20); {
				case r < 10:
					id++
					s, ti, c := fmt.Sprint(id), rng.IntN(nt), classes[rng.IntN(len(classes))]
					require.NoError(t, q.PushClass(s, ti, c, id))
					if servable[c] {
						require.NoError(t, ref.PushClass(s, ti, c, id))
					}
					live = append(live, s)
				case r < 16:
					got, err := q.Match(func(it Item[int]) Verdict {
						if servable[it.Class] {
							return Take
						}
						return SkipClass
					})
					want, ok := ref.TryPop()
					if !ok {
						require.ErrorIs(t, err, ErrNoMatch)
						continue
					}
					require.NoError(t, err)
					require.Equal(t, want.ID, got.ID, "round %d op %d quotas %v", round, op, quotas)
					handed = append(handed, [2]Item[int]{got, want})
				case r < 17 && len(handed) > 0:
					// An agent declines: the item goes back to its place.
					k := rng.IntN(len(handed))
					it := handed[k]
					handed = append(handed[:k], handed[k+1:]...)
					require.NoError(t, q.Requeue(it[0]))
					require.NoError(t, ref.Requeue(it[1]))
				case r < 19 && len(live) > 0:
					s := live[rng.IntN(len(live))]
					q.Cancel(s)
					ref.Cancel(s)
				default:
					time.Sleep(time.Duration(rng.IntN(30)) * time.Second)
				}
				if op%50 == 0 {
					checkClasses(t, q)
				}
			}
			checkClasses(t, q)
			// After all this matching, Position is still exact: every
			// item's Overall is its index in the real TryPop order.
			want := map[string]Position{}
			for _, s := range live {
				if p, ok := q.Position(s); ok {
					want[s] = p
				}
			}
			inTier := make([]int, nt)
			for i := 0; ; i++ {
				it, ok := q.TryPop()
				if !ok {
					break
				}
				require.Equal(t, Position{Overall: i, InTier: inTier[it.Tier]}, want[it.ID], "round %d item %s", round, it.ID)
				inTier[it.Tier]++
				delete(want, it.ID)
			}
			require.Empty(t, want)
			require.NoError(t, q.Close())
			require.NoError(t, ref.Close())
		}
	})
}

// While claim runs the item is still waiting: Position, EstimatedWait and
// Len see it, and Cancel can remove it — Match then reports ErrClaimLost
// with the item so the host can undo its claim.
func TestMatchClaimSeesWaitingItem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, err := New(Config[string]{Tiers: tiers(1)})
		require.NoError(t, err)
		defer q.Close()
		for _, id := range []string{"a", "b", "c"} {
			require.NoError(t, q.PushClass(id, 0, "x", id))
		}
		got, err := q.Match(func(it Item[string]) Verdict {
			pos, ok := q.Position(it.ID)
			require.True(t, ok, "the candidate is still waiting")
			assert.Equal(t, Position{}, pos)
			assert.Equal(t, 3, q.Len())
			_, ok = q.EstimatedWait(it.ID)
			assert.True(t, ok)
			assert.True(t, q.Cancel("c"), "claim may call the queue")
			return Take
		})
		require.NoError(t, err)
		assert.Equal(t, "a", got.ID)

		got, err = q.Match(func(it Item[string]) Verdict {
			assert.True(t, q.Cancel(it.ID)) // the customer leaves meanwhile
			return Take
		})
		require.ErrorIs(t, err, ErrClaimLost)
		assert.Equal(t, "b", got.ID, "the lost item is returned for the undo")
		assert.Zero(t, q.Len())
		assert.Equal(t, Stats{Pushed: 3, Popped: 1, Cancelled: 2, Abandoned: 2}, q.Stats(0))

		// A concurrent hand-out by TryPop is a lost claim too, and a skipped
		// candidate cancelled meanwhile is simply gone.
		require.NoError(t, q.PushClass("d", 0, "x", "d"))
		require.NoError(t, q.PushClass("e", 0, "x", "e"))
		got, err = q.Match(func(it Item[string]) Verdict {
			if it.ID == "d" {
				assert.True(t, q.Cancel("d"))
				return Skip
			}
			popped, ok := q.TryPop()
			require.True(t, ok)
			assert.Equal(t, "e", popped.ID)
			return Take
		})
		require.ErrorIs(t, err, ErrClaimLost)
		assert.Equal(t, "e", got.ID)
		checkClasses(t, q)
	})
}

// Deadline actions apply to candidates before claim sees them (lazily, like
// TryPop), and an eager deadline that drops a candidate while claim runs
// makes the claim lost.
func TestMatchDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var log, claims []string
		note := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
		q, err := New(Config[string]{
			Tiers: []TierConfig{
				{MaxWait: time.Minute, OnDeadline: Escalate},
				{MaxWait: time.Minute, OnDeadline: Drop},
				{MaxWait: time.Minute, OnDeadline: RetryOnce},
			},
			OnEscalate: func(it Item[string]) { note("escalate " + it.ID) },
			OnDrop:     func(it Item[string]) { note("drop " + it.ID) },
			OnRetry:    func(it Item[string]) { note("retry " + it.ID) },
		})
		require.NoError(t, err)
		defer q.Close()
		require.NoError(t, q.PushClass("esc", 0, "x", "esc"))
		require.NoError(t, q.PushClass("drop", 1, "x", "drop"))
		require.NoError(t, q.PushClass("retry", 2, "x", "retry"))
		time.Sleep(2 * time.Minute)

		got, err := q.Match(func(it Item[string]) Verdict {
			claims = append(claims, "claim "+it.ID)
			if it.ID == "esc" {
				assert.True(t, it.Escalated, "escalated before claim sees it")
				return Skip
			}
			assert.True(t, it.Retried)
			return Take
		})
		require.NoError(t, err)
		assert.Equal(t, "retry", got.ID)
		assert.Equal(t, []string{"claim esc", "claim retry"}, claims)
		synctest.Wait() // the callbacks run on the queue's goroutine, in order
		assert.Equal(t, []string{"escalate esc", "drop drop", "retry retry"}, log)
		_, ok := q.Position("drop")
		assert.False(t, ok)
		assert.Equal(t, uint64(1), q.Stats(1).Abandoned)

		// Eager deadlines: the drop fires while claim is still deciding.
		eager, err := New(Config[string]{
			EagerDeadlines: true,
			Tiers:          []TierConfig{{MaxWait: time.Minute, OnDeadline: Drop}},
			OnDrop:         func(it Item[string]) { note("eager drop " + it.ID) },
		})
		require.NoError(t, err)
		defer eager.Close()
		require.NoError(t, eager.PushClass("slow", 0, "x", "slow"))
		got, err = eager.Match(func(it Item[string]) Verdict {
			time.Sleep(2 * time.Minute) // a slow claim (a store write, say)
			synctest.Wait()
			return Take
		})
		require.ErrorIs(t, err, ErrClaimLost)
		assert.Equal(t, "slow", got.ID)
		synctest.Wait()
		assert.Contains(t, log, "eager drop slow")
		assert.Zero(t, eager.Len())
		checkClasses(t, q)
		checkClasses(t, eager)
	})
}

// Classes are forgotten when their last item leaves, also when that
// happens during a Match.
func TestMatchForgetsClasses(t *testing.T) {
	q, err := New(Config[int]{Tiers: tiers(1)})
	require.NoError(t, err)
	defer q.Close()
	for i := 0; i < 100; i++ {
		require.NoError(t, q.PushClass(fmt.Sprint(i), 0, fmt.Sprint("class-", i), i))
	}
	checkClasses(t, q)
	for i := 0; i < 50; i++ {
		require.True(t, q.Cancel(fmt.Sprint(i)))
	}
	checkClasses(t, q)
	got, err := q.Match(func(it Item[int]) Verdict {
		q.Cancel(fmt.Sprint(it.Value + 1)) // empties a class mid-walk
		if it.Value == 60 {
			return Take
		}
		return SkipClass
	})
	require.NoError(t, err)
	assert.Equal(t, 60, got.Value)
	checkClasses(t, q)
	q.mu.Lock()
	assert.Len(t, q.classIDs, 1+q.count)
	q.mu.Unlock()
	// Freed class numbers are reused.
	for i := 0; i < 30; i++ {
		require.NoError(t, q.PushClass(fmt.Sprint("n", i), 0, fmt.Sprint("new-", i), i))
	}
	checkClasses(t, q)
	q.mu.Lock()
	assert.LessOrEqual(t, len(q.classNames), 101)
	q.mu.Unlock()
}

// Match, Push, Cancel, Requeue, Position and TryPop from several goroutines:
// capacity is never exceeded, every item is handed out at most once, and
// every item ends up handed out, cancelled or still waiting.
func TestMatchConcurrent(t *testing.T) {
	q, err := New(Config[int]{Tiers: tiers(40, 40, 20)})
	require.NoError(t, err)
	defer q.Close()
	classes := []string{"a", "b", "c", "d"}
	const capacity = 8
	var inUse [4]atomic.Int32 // per class: claims held
	var maxSeen atomic.Int32
	const pushers, per = 3, 1500
	var handed sync.Map
	var nHanded, nLost, nCancelled atomic.Int64
	var wg sync.WaitGroup
	for p := 0; p < pushers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(p), 3))
			for i := 0; i < per; i++ {
				v := p*per + i
				_ = q.PushClass(fmt.Sprint(v), rng.IntN(3), classes[v%4], v)
				if rng.IntN(5) == 0 && q.Cancel(fmt.Sprint(v-rng.IntN(20))) {
					nCancelled.Add(1)
				}
				q.Position(fmt.Sprint(v))
			}
		}()
	}
	stop := make(chan struct{})
	var mw sync.WaitGroup
	for m := 0; m < 3; m++ {
		mw.Add(1)
		go func() {
			defer mw.Done()
			rng := rand.New(rand.NewPCG(uint64(m), 9))
			for {
				select {
				case <-stop:
					return
				default:
				}
				it, err := q.Match(func(it Item[int]) Verdict {
					c := &inUse[it.Value%4]
					for {
						n := c.Load()
						if n >= capacity {
							return SkipClass
						}
						if c.CompareAndSwap(n, n+1) {
							if n+1 > maxSeen.Load() {
								maxSeen.Store(n + 1)
							}
							return Take
						}
					}
				})
				switch {
				case errors.Is(err, ErrClaimLost):
					inUse[it.Value%4].Add(-1) // undo
					nLost.Add(1)
					continue
				case err != nil:
					continue
				}
				if _, dup := handed.LoadOrStore(it.Value, true); dup {
					panic(fmt.Sprint("handed out twice: ", it.Value))
				}
				nHanded.Add(1)
				if rng.IntN(10) == 0 {
					// declined: back to its place, slot freed
					handed.Delete(it.Value)
					nHanded.Add(-1)
					inUse[it.Value%4].Add(-1)
					if err := q.Requeue(it); err != nil {
						panic(err)
					}
					continue
				}
				inUse[it.Value%4].Add(-1) // conversation over
			}
		}()
	}
	wg.Wait()
	close(stop)
	mw.Wait()
	assert.LessOrEqual(t, maxSeen.Load(), int32(capacity))
	for i := range inUse {
		assert.Zero(t, inUse[i].Load())
	}
	checkClasses(t, q)
	var pushed, popped, cancelled, requeued uint64
	for ti := 0; ti < 3; ti++ {
		s := q.Stats(ti)
		pushed += s.Pushed
		popped += s.Popped
		cancelled += s.Cancelled
		requeued += s.Requeued
		assert.Equal(t, s.Pushed+s.Requeued, s.Popped+s.Abandoned+uint64(s.Len))
	}
	assert.Equal(t, uint64(pushers*per), pushed)
	assert.Equal(t, uint64(nCancelled.Load()), cancelled)
	assert.Equal(t, int64(popped)-int64(requeued), nHanded.Load())
	t.Logf("handed %d, lost claims %d, cancelled %d, waiting %d", nHanded.Load(), nLost.Load(), cancelled, q.Len())
}

func TestZeroAllocMatch(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	q, err := New(Config[int]{})
	require.NoError(t, err)
	defer q.Close()
	classes := []string{"a", "b", "c", "d", "e"}
	for i := 0; i < 1000; i++ {
		require.NoError(t, q.PushClass(fmt.Sprint(i), i%3, classes[i%5], i))
	}
	free := "a"
	claim := func(it Item[int]) Verdict {
		if it.Class == free {
			return Take
		}
		return SkipClass
	}
	n := 0
	run := func() {
		it, err := q.Match(claim)
		if err != nil {
			panic(err)
		}
		// Keep the queue steady: the conversation goes back in its class.
		if err := q.Requeue(Item[int]{ID: it.ID, Tier: it.Tier, Class: it.Class, Value: it.Value}); err != nil {
			panic(err)
		}
		n++
		free = classes[n%4]
	}
	for range 10 {
		run()
	}
	assert.Zero(t, testing.AllocsPerRun(200, run))
}
