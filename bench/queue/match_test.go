package queuebench

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-go/switchboard/queue"
	"github.com/switchboard-go/switchboard/router"
)

// The matching step of a support waiting room (issue #19): an agent frees a
// slot (router.CapacityEvent) and the host must hand them the first waiting
// conversation, in queue order, that some free agent can take.
//
// World: 10,000 waiting conversations over three tiers (10% P0, 30% P1, 60%
// P2); 1,000 agents with 3 of 20 skills each and capacity 3, all full; a
// conversation needs one skill (80%) or two (20%), and 5% of them need
// "s19", which no agent has — the head-of-line blockers, which stay and
// drift to the front of their tiers. One op is one capacity event: release
// the oldest assigned conversation, run the matching step (which assigns
// about one conversation), and push released conversations back so 10,000
// keep waiting. Everything is pre-built, so an op allocates only what the
// matching step itself allocates.
//
//   - impl=match: Queue.Match with the router claim (Assigner.CanServe for
//     the class, Assign for the conversation), looped while any agent is
//     free.
//   - impl=pop-all-requeue: what a host without Match must do (the
//     supportdesk drain): TryPop every waiting conversation, Assign it or
//     set it aside, then Requeue what was set aside. O(queue).
//   - impl=pop-until-full: the same, but stopping as soon as no agent has a
//     free slot — the cheapest correct pop-based glue; it still takes the
//     conversations it looks at out of the queue (invisible to Position and
//     Cancel meanwhile) and perturbs the quota accounting.
const (
	mWaiting    = 10_000
	mAgents     = 1_000
	mSkills     = 20
	mAgentSkill = 3
	mCapacity   = 3
	mConvs      = mWaiting + mAgents*mCapacity + 4096 // waiting + held + spare
)

type matchWorld struct {
	q    *queue.Queue[int]
	asg  *router.Assigner
	reqs []router.Request // per conversation
	cls  []router.Request // per conversation: its class (skills only)
	tier []int
	key  []string // Request.Class

	held  ring // conversations assigned, oldest first
	free  ring // conversations released, to push again
	back  []queue.Item[int]
	claim func(queue.Item[int]) queue.Verdict
	looks int // candidates looked at (Match) or items popped (pop glues)
}

// ring is a FIFO of conversation indexes with fixed capacity.
type ring struct {
	buf        []int
	head, tail int
}

func (r *ring) push(v int) { r.buf[r.tail%len(r.buf)] = v; r.tail++ }
func (r *ring) pop() int   { v := r.buf[r.head%len(r.buf)]; r.head++; return v }
func (r *ring) len() int   { return r.tail - r.head }

func newMatchWorld(tb testing.TB, seed uint64) *matchWorld {
	rng := rand.New(rand.NewPCG(seed, 19))
	tiers := queue.DefaultTiers()
	for i := range tiers {
		tiers[i].MaxWait = time.Hour // no deadline fires during a run
		tiers[i].Capacity = mConvs
	}
	q, err := queue.New(queue.Config[int]{Tiers: tiers})
	if err != nil {
		tb.Fatal(err)
	}
	asg, err := router.NewAssigner(router.AssignerConfig{MaxSkillViews: 4096})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = asg.Close(); _ = q.Close() })
	w := &matchWorld{q: q, asg: asg,
		reqs: make([]router.Request, mConvs), cls: make([]router.Request, mConvs),
		tier: make([]int, mConvs), key: make([]string, mConvs),
		held: ring{buf: make([]int, mConvs)}, free: ring{buf: make([]int, mConvs)},
	}
	skill := func(i int) string { return fmt.Sprintf("s%02d", i) }
	for i := range mConvs {
		var skills []string
		switch r := rng.IntN(100); {
		case r < 5:
			skills = []string{skill(19)} // nobody has it
		case r < 80:
			skills = []string{skill(rng.IntN(19))}
		default:
			a, b := rng.IntN(19), rng.IntN(18)
			if b >= a {
				b++
			}
			skills = []string{skill(a), skill(b)}
		}
		w.reqs[i] = router.Request{ConversationID: fmt.Sprintf("conv-%05d", i), RequiredSkills: skills}
		w.cls[i] = router.Request{RequiredSkills: skills}
		w.key[i] = w.reqs[i].Class()
		switch r := rng.IntN(10); {
		case r < 1:
			w.tier[i] = 0
		case r < 4:
			w.tier[i] = 1
		default:
			w.tier[i] = 2
		}
	}
	for a := range mAgents {
		perm := rng.Perm(19)[:mAgentSkill]
		skills := make([]string, len(perm))
		for k, s := range perm {
			skills[k] = skill(s)
		}
		if err := asg.UpsertAgent(router.Agent{ID: fmt.Sprintf("agent-%04d", a), Presence: router.Online, Capacity: mCapacity, Skills: skills}); err != nil {
			tb.Fatal(err)
		}
	}
	// Fill every agent with conversations it can take, then queue the rest.
	next := 0
	for a := range mAgents {
		info, _ := asg.Agent(fmt.Sprintf("agent-%04d", a))
		for info.Active < mCapacity {
			i := next
			next++
			w.reqs[i].RequiredSkills = info.Skills[:1]
			w.cls[i].RequiredSkills = info.Skills[:1]
			w.key[i] = w.reqs[i].Class()
			if err := asg.AssignManual(router.Request{ConversationID: w.reqs[i].ConversationID}, info.ID, false); err != nil {
				tb.Fatal(err)
			}
			w.held.push(i)
			info.Active++
		}
	}
	for ; next < mConvs; next++ {
		if next < mAgents*mCapacity+mWaiting {
			if err := q.PushClass(w.reqs[next].ConversationID, w.tier[next], w.key[next], next); err != nil {
				tb.Fatal(err)
			}
		} else {
			w.free.push(next)
		}
	}
	// Steady state: the Assigner has indexed every class already (the first
	// request of a (skill set, team) builds its view, once).
	for i := range mConvs {
		w.asg.CanServe(w.cls[i])
	}
	w.claim = func(it queue.Item[int]) queue.Verdict {
		w.looks++
		i := it.Value
		if !w.asg.CanServe(w.cls[i]) {
			return queue.SkipClass
		}
		if _, err := w.asg.Assign(w.reqs[i]); err != nil {
			return queue.Skip
		}
		return queue.Take
	}
	w.back = make([]queue.Item[int], 0, mWaiting+1024)
	return w
}

// event frees one slot (the oldest conversation ends) and refills the queue
// after step has matched.
func (w *matchWorld) event(tb testing.TB, step func(tb testing.TB)) {
	i := w.held.pop()
	if err := w.asg.Release(w.reqs[i].ConversationID); err != nil {
		tb.Fatal(err)
	}
	w.free.push(i)
	step(tb)
	for w.q.Len() < mWaiting {
		i := w.free.pop()
		if err := w.q.PushClass(w.reqs[i].ConversationID, w.tier[i], w.key[i], i); err != nil {
			tb.Fatal(err)
		}
	}
}

func (w *matchWorld) stepMatch(tb testing.TB) {
	for w.asg.CanServe(router.Request{}) {
		it, err := w.q.Match(w.claim)
		if errors.Is(err, queue.ErrNoMatch) {
			return
		}
		if err != nil {
			tb.Fatal(err)
		}
		w.held.push(it.Value)
	}
}

func (w *matchWorld) stepPop(tb testing.TB, untilFull bool) {
	w.back = w.back[:0]
	for n := w.q.Len(); n > 0; n-- {
		if untilFull && !w.asg.CanServe(router.Request{}) {
			break
		}
		it, ok := w.q.TryPop()
		if !ok {
			break
		}
		w.looks++
		if _, err := w.asg.Assign(w.reqs[it.Value]); err != nil {
			w.back = append(w.back, it)
			continue
		}
		w.held.push(it.Value)
	}
	for _, it := range w.back {
		if err := w.q.Requeue(it); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkMatch runs one capacity event per op in the world above, with
// each glue. looks/op is how many waiting conversations the step examined;
// cpu-ns/op is the process's CPU time per op (the machine is shared, and
// time spent descheduled inflates ns/op but not cpu-ns/op).
// Run: go test -run '^$' -bench BenchmarkMatch -benchmem -count 6 ./queue/
func BenchmarkMatch(b *testing.B) {
	for _, impl := range []string{"match", "pop-all-requeue", "pop-until-full"} {
		b.Run("impl="+impl, func(b *testing.B) {
			w := newMatchWorld(b, 1)
			step := w.stepMatch
			switch impl {
			case "pop-all-requeue":
				step = func(tb testing.TB) { w.stepPop(tb, false) }
			case "pop-until-full":
				step = func(tb testing.TB) { w.stepPop(tb, true) }
			}
			for range 100 { // settle: the blockers drift to the front
				w.event(b, step)
			}
			w.looks = 0
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			for b.Loop() {
				w.event(b, step)
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(w.looks)/float64(b.N), "looks/op")
		})
	}
}

// TestMatchWorld checks the world and the glues: every event assigns exactly
// the freed slot, capacity is never exceeded, Match allocates nothing, and
// Match assigns the first conversation in queue order that the freed agent
// can take.
func TestMatchWorld(t *testing.T) {
	w := newMatchWorld(t, 2)
	for range 300 {
		before := w.held.len()
		w.event(t, w.stepMatch)
		if w.held.len() != before {
			t.Fatalf("held %d conversations, want %d", w.held.len(), before)
		}
	}
	st := w.asg.Stats()
	if st.CapacityInUse != mAgents*mCapacity || st.Conversations != mAgents*mCapacity {
		t.Fatalf("capacity in use %d (active %d), want %d", st.CapacityInUse, st.Conversations, mAgents*mCapacity)
	}
	if w.q.Len() != mWaiting {
		t.Fatalf("waiting %d", w.q.Len())
	}
	if allocs := testing.AllocsPerRun(200, func() { w.event(t, w.stepMatch) }); allocs != 0 {
		t.Fatalf("a matching event allocates %.1f times", allocs)
	}

	// The conversation Match picks is the first one the freed agent can take
	// in the queue's order restricted to such conversations: the tier the
	// stride scheduler turns to first among the tiers holding one (the
	// order of the tiers' heads in Position.Overall), and in that tier the
	// one with the fewest ahead of it (Position.InTier).
	const nt = 3
	for range 50 {
		i := w.held.pop()
		agent, _ := w.asg.Conversation(w.reqs[i].ConversationID)
		if err := w.asg.Release(w.reqs[i].ConversationID); err != nil {
			t.Fatal(err)
		}
		w.free.push(i)
		info, _ := w.asg.Agent(agent.AgentID)
		headAt := [nt]int{-1, -1, -1}
		first := [nt]int{-1, -1, -1}
		firstAt := [nt]int{}
		for c := range mConvs {
			pos, ok := w.q.Position(w.reqs[c].ConversationID)
			if !ok {
				continue
			}
			ti := w.tier[c]
			if pos.InTier == 0 {
				headAt[ti] = pos.Overall
			}
			if hasAll(info.Skills, w.reqs[c].RequiredSkills) && (first[ti] < 0 || pos.InTier < firstAt[ti]) {
				first[ti], firstAt[ti] = c, pos.InTier
			}
		}
		want := -1
		for ti := range nt {
			if first[ti] >= 0 && (want < 0 || headAt[ti] < headAt[w.tier[want]]) {
				want = first[ti]
			}
		}
		it, err := w.q.Match(w.claim)
		if err != nil {
			t.Fatal(err)
		}
		if it.Value != want {
			t.Fatalf("Match took %s, the first the agent can take is %s", w.reqs[it.Value].ConversationID, w.reqs[want].ConversationID)
		}
		w.held.push(it.Value)
		for w.q.Len() < mWaiting {
			i := w.free.pop()
			if err := w.q.PushClass(w.reqs[i].ConversationID, w.tier[i], w.key[i], i); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func hasAll(have, need []string) bool {
	for _, n := range need {
		found := false
		for _, h := range have {
			found = found || h == n
		}
		if !found {
			return false
		}
	}
	return true
}

// TestMatchConcurrentWithAssigner runs the real glue from several
// goroutines — pushes, cancels, matches with Assigner claims, releases —
// and checks that no agent ever holds more than its capacity, that lost
// claims are undone, and that every conversation ends up assigned (at most
// once), cancelled, or still waiting.
func TestMatchConcurrentWithAssigner(t *testing.T) {
	q, err := queue.New(queue.WaitingRoom[int]())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	asg, err := router.NewAssigner(router.AssignerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer asg.Close()
	skills := []string{"billing", "tech", "sales", "japanese"}
	for a := range 20 {
		ag := router.Agent{ID: fmt.Sprint("agent-", a), Presence: router.Online, Capacity: 2,
			Skills: []string{skills[a%3], skills[(a+1)%3]}} // nobody speaks japanese
		if err := asg.UpsertAgent(ag); err != nil {
			t.Fatal(err)
		}
	}
	const n = 3000
	reqs := make([]router.Request, n)
	for i := range reqs {
		reqs[i] = router.Request{ConversationID: fmt.Sprint("conv-", i), RequiredSkills: []string{skills[i%4]}}
	}
	claim := func(it queue.Item[int]) queue.Verdict {
		req := reqs[it.Value]
		if !asg.CanServe(router.Request{RequiredSkills: req.RequiredSkills}) {
			return queue.SkipClass
		}
		if _, err := asg.Assign(req); err != nil {
			return queue.Skip
		}
		return queue.Take
	}
	var mu sync.Mutex
	assigned := map[int]bool{}
	cancelled := map[int]bool{}
	var wg sync.WaitGroup
	for p := range 2 { // customers arrive, some leave
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += 2 {
				if err := q.PushClass(reqs[i].ConversationID, i%3, reqs[i].Class(), i); err != nil {
					t.Error(err)
					return
				}
				if k := i - 3; k >= 0 && i%7 == 0 && q.Cancel(reqs[k].ConversationID) {
					mu.Lock()
					cancelled[k] = true
					mu.Unlock()
				}
			}
		}()
	}
	stop := make(chan struct{})
	var mw sync.WaitGroup
	for range 3 { // capacity events on several goroutines
		mw.Add(1)
		go func() {
			defer mw.Done()
			var mine []int
			for {
				select {
				case <-stop:
					return
				default:
				}
				it, err := q.Match(claim)
				switch {
				case errors.Is(err, queue.ErrClaimLost):
					if err := asg.Release(reqs[it.Value].ConversationID); err != nil {
						t.Error(err)
					}
					continue
				case err == nil:
					mu.Lock()
					if assigned[it.Value] {
						t.Errorf("%d assigned twice", it.Value)
					}
					assigned[it.Value] = true
					mu.Unlock()
					mine = append(mine, it.Value)
				}
				for _, info := range asg.Agents() {
					if info.Active+info.Reserved > info.Capacity {
						t.Errorf("%s holds %d of %d", info.ID, info.Active+info.Reserved, info.Capacity)
					}
				}
				if len(mine) > 0 && (err != nil || len(mine) > 4) { // conversations end
					if err := asg.Release(reqs[mine[0]].ConversationID); err != nil {
						t.Error(err)
					}
					mine = mine[1:]
				}
			}
		}()
	}
	wg.Wait()
	// The matchers keep ending conversations, so every conversation some
	// agent can take is eventually assigned; only "japanese" stays.
	deadline := time.Now().Add(time.Minute)
	for anyServable(q, reqs) {
		if time.Now().After(deadline) {
			t.Fatal("conversations an agent can take are still waiting")
		}
		time.Sleep(time.Millisecond)
	}
	close(stop)
	mw.Wait()
	var stats queue.Stats
	for ti := range 3 {
		s := q.Stats(ti)
		stats.Pushed += s.Pushed
		stats.Popped += s.Popped
		stats.Cancelled += s.Cancelled
		stats.Len += s.Len
	}
	mu.Lock()
	defer mu.Unlock()
	if int(stats.Popped) != len(assigned) || int(stats.Cancelled) != len(cancelled) {
		t.Fatalf("popped %d assigned %d, cancelled %d vs %d", stats.Popped, len(assigned), stats.Cancelled, len(cancelled))
	}
	if int(stats.Pushed) != n || len(assigned)+len(cancelled)+stats.Len != n {
		t.Fatalf("pushed %d: assigned %d + cancelled %d + waiting %d", stats.Pushed, len(assigned), len(cancelled), stats.Len)
	}
	t.Logf("assigned %d, cancelled %d, still waiting %d", len(assigned), len(cancelled), stats.Len)
}

// anyServable reports whether a waiting conversation has a class some agent
// has the skills for (only "japanese" has none).
func anyServable(q *queue.Queue[int], reqs []router.Request) bool {
	for i := range reqs {
		if _, ok := q.Position(reqs[i].ConversationID); ok && reqs[i].RequiredSkills[0] != "japanese" {
			return true
		}
	}
	return false
}
