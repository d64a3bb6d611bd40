package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/switchboard-go/switchboard/observe"
)

// Action is what a Queue does with an item whose deadline has passed before it
// was handed out. Actions are decided before the item runs and are counted per
// tier (Stats, and the deadline_actions_total metric).
//
// The zero value is Escalate: a tier that does not say otherwise never
// removes a waiting item on its own. (Before 2026-12 the zero value was Drop;
// see the package documentation.)
type Action uint8

const (
	// Escalate calls Config.OnEscalate once and keeps the item: it is handed
	// out with Item.Escalated set, so the consumer can send a degraded reply
	// (the whitepaper's P0 behaviour) or, in a waiting room, alert a supervisor
	// while the customer keeps their place. It is the zero value and the
	// default for custom tiers.
	Escalate Action = iota
	// RetryOnce gives the item one fresh deadline (now + MaxWait, re-sorted in
	// its tier by earliest deadline), sets Item.Retried and calls
	// Config.OnRetry; a second expiry drops it.
	RetryOnce
	// Drop removes the expired item and reports it through Config.OnDrop.
	// Only tiers that ask for it drop: no default does.
	Drop
)

// String returns "drop", "escalate" or "retry".
func (a Action) String() string {
	switch a {
	case Drop:
		return "drop"
	case Escalate:
		return "escalate"
	case RetryOnce:
		return "retry"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// TierConfig configures one priority tier. Tier 0 is the most important.
type TierConfig struct {
	// Name labels the tier in metrics and logs. Default "P<index>".
	Name string
	// MaxWait is how long an item may wait before its deadline action
	// applies; its deadline is push time + MaxWait. Must be > 0.
	MaxWait time.Duration
	// Capacity bounds the number of waiting items; Push returns ErrFull
	// beyond it. Default 4096.
	Capacity int
	// Quota is the tier's weight in the cross-tier scheduler: under
	// saturation the tier receives Quota/ΣQuota of the pops. Default 1.
	Quota int
	// OnDeadline is the action for items that expire. Default Escalate (the
	// zero value): nothing is dropped unless the tier asks for Drop.
	OnDeadline Action
}

// DefaultTiers returns the tiers a zero Config uses: a waiting room that is
// safe for customers. P0 (VIP) may wait 2 minutes, P1 (premium) 5 minutes
// and P2 (standard) 15 minutes before their deadline, and every tier
// Escalates — OnEscalate fires and the customer keeps their place, flagged
// late — rather than dropping anyone. Quotas are 40/40/20 and capacity 4096
// per tier. The slice is fresh; callers may modify it.
//
// Until 2026-12 DefaultTiers returned the whitepaper's task-queue tiers
// (50 ms / 300 ms / 1.5 s with Drop on P2), which silently dropped standard
// customers after 1.5 s; those are now TaskQueueTiers.
func DefaultTiers() []TierConfig {
	return []TierConfig{
		{Name: "P0", MaxWait: 2 * time.Minute, Capacity: DefaultCapacity, Quota: 40, OnDeadline: Escalate},
		{Name: "P1", MaxWait: 5 * time.Minute, Capacity: DefaultCapacity, Quota: 40, OnDeadline: Escalate},
		{Name: "P2", MaxWait: 15 * time.Minute, Capacity: DefaultCapacity, Quota: 20, OnDeadline: Escalate},
	}
}

// TaskQueueTiers returns the whitepaper's three task-queue tiers, for a Queue
// that feeds a Pool of short tasks rather than a waiting room: P0 (50 ms,
// Escalate), P1 (300 ms, RetryOnce) and P2 (1.5 s, Drop) with quotas
// 40/40/20 and capacity 4096 each. P2 items are dropped 1.5 s after they
// were pushed and P1 items after their second expiry: never use these tiers
// for customers. The slice is fresh; callers may modify it.
func TaskQueueTiers() []TierConfig {
	return []TierConfig{
		{Name: "P0", MaxWait: 50 * time.Millisecond, Capacity: DefaultCapacity, Quota: 40, OnDeadline: Escalate},
		{Name: "P1", MaxWait: 300 * time.Millisecond, Capacity: DefaultCapacity, Quota: 40, OnDeadline: RetryOnce},
		{Name: "P2", MaxWait: 1500 * time.Millisecond, Capacity: DefaultCapacity, Quota: 20, OnDeadline: Drop},
	}
}

// WaitingRoom returns the preset Config of a support waiting room: Name
// "waiting_room", DefaultTiers (2 / 5 / 15 minutes, Escalate on every tier,
// nobody dropped) and EagerDeadlines on, so OnEscalate fires at each
// deadline even while no agent is free to pop. Set the callbacks
// (OnEscalate, OnPosition, …) and Observer on the result, and adjust the
// tiers' MaxWait to the host's SLA.
func WaitingRoom[T any]() Config[T] {
	return Config[T]{Name: "waiting_room", Tiers: DefaultTiers(), EagerDeadlines: true}
}

// Defaults used when the corresponding Config fields are zero.
const (
	DefaultCapacity         = 4096
	DefaultPositionDebounce = time.Second
	DefaultServiceWindow    = 100
	// MaxTiers is the largest number of tiers a Queue accepts.
	MaxTiers = 64
)

// Config configures a Queue of T. The zero value is valid and yields a
// lazy waiting room that drops nobody (DefaultTiers, 1 s position debounce);
// WaitingRoom adds eager deadlines, TaskQueueTiers gives the whitepaper's
// task-queue tiers. Deadlines and debounce follow the time package's clock
// (in tests, the testing/synctest bubble's fake clock).
type Config[T any] struct {
	// Name labels this queue's metrics ("queue" label). Default "default".
	Name string
	// Tiers lists the tiers, most important first. Default DefaultTiers().
	Tiers []TierConfig
	// EagerDeadlines applies deadline actions by a timer at each deadline,
	// even when nobody pops (what a waiting room wants: escalate a customer
	// who waited too long while all agents are busy). When false (default)
	// actions are applied lazily, when an expired item reaches the front of a
	// Pop (or Match), which costs no timer on the hot path. Default false;
	// WaitingRoom sets it.
	EagerDeadlines bool
	// PositionDebounce is the minimum interval between two OnPosition calls.
	// Default 1 s.
	PositionDebounce time.Duration
	// OnPosition, when set, receives the items (those pushed with a non-empty
	// ID) whose position or wait estimate changed, at most once per
	// PositionDebounce. It runs on the queue's callback goroutine (see
	// Queue), never inside a Queue method or under the queue's lock, and
	// owns the slice.
	OnPosition func([]PositionUpdate)
	// OnEscalate is called once per item whose tier's action is Escalate when
	// its deadline passes. It runs on the queue's callback goroutine, in the
	// order the expiries were found (by a Pop, TryPop or Match, or the
	// deadline timer), never inside the call that found it and never under
	// the queue's lock; it may call the Queue.
	OnEscalate func(Item[T])
	// OnDrop is called for every item dropped because of its deadline (Drop,
	// or the second expiry of RetryOnce). Same goroutine rules as OnEscalate.
	OnDrop func(Item[T])
	// OnRetry is called for every item whose tier's action is RetryOnce when
	// its first deadline passes and it gets a fresh one (Item.Deadline is the
	// new deadline, Item.Retried is true), so a host that persists its
	// waiting room can record it. Same goroutine rules as OnEscalate.
	OnRetry func(Item[T])
	// ServiceWindow is how many recent service times EstimatedWait averages.
	// Default 100 (the "last 100 conversations" rule).
	ServiceWindow int
	// Observer receives metrics; nil disables them at no cost.
	Observer *observe.Observer
}

// normalized returns a copy of cfg with defaults filled in, or an error naming
// the invalid field.
func (cfg Config[T]) normalized() (Config[T], error) {
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Tiers == nil {
		cfg.Tiers = DefaultTiers()
	} else {
		cfg.Tiers = append([]TierConfig(nil), cfg.Tiers...)
	}
	if len(cfg.Tiers) == 0 || len(cfg.Tiers) > MaxTiers {
		return cfg, fmt.Errorf("%w: Tiers must have 1..%d entries, got %d", ErrInvalidConfig, MaxTiers, len(cfg.Tiers))
	}
	for i := range cfg.Tiers {
		t := &cfg.Tiers[i]
		if t.Name == "" {
			t.Name = fmt.Sprintf("P%d", i)
		}
		if t.MaxWait <= 0 {
			return cfg, fmt.Errorf("%w: Tiers[%d].MaxWait must be > 0, got %v", ErrInvalidConfig, i, t.MaxWait)
		}
		if t.Capacity == 0 {
			t.Capacity = DefaultCapacity
		}
		if t.Capacity < 0 || t.Capacity > 1<<30 {
			return cfg, fmt.Errorf("%w: Tiers[%d].Capacity must be in 1..2^30, got %d", ErrInvalidConfig, i, t.Capacity)
		}
		if t.Quota == 0 {
			t.Quota = 1
		}
		if t.Quota < 0 || t.Quota > 1<<16 {
			return cfg, fmt.Errorf("%w: Tiers[%d].Quota must be in 1..65536, got %d", ErrInvalidConfig, i, t.Quota)
		}
		if t.OnDeadline > Drop {
			return cfg, fmt.Errorf("%w: Tiers[%d].OnDeadline %v is unknown", ErrInvalidConfig, i, t.OnDeadline)
		}
	}
	if cfg.PositionDebounce == 0 {
		cfg.PositionDebounce = DefaultPositionDebounce
	}
	if cfg.PositionDebounce < 0 {
		return cfg, fmt.Errorf("%w: PositionDebounce must be >= 0, got %v", ErrInvalidConfig, cfg.PositionDebounce)
	}
	if cfg.ServiceWindow == 0 {
		cfg.ServiceWindow = DefaultServiceWindow
	}
	if cfg.ServiceWindow < 0 || cfg.ServiceWindow > 1<<16 {
		return cfg, fmt.Errorf("%w: ServiceWindow must be in 1..65536, got %d", ErrInvalidConfig, cfg.ServiceWindow)
	}
	return cfg, nil
}

// PoolConfig configures a Pool.
type PoolConfig[T any] struct {
	// Workers is the number of worker goroutines. Must be > 0.
	Workers int
	// Run executes one item. Its context carries the item's deadline (see
	// Pool) and is cancelled when Shutdown gives up waiting. Required.
	Run func(ctx context.Context, it Item[T]) error
	// OnPanic, when set, is called with the item and the recovered value
	// after a panic in Run, on the worker goroutine (never inside a host
	// call). The worker survives.
	OnPanic func(it Item[T], recovered any)
	// OnError, when set, is called with the item and the error Run
	// returned, on the worker goroutine after Run (never inside a host
	// call).
	OnError func(it Item[T], err error)
	// TaskTimeout, when > 0, sets each task's context deadline to start +
	// TaskTimeout instead of the item's deadline.
	TaskTimeout time.Duration
	// BaseContext is the parent of every task context. Default
	// context.Background().
	BaseContext context.Context
	// Observer receives metrics; nil disables them at no cost.
	Observer *observe.Observer
}
