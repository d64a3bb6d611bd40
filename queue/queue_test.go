package queue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newTestQueue returns a Queue closed at the end of the test, and the clock
// of the testing/synctest bubble the test must run in.
func newTestQueue(t *testing.T, cfg Config[int]) (*Queue[int], bubbleClock) {
	t.Helper()
	q, err := New(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = q.Close() })
	return q, bubbleClock{}
}

// bubbleClock reads and advances the fake clock of a testing/synctest
// bubble.
type bubbleClock struct{}

func (bubbleClock) Now() time.Time { return time.Now() }

// Advance moves the bubble's time forward by d and waits until every timer
// due by then has run and every goroutine of the bubble is blocked again.
func (bubbleClock) Advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func tiers(quotas ...int) []TierConfig {
	out := make([]TierConfig, len(quotas))
	for i, qq := range quotas {
		out[i] = TierConfig{MaxWait: time.Hour, Quota: qq, Capacity: 1 << 16}
	}
	return out
}

func TestNewValidation(t *testing.T) {
	ok := TierConfig{MaxWait: time.Second}
	cases := []struct {
		name  string
		cfg   Config[int]
		field string
	}{
		{"no tiers", Config[int]{Tiers: []TierConfig{}}, "Tiers"},
		{"too many tiers", Config[int]{Tiers: make([]TierConfig, MaxTiers+1)}, "Tiers"},
		{"zero max wait", Config[int]{Tiers: []TierConfig{{}}}, "Tiers[0].MaxWait"},
		{"negative capacity", Config[int]{Tiers: []TierConfig{ok, {MaxWait: 1, Capacity: -1}}}, "Tiers[1].Capacity"},
		{"negative quota", Config[int]{Tiers: []TierConfig{{MaxWait: 1, Quota: -2}}}, "Tiers[0].Quota"},
		{"bad action", Config[int]{Tiers: []TierConfig{{MaxWait: 1, OnDeadline: 9}}}, "Tiers[0].OnDeadline"},
		{"negative debounce", Config[int]{PositionDebounce: -1}, "PositionDebounce"},
		{"negative window", Config[int]{ServiceWindow: -1}, "ServiceWindow"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.field)
		})
	}
	// The zero Config is a waiting room that drops nobody (since 2026-12).
	q, err := New(Config[int]{})
	require.NoError(t, err)
	got := q.Tiers()
	require.Len(t, got, 3)
	assert.Equal(t, []string{"P0", "P1", "P2"}, []string{got[0].Name, got[1].Name, got[2].Name})
	assert.Equal(t, []time.Duration{2 * time.Minute, 5 * time.Minute, 15 * time.Minute},
		[]time.Duration{got[0].MaxWait, got[1].MaxWait, got[2].MaxWait})
	assert.Equal(t, []int{40, 40, 20}, []int{got[0].Quota, got[1].Quota, got[2].Quota})
	assert.Equal(t, []Action{Escalate, Escalate, Escalate}, []Action{got[0].OnDeadline, got[1].OnDeadline, got[2].OnDeadline})
	assert.False(t, q.cfg.EagerDeadlines)
	// A custom tier that names no action escalates: the zero Action.
	q, err = New(Config[int]{Tiers: []TierConfig{{MaxWait: time.Second}}})
	require.NoError(t, err)
	assert.Equal(t, Escalate, q.Tiers()[0].OnDeadline)

	wr := WaitingRoom[int]()
	assert.True(t, wr.EagerDeadlines)
	assert.Equal(t, "waiting_room", wr.Name)
	assert.Equal(t, DefaultTiers(), wr.Tiers)

	task := TaskQueueTiers()
	assert.Equal(t, []time.Duration{50 * time.Millisecond, 300 * time.Millisecond, 1500 * time.Millisecond},
		[]time.Duration{task[0].MaxWait, task[1].MaxWait, task[2].MaxWait})
	assert.Equal(t, []Action{Escalate, RetryOnce, Drop}, []Action{task[0].OnDeadline, task[1].OnDeadline, task[2].OnDeadline})
	assert.Equal(t, []string{"escalate", "retry", "drop", "action(7)"},
		[]string{Escalate.String(), RetryOnce.String(), Drop.String(), Action(7).String()})
}

func TestPushErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newTestQueue(t, Config[int]{Tiers: []TierConfig{{MaxWait: time.Second, Capacity: 2}}})
		require.NoError(t, q.Push("a", 0, 1))
		require.ErrorIs(t, q.Push("a", 0, 1), ErrDuplicateID)
		require.NoError(t, q.Push("", 0, 2)) // anonymous items never collide
		require.ErrorIs(t, q.Push("", 0, 3), ErrFull)
		require.ErrorIs(t, q.Push("b", 0, 4), ErrFull)
		require.ErrorIs(t, q.Push("b", 1, 4), ErrInvalidTier)
		require.ErrorIs(t, q.Push("b", -1, 4), ErrInvalidTier)
		assert.Equal(t, 2, q.Len())
		require.NoError(t, q.Close())
		require.ErrorIs(t, q.Push("c", 0, 5), ErrClosed)
		// Items pushed before Close can still be popped, then Pop reports ErrClosed.
		_, err := q.Pop(context.Background())
		require.NoError(t, err)
		_, err = q.Pop(context.Background())
		require.NoError(t, err)
		_, err = q.Pop(context.Background())
		require.ErrorIs(t, err, ErrClosed)
	})
}

func TestPushWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newTestQueue(t, Config[int]{Tiers: []TierConfig{{MaxWait: time.Second, Capacity: 1}}})
		require.NoError(t, q.Push("a", 0, 1))

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.ErrorIs(t, q.PushWait(ctx, "x", 0, 9), context.Canceled)

		done := make(chan error, 1)
		go func() { done <- q.PushWait(context.Background(), "b", 0, 2) }()
		synctest.Wait() // the goroutine is parked
		require.True(t, func() bool {
			q.mu.Lock()
			defer q.mu.Unlock()
			return len(q.tiers[0].spaceWaiters) == 1
		}())
		select {
		case err := <-done:
			t.Fatalf("PushWait returned %v while full", err)
		default:
		}
		it, ok := q.TryPop()
		require.True(t, ok)
		assert.Equal(t, "a", it.ID)
		require.NoError(t, <-done)
		_, ok = q.Position("b")
		assert.True(t, ok)

		// Close releases a parked PushWait with ErrClosed.
		go func() { done <- q.PushWait(context.Background(), "c", 0, 3) }()
		synctest.Wait() // the goroutine is parked
		require.True(t, func() bool {
			q.mu.Lock()
			defer q.mu.Unlock()
			return len(q.tiers[0].spaceWaiters) == 1
		}())
		require.NoError(t, q.Close())
		require.ErrorIs(t, <-done, ErrClosed)
	})
}

func TestEDFWithinTier(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, clk := newTestQueue(t, Config[int]{Tiers: []TierConfig{{MaxWait: time.Minute}}})
		for i, id := range []string{"a", "b", "c", "d"} {
			require.NoError(t, q.Push(id, 0, i))
			clk.Advance(time.Second)
		}
		a, ok := q.TryPop()
		require.True(t, ok)
		b, ok := q.TryPop()
		require.True(t, ok)
		assert.Equal(t, []string{"a", "b"}, []string{a.ID, b.ID})
		assert.Equal(t, a.Enqueued.Add(time.Minute), a.Deadline)
		// b is put back: it regains the front (its deadline is the earliest),
		// then a, whose deadline is earlier still, goes before it.
		require.NoError(t, q.Requeue(b))
		require.NoError(t, q.Requeue(a))
		require.ErrorIs(t, q.Requeue(a), ErrDuplicateID)
		var order []string
		for {
			it, ok := q.TryPop()
			if !ok {
				break
			}
			order = append(order, it.ID)
		}
		assert.Equal(t, []string{"a", "b", "c", "d"}, order)
	})
}

func TestRequeueKeepsDeadlineAndFlags(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, clk := newTestQueue(t, Config[int]{Tiers: []TierConfig{{MaxWait: time.Minute, OnDeadline: Escalate, Capacity: 1}}})
		require.NoError(t, q.Push("a", 0, 1))
		clk.Advance(2 * time.Minute)
		it, ok := q.TryPop()
		require.True(t, ok)
		require.True(t, it.Escalated)
		require.NoError(t, q.Push("b", 0, 2))
		// Requeue ignores capacity and keeps the original times and flags.
		require.NoError(t, q.Requeue(it))
		got, ok := q.TryPop()
		require.True(t, ok)
		assert.Equal(t, it.ID, got.ID)
		assert.Equal(t, it.Enqueued, got.Enqueued)
		assert.Equal(t, it.Deadline, got.Deadline)
		assert.True(t, got.Escalated)
		assert.Equal(t, uint64(1), q.Stats(0).Escalated, "an escalated item escalates once")
	})
}

func drainOrder(q *Queue[int]) []int {
	var tiersOut []int
	for {
		it, ok := q.TryPop()
		if !ok {
			return tiersOut
		}
		tiersOut = append(tiersOut, it.Tier)
	}
}

func TestQuotaShares(t *testing.T) {
	cases := []struct {
		quotas []int
		pops   int
	}{
		{[]int{40, 40, 20}, 500},
		{[]int{1, 1}, 100},
		{[]int{5, 3, 1, 1}, 1000},
		{[]int{7, 13}, 2000},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.quotas), func(t *testing.T) {
			q, err := New(Config[int]{Tiers: tiers(tc.quotas...)})
			require.NoError(t, err)
			for ti := range tc.quotas {
				for i := 0; i < tc.pops; i++ {
					require.NoError(t, q.Push("", ti, i))
				}
			}
			sum := 0
			for _, w := range tc.quotas {
				sum += w
			}
			got := make([]int, len(tc.quotas))
			for i := 0; i < tc.pops; i++ {
				it, ok := q.TryPop()
				require.True(t, ok)
				got[it.Tier]++
			}
			for ti, w := range tc.quotas {
				want := float64(tc.pops) * float64(w) / float64(sum)
				assert.InDelta(t, want, float64(got[ti]), 1.0, "tier %d share", ti)
			}
		})
	}
}

func TestWorkConserving(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newTestQueue(t, Config[int]{Tiers: tiers(40, 40, 20)})
		for i := 0; i < 10; i++ {
			require.NoError(t, q.Push("", 2, i))
		}
		require.NoError(t, q.Push("", 1, 0))
		assert.Equal(t, []int{1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2}, drainOrder(q))
	})
}

// TestNoStarvationUnderFlood keeps every tier saturated — P0 refilled
// immediately after each pop — and checks that each tier receives at least
// its quota share.
func TestNoStarvationUnderFlood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		quotas := []int{40, 40, 20}
		q, _ := newTestQueue(t, Config[int]{Tiers: tiers(quotas...)})
		for ti := range quotas {
			for i := 0; i < 50; i++ {
				require.NoError(t, q.Push("", ti, i))
			}
		}
		const pops = 10000
		got := make([]int, 3)
		for i := 0; i < pops; i++ {
			it, ok := q.TryPop()
			require.True(t, ok)
			got[it.Tier]++
			require.NoError(t, q.Push("", it.Tier, i)) // refill: every tier stays saturated
			if i%3 == 0 {
				require.NoError(t, q.Push("", 0, i)) // and P0 is flooded on top
			}
		}
		for ti, w := range quotas {
			assert.GreaterOrEqual(t, float64(got[ti])/pops, float64(w)/100-0.001, "tier %d share %d/%d", ti, got[ti], pops)
		}
	})
}

// A P0 item pushed while P2 is flooded is handed out next.
func TestIdleTierBanksNoCredit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newTestQueue(t, Config[int]{Tiers: tiers(40, 40, 20)})
		for i := 0; i < 100; i++ {
			require.NoError(t, q.Push("", 2, i))
		}
		for i := 0; i < 50; i++ {
			_, ok := q.TryPop()
			require.True(t, ok)
		}
		require.NoError(t, q.Push("vip", 0, 0))
		it, ok := q.TryPop()
		require.True(t, ok)
		assert.Equal(t, "vip", it.ID)
		// P0 gets no burst credit from its idle time: after one more P0 push the
		// shares are 2:1 again, not a run of P0.
		for i := 0; i < 10; i++ {
			require.NoError(t, q.Push("", 0, i))
		}
		order := drainOrder(q)[:6]
		assert.Equal(t, 4, count(order, 0), "order %v", order)
	})
}

func count(xs []int, v int) int {
	n := 0
	for _, x := range xs {
		if x == v {
			n++
		}
	}
	return n
}

func TestDeadlineActions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var escalated, dropped, retried []string
		cfg := Config[int]{
			Tiers: TaskQueueTiers(),
			OnRetry: func(it Item[int]) {
				mu.Lock()
				retried = append(retried, fmt.Sprint(it.ID, " retried=", it.Retried))
				mu.Unlock()
			},
			OnEscalate: func(it Item[int]) {
				mu.Lock()
				escalated = append(escalated, it.ID)
				mu.Unlock()
			},
			OnDrop: func(it Item[int]) {
				mu.Lock()
				dropped = append(dropped, fmt.Sprint(it.ID, "=", it.Value))
				mu.Unlock()
			},
		}
		q, clk := newTestQueue(t, cfg)

		// P0 escalates and is still handed out, flagged.
		require.NoError(t, q.Push("vip", 0, 1))
		clk.Advance(51 * time.Millisecond)
		it, ok := q.TryPop()
		require.True(t, ok)
		assert.Equal(t, "vip", it.ID)
		assert.True(t, it.Escalated)
		synctest.Wait() // callbacks run on the queue's goroutine
		assert.Equal(t, []string{"vip"}, escalated)

		// P1 retries once with a fresh deadline...
		require.NoError(t, q.Push("prem", 1, 2))
		clk.Advance(301 * time.Millisecond)
		it, ok = q.TryPop()
		require.True(t, ok)
		assert.True(t, it.Retried)
		assert.Equal(t, clk.Now().Add(300*time.Millisecond), it.Deadline)
		synctest.Wait()
		assert.Equal(t, []string{"prem retried=true"}, retried, "OnRetry reports the fresh deadline")
		// ...and is dropped on the second expiry.
		require.NoError(t, q.Requeue(Item[int]{ID: "prem2", Tier: 1, Value: 3}))
		clk.Advance(301 * time.Millisecond)
		_, ok = q.Position("prem2")
		require.True(t, ok, "lazy mode: nothing happens until a pop")
		it2, ok := q.TryPop() // retried and handed out
		require.True(t, ok)
		require.NoError(t, q.Requeue(it2))
		clk.Advance(301 * time.Millisecond)
		_, ok = q.TryPop()
		assert.False(t, ok)
		synctest.Wait()
		assert.Equal(t, []string{"prem2=3"}, dropped)

		// P2 drops and reports.
		require.NoError(t, q.Push("std", 2, 4))
		clk.Advance(1501 * time.Millisecond)
		_, ok = q.TryPop()
		assert.False(t, ok)
		synctest.Wait()
		assert.Equal(t, []string{"prem2=3", "std=4"}, dropped)

		assert.Equal(t, Stats{Pushed: 1, Popped: 1, Escalated: 1}, q.Stats(0))
		assert.Equal(t, Stats{Pushed: 1, Requeued: 2, Popped: 2, Retried: 2, Dropped: 1, Abandoned: 1}, q.Stats(1))
		assert.Equal(t, Stats{Pushed: 1, Dropped: 1, Abandoned: 1}, q.Stats(2))
	})
}

func TestEagerDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		escalated := make(chan string, 4)
		dropped := make(chan string, 4)
		q, clk := newTestQueue(t, Config[int]{
			EagerDeadlines: true,
			Tiers: []TierConfig{
				{MaxWait: 2 * time.Minute, OnDeadline: Escalate},
				{MaxWait: 5 * time.Minute, OnDeadline: Drop},
			},
			OnEscalate: func(it Item[int]) { escalated <- it.ID },
			OnDrop:     func(it Item[int]) { dropped <- it.ID },
		})
		require.NoError(t, q.Push("a", 0, 1))
		clk.Advance(time.Minute)
		require.NoError(t, q.Push("b", 0, 2))
		require.NoError(t, q.Push("c", 1, 3))
		clk.Advance(time.Minute + time.Millisecond) // a expires with no Pop
		assert.Equal(t, "a", <-escalated)
		pos, ok := q.Position("a")
		require.True(t, ok, "escalated items keep their place")
		assert.Equal(t, 0, pos.InTier)
		clk.Advance(time.Minute)
		assert.Equal(t, "b", <-escalated)
		clk.Advance(3 * time.Minute)
		assert.Equal(t, "c", <-dropped)
		assert.Equal(t, 2, q.Len())
		assert.Empty(t, escalated)
		it, ok := q.TryPop()
		require.True(t, ok)
		assert.True(t, it.Escalated)
		assert.Equal(t, "a", it.ID)
		assert.Equal(t, uint64(2), q.Stats(0).Escalated)
	})
}

func TestCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newTestQueue(t, Config[int]{Tiers: tiers(1)})
		for i := 0; i < 10; i++ {
			require.NoError(t, q.Push(fmt.Sprint(i), 0, i))
		}
		assert.True(t, q.Cancel("3"))
		assert.True(t, q.Cancel("8"))
		assert.False(t, q.Cancel("3"))
		assert.False(t, q.Cancel("nope"))
		assert.False(t, q.Cancel(""))
		p, ok := q.Position("9")
		require.True(t, ok)
		assert.Equal(t, Position{Overall: 7, InTier: 7}, p)
		_, ok = q.Position("3")
		assert.False(t, ok)
		var vals []int
		for {
			it, ok := q.TryPop()
			if !ok {
				break
			}
			vals = append(vals, it.Value)
		}
		assert.Equal(t, []int{0, 1, 2, 4, 5, 6, 7, 9}, vals)
		assert.Equal(t, uint64(2), q.Stats(0).Cancelled)
		// A cancelled ID may be reused.
		require.NoError(t, q.Push("3", 0, 3))
	})
}

// TestPositionMatchesPopOrder checks, on random workloads, that every item's
// reported overall position is exactly its index in the real pop order.
func TestPositionMatchesPopOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(1, 2))
		for round := 0; round < 40; round++ {
			nt := 1 + rng.IntN(4)
			quotas := make([]int, nt)
			for i := range quotas {
				quotas[i] = 1 + rng.IntN(50)
			}
			q, _ := newTestQueue(t, Config[int]{Tiers: tiers(quotas...)})
			id := 0
			var live []string
			for op := 0; op < 300; op++ {
				switch r := rng.IntN(10); {
				case r < 6:
					id++
					require.NoError(t, q.Push(fmt.Sprint(id), rng.IntN(nt), id))
					live = append(live, fmt.Sprint(id))
				case r < 8:
					q.TryPop()
				case len(live) > 0:
					q.Cancel(live[rng.IntN(len(live))])
				}
			}
			want := map[string]Position{}
			for _, s := range live {
				if p, ok := q.Position(s); ok {
					require.LessOrEqual(t, p.InTier, p.Overall)
					want[s] = p
				}
			}
			inTier := make([]int, nt)
			for i := 0; ; i++ {
				it, ok := q.TryPop()
				if !ok {
					break
				}
				p := want[it.ID]
				require.Equal(t, i, p.Overall, "round %d quotas %v item %s", round, quotas, it.ID)
				require.Equal(t, inTier[it.Tier], p.InTier)
				inTier[it.Tier]++
				delete(want, it.ID)
			}
			require.Empty(t, want)
		}
	})
}

func TestPositionUnderConcurrency(t *testing.T) {
	q, err := New[int](Config[int]{Tiers: tiers(40, 40, 20)})
	require.NoError(t, err)
	defer q.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for p := 0; p < 3; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				id := fmt.Sprintf("%d-%d", p, i)
				if err := q.Push(id, i%3, i); err != nil {
					errs <- err
					return
				}
				if pos, ok := q.Position(id); ok && (pos.InTier > pos.Overall || pos.Overall < 0) {
					errs <- fmt.Errorf("bad position %+v", pos)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 3000; i++ {
			if _, err := q.Pop(context.Background()); err != nil {
				errs <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 3000, q.Len())
	// After the concurrent phase, positions are exact and dense.
	seen := make(map[int]bool)
	q.mu.Lock()
	var ids []string
	for id := range q.ids {
		ids = append(ids, id)
	}
	q.mu.Unlock()
	want := map[string]int{}
	for _, id := range ids {
		p, ok := q.Position(id)
		require.True(t, ok)
		require.False(t, seen[p.Overall], "two items at %d", p.Overall)
		seen[p.Overall] = true
		want[id] = p.Overall
	}
	for i := 0; i < 3000; i++ {
		it, ok := q.TryPop()
		require.True(t, ok)
		require.Equal(t, i, want[it.ID])
	}
}

func TestPositionDebounce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var calls [][]PositionUpdate
		q, clk := newTestQueue(t, Config[int]{
			Tiers:            []TierConfig{{MaxWait: time.Hour, Quota: 1}},
			PositionDebounce: time.Second,
			OnPosition: func(u []PositionUpdate) {
				mu.Lock()
				calls = append(calls, u)
				mu.Unlock()
			},
		})
		get := func() [][]PositionUpdate {
			mu.Lock()
			defer mu.Unlock()
			return append([][]PositionUpdate(nil), calls...)
		}
		q.SetWorkers(1)
		q.RecordService(time.Minute)
		require.NoError(t, q.Push("a", 0, 1))
		require.NoError(t, q.Push("b", 0, 2))
		require.NoError(t, q.Push("c", 0, 3))
		clk.Advance(999 * time.Millisecond)
		assert.Empty(t, get(), "debounced")
		clk.Advance(time.Millisecond)
		require.Len(t, get(), 1)
		assert.Equal(t, []PositionUpdate{
			{ID: "a", Position: Position{0, 0}, EstimatedWait: time.Minute},
			{ID: "b", Position: Position{1, 1}, EstimatedWait: 2 * time.Minute},
			{ID: "c", Position: Position{2, 2}, EstimatedWait: 3 * time.Minute},
		}, get()[0])

		// Many changes within one window produce one call with only the changes.
		_, ok := q.TryPop()
		require.True(t, ok)
		require.NoError(t, q.Push("d", 0, 4))
		require.True(t, q.Cancel("d"))
		clk.Advance(2 * time.Second)
		require.Len(t, get(), 2)
		assert.Equal(t, []PositionUpdate{
			{ID: "b", Position: Position{0, 0}, EstimatedWait: time.Minute},
			{ID: "c", Position: Position{1, 1}, EstimatedWait: 2 * time.Minute},
		}, get()[1])

		// No change, no call; a change that restores nothing visible sends nothing.
		clk.Advance(5 * time.Second)
		require.NoError(t, q.Push("e", 0, 5))
		require.True(t, q.Cancel("e"))
		clk.Advance(5 * time.Second)
		assert.Len(t, get(), 2)
	})
}

func TestEstimatedWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newTestQueue(t, Config[int]{Tiers: tiers(1), ServiceWindow: 4})
		for i := 0; i < 6; i++ {
			require.NoError(t, q.Push(fmt.Sprint(i), 0, i))
		}
		w, ok := q.EstimatedWait("5")
		require.True(t, ok)
		assert.Zero(t, w, "no service time known yet")
		for _, d := range []time.Duration{time.Hour, time.Hour, 30 * time.Second, 90 * time.Second, 60 * time.Second, 60 * time.Second} {
			q.RecordService(d) // the window keeps the last 4: mean 60 s
		}
		q.SetWorkers(2)
		cases := map[string]time.Duration{"0": time.Minute, "1": time.Minute, "2": 2 * time.Minute, "5": 3 * time.Minute}
		for id, want := range cases {
			got, ok := q.EstimatedWait(id)
			require.True(t, ok)
			assert.Equal(t, want, got, "item %s", id)
		}
		_, ok = q.EstimatedWait("missing")
		assert.False(t, ok)
	})
}

func TestPopBlocksAndWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, _ := newTestQueue(t, Config[int]{Tiers: tiers(1, 1)})
		got := make(chan Item[int], 1)
		go func() {
			it, err := q.Pop(context.Background())
			if err == nil {
				got <- it
			}
		}()
		synctest.Wait() // the goroutine is parked
		require.True(t, func() bool {
			q.mu.Lock()
			defer q.mu.Unlock()
			return len(q.popWaiters) == 1
		}())
		require.NoError(t, q.Push("x", 1, 7))
		assert.Equal(t, 7, (<-got).Value)

		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := q.Pop(ctx)
			errc <- err
		}()
		cancel()
		require.ErrorIs(t, <-errc, context.Canceled)

		go func() {
			_, err := q.Pop(context.Background())
			errc <- err
		}()
		synctest.Wait() // the goroutine is parked
		require.True(t, func() bool {
			q.mu.Lock()
			defer q.mu.Unlock()
			return len(q.popWaiters) == 1
		}())
		require.NoError(t, q.Close())
		require.ErrorIs(t, <-errc, ErrClosed)
	})
}

// Concurrent producers and consumers lose nothing and duplicate nothing.
func TestConcurrentPushPop(t *testing.T) {
	q, err := New[int](Config[int]{Tiers: tiers(40, 40, 20)})
	require.NoError(t, err)
	const producers, per = 4, 3000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if err := q.PushWait(context.Background(), "", i%3, p*per+i); err != nil {
					panic(err)
				}
			}
		}()
	}
	seen := make([]bool, producers*per)
	var mu sync.Mutex
	var cw sync.WaitGroup
	for c := 0; c < 3; c++ {
		cw.Add(1)
		go func() {
			defer cw.Done()
			for {
				it, err := q.Pop(context.Background())
				if errors.Is(err, ErrClosed) {
					return
				}
				mu.Lock()
				if seen[it.Value] {
					panic("duplicate")
				}
				seen[it.Value] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.NoError(t, q.Close())
	cw.Wait()
	for i, s := range seen {
		require.True(t, s, "item %d lost", i)
	}
}

func TestZeroAllocPushPop(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	q, err := New[int](Config[int]{})
	require.NoError(t, err)
	ctx := context.Background()
	warm := func() {
		for i := 0; i < 64; i++ {
			_ = q.Push("", i%3, i)
		}
		for i := 0; i < 64; i++ {
			_, _ = q.Pop(ctx)
		}
	}
	warm()
	allocs := testing.AllocsPerRun(100, warm)
	assert.Zero(t, allocs)
	ids := []string{"a", "b", "c"}
	withIDs := func() {
		for i, id := range ids {
			_ = q.Push(id, i, i)
		}
		_, _ = q.Position("b")
		_ = q.Cancel("c")
		_, _ = q.TryPop()
		_, _ = q.TryPop()
	}
	withIDs()
	assert.Zero(t, testing.AllocsPerRun(100, withIDs))
}
