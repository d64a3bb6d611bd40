package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrLeaseHeld is returned by AcquireLease when another owner holds the
// lease, and ErrLeaseLost by RenewLease when the lease expired or was taken
// over (the caller must stop acting as the owner at once).
var (
	ErrLeaseHeld = errors.New("redisbroker: lease held by another owner")
	ErrLeaseLost = errors.New("redisbroker: lease lost")
)

// renewScript extends the lease only if owner still holds it.
var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// releaseScript deletes the lease only if owner still holds it.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1])
end
return 0`)

func (b *Broker) leaseKey(name string) string { return b.key("lease", name) }

// AcquireLease makes owner the holder of the lease name for ttl if nobody
// holds it (Redis SET NX PX). It returns ErrLeaseHeld when another owner
// does; acquiring a lease owner already holds extends it.
//
// A lease is mutual exclusion for liveness, not for safety: Redis can lose it
// (a restart without persistence, a failover), and a paused holder does not
// know it expired. Pair it with a fencing token checked by the store that the
// owner writes to (see session.Fence), so that a former holder's writes are
// rejected.
//
// Like every lease method it is one or two round trips bounded by ctx (an
// error wrapping ctx.Err() when ctx ends first; the command may still take
// effect) and returns ErrClosed after Shutdown.
func (b *Broker) AcquireLease(ctx context.Context, name, owner string, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("redisbroker: lease ttl %v below 1ms", ttl)
	}
	var ok bool
	err := b.do(ctx, func(ctx context.Context) (err error) {
		ok, err = b.client.SetNX(ctx, b.leaseKey(name), owner, ttl).Result()
		return err
	})
	if err != nil {
		return fmt.Errorf("redisbroker: acquire lease %q: %w", name, err)
	}
	if ok {
		return nil
	}
	// Already ours (a retry after a lost reply): extend it.
	if err := b.RenewLease(ctx, name, owner, ttl); err == nil {
		return nil
	} else if !errors.Is(err, ErrLeaseLost) {
		return err
	}
	return fmt.Errorf("%w: %q", ErrLeaseHeld, name)
}

// RenewLease extends owner's lease name to ttl from now, or returns
// ErrLeaseLost when owner no longer holds it.
func (b *Broker) RenewLease(ctx context.Context, name, owner string, ttl time.Duration) error {
	var n int
	err := b.do(ctx, func(ctx context.Context) (err error) {
		n, err = renewScript.Run(ctx, b.client, []string{b.leaseKey(name)}, owner, ttl.Milliseconds()).Int()
		return err
	})
	if err != nil {
		return fmt.Errorf("redisbroker: renew lease %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %q", ErrLeaseLost, name)
	}
	return nil
}

// ReleaseLease gives up owner's lease name so another owner can take it at
// once; releasing a lease owner does not hold is a no-op.
func (b *Broker) ReleaseLease(ctx context.Context, name, owner string) error {
	err := b.do(ctx, func(ctx context.Context) error {
		return releaseScript.Run(ctx, b.client, []string{b.leaseKey(name)}, owner).Err()
	})
	if err != nil {
		return fmt.Errorf("redisbroker: release lease %q: %w", name, err)
	}
	return nil
}

// LeaseHolder returns the current holder of lease name ("" when none).
func (b *Broker) LeaseHolder(ctx context.Context, name string) (string, error) {
	var v string
	err := b.do(ctx, func(ctx context.Context) (err error) {
		v, err = b.client.Get(ctx, b.leaseKey(name)).Result()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("redisbroker: lease holder %q: %w", name, err)
	}
	return v, nil
}
