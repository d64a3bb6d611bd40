package redisbroker_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/fanout/redisbroker"
	"github.com/switchboard-go/switchboard/internal/redistest"
)

func newBroker(t *testing.T, addr string) *redisbroker.Broker {
	t.Helper()
	br, err := redisbroker.New(redisbroker.Config{Options: &redis.Options{Addr: addr}, Prefix: "lease-test"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = br.Close() })
	return br
}

func TestLeaseMutualExclusionAndExpiry(t *testing.T) {
	addr, _ := redistest.Start(t)
	a, b := newBroker(t, addr), newBroker(t, addr)
	ctx := context.Background()
	const ttl = 300 * time.Millisecond

	require.NoError(t, a.AcquireLease(ctx, "p1", "node-a", ttl))
	require.ErrorIs(t, b.AcquireLease(ctx, "p1", "node-b", ttl), redisbroker.ErrLeaseHeld)
	require.NoError(t, a.AcquireLease(ctx, "p1", "node-a", ttl), "re-acquiring one's own lease extends it")
	require.ErrorIs(t, b.RenewLease(ctx, "p1", "node-b", ttl), redisbroker.ErrLeaseLost, "b never held it")
	holder, err := b.LeaseHolder(ctx, "p1")
	require.NoError(t, err)
	assert.Equal(t, "node-a", holder)
	require.NoError(t, b.AcquireLease(ctx, "p2", "node-b", ttl), "leases are independent")

	// a stops renewing: the lease expires and b can take it; a then learns
	// it lost it.
	require.Eventually(t, func() bool { return b.AcquireLease(ctx, "p1", "node-b", ttl) == nil }, 3*time.Second, 20*time.Millisecond)
	require.ErrorIs(t, a.RenewLease(ctx, "p1", "node-a", ttl), redisbroker.ErrLeaseLost)
	require.NoError(t, a.ReleaseLease(ctx, "p1", "node-a"), "releasing a lease one lost is a no-op")
	holder, err = a.LeaseHolder(ctx, "p1")
	require.NoError(t, err)
	assert.Equal(t, "node-b", holder)

	require.NoError(t, b.ReleaseLease(ctx, "p1", "node-b"))
	holder, err = a.LeaseHolder(ctx, "p1")
	require.NoError(t, err)
	assert.Empty(t, holder)
}

// TestLeaseRacersOneWins: many owners race for a free lease at once;
// exactly one gets it, every round.
func TestLeaseRacersOneWins(t *testing.T) {
	addr, _ := redistest.Start(t)
	br := newBroker(t, addr)
	ctx := context.Background()
	for round := range 50 {
		name := "race-" + string(rune('a'+round%26)) + time.Now().Format("150405.000000")
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if br.AcquireLease(ctx, name, "owner-"+string(rune('a'+i)), time.Minute) == nil {
					wins.Add(1)
				}
			}()
		}
		wg.Wait()
		require.Equal(t, int32(1), wins.Load(), "round %d", round)
	}
}
