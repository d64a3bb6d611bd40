package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/internal/lifetime"
	"github.com/switchboard-go/switchboard/observe"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultAddr        = "127.0.0.1:6379"
	DefaultPrefix      = "switchboard:fanout"
	DefaultShards      = 16
	DefaultHistoryTTL  = 10 * time.Minute
	DefaultMetaTTL     = 7 * 24 * time.Hour
	DefaultPresenceTTL = time.Minute
	DefaultHealthCheck = time.Second
)

// Config configures a Broker. Exactly one way to reach Redis is used:
// Client, else Options, else Addr.
type Config struct {
	// Client is an existing client (single node, sentinel or cluster). The
	// broker does not close it. Default: a client built from Options/Addr.
	Client redis.UniversalClient
	// Options builds a single-node client when Client is nil.
	Options *redis.Options
	// Addr is the Redis address when Client and Options are nil.
	// Default "127.0.0.1:6379".
	Addr string
	// Prefix starts every key and channel name. Default "switchboard:fanout".
	Prefix string
	// Shards is the number of pub/sub channels publications are spread
	// over (topic -> shard by xxhash); each subscribed shard uses one
	// connection and one goroutine. Default 16. All nodes must agree.
	Shards int
	// HistorySize is the stream length (XADD MAXLEN ~, so approximately)
	// kept per topic when the bus's HistoryOptions.Size for the topic is 0.
	// Default 0: no history unless the bus asks for it.
	HistorySize int
	// HistoryTTL is the stream expiry (refreshed on each publication) when
	// the bus's HistoryOptions.TTL is 0. Default 10 minutes.
	HistoryTTL time.Duration
	// MetaTTL is how long a topic's offset counter and epoch outlive its
	// last publication; afterwards the epoch changes. Never less than the
	// history TTL. Default 7 days.
	MetaTTL time.Duration
	// PresenceTTL is the minimum lifetime of a topic's presence keys after
	// the last join or refresh (each member has its own TTL inside).
	// Default 1 minute.
	PresenceTTL time.Duration
	// HealthCheck is how often the broker PINGs Redis, from Start until
	// Shutdown, so that Ready reports a lost or unresponsive Redis within
	// about this interval even when nothing is published (a PING
	// unanswered after HealthCheck counts as lost). Default 1s.
	HealthCheck time.Duration
	// Observer receives metrics and logs. Default nil: off.
	Observer *observe.Observer
}

// Broker is a fanout.Broker on Redis: pub/sub sharded over Config.Shards
// channels, history in Streams, offsets and epochs in a per-topic hash
// updated by Lua scripts, presence in a sorted set plus a hash. It is safe
// for concurrent use and is used by one fanout.Bus.
//
// Every method that reaches Redis takes the caller's ctx first and returns
// as soon as ctx is done, with an error wrapping ctx.Err(), even when Redis
// does not answer (see doc.go, "Contexts"). The broker follows the
// project's lifecycle convention: Shutdown, Close and Ready.
type Broker struct {
	cfg    Config
	client redis.UniversalClient
	own    bool
	shards []*pshard
	m      *metrics

	// life is done when the broker stops: it bounds the receivers, the
	// health check and the cleanup the broker does on its own.
	life *lifetime.Context
	// health is the last health check's verdict (nil: Redis answered).
	health atomic.Pointer[error]

	mu       sync.Mutex
	h        fanout.BrokerHandler
	wg       sync.WaitGroup // shard receivers and the health check
	calls    int            // round trips running on goroutines of the broker
	idle     chan struct{}  // closed when calls drops to 0 after closing
	closed   bool
	started  bool
	shutDone chan struct{}
	shutErr  error
}

// pshard is one pub/sub channel and the connection receiving it.
type pshard struct {
	idx     int
	channel string

	// sem (capacity 1) serialises subscribe/unsubscribe of this shard; a
	// channel so that waiting for it respects a ctx.
	sem     chan struct{}
	topics  int // subscribed topics mapped to this shard; guarded by sem
	ps      *redis.PubSub
	confirm chan struct{}
	// inUse mirrors topics > 0 for Ready; lost is set while the pub/sub
	// connection is down (nil: up). A shard without topics is not
	// resubscribed, so Ready ignores its lost state.
	inUse atomic.Bool
	lost  atomic.Pointer[error]
}

func (s *pshard) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *pshard) unlock() { <-s.sem }

var _ fanout.Broker = (*Broker)(nil)

// Errors returned by the broker. Compare with errors.Is.
var (
	// ErrClosed is returned by every method once Shutdown or Close has
	// begun, Ready included.
	ErrClosed = errors.New("redisbroker: closed")
	// ErrDisconnected is wrapped by Ready while Redis is unreachable or
	// unresponsive (the last health check failed), while a shard's
	// pub/sub connection is lost and not yet resubscribed, and before the
	// first health check answered.
	ErrDisconnected = errors.New("redisbroker: disconnected from Redis")
)

// New validates cfg and connects lazily (the first command dials). It does
// not start goroutines until the bus calls Start.
func New(cfg Config) (*Broker, error) {
	switch {
	case cfg.Shards < 0:
		return nil, fmt.Errorf("redisbroker: Config.Shards %d must be >= 0", cfg.Shards)
	case cfg.HistorySize < 0:
		return nil, fmt.Errorf("redisbroker: Config.HistorySize %d must be >= 0", cfg.HistorySize)
	case cfg.HistoryTTL < 0:
		return nil, fmt.Errorf("redisbroker: Config.HistoryTTL %v must be >= 0", cfg.HistoryTTL)
	case cfg.MetaTTL < 0:
		return nil, fmt.Errorf("redisbroker: Config.MetaTTL %v must be >= 0", cfg.MetaTTL)
	case cfg.PresenceTTL < 0:
		return nil, fmt.Errorf("redisbroker: Config.PresenceTTL %v must be >= 0", cfg.PresenceTTL)
	case cfg.HealthCheck < 0:
		return nil, fmt.Errorf("redisbroker: Config.HealthCheck %v must be >= 0", cfg.HealthCheck)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Shards == 0 {
		cfg.Shards = DefaultShards
	}
	if cfg.HistoryTTL == 0 {
		cfg.HistoryTTL = DefaultHistoryTTL
	}
	if cfg.MetaTTL == 0 {
		cfg.MetaTTL = DefaultMetaTTL
	}
	if cfg.PresenceTTL == 0 {
		cfg.PresenceTTL = DefaultPresenceTTL
	}
	if cfg.HealthCheck == 0 {
		cfg.HealthCheck = DefaultHealthCheck
	}
	b := &Broker{cfg: cfg, client: cfg.Client, life: lifetime.New(), shutDone: make(chan struct{})}
	notYet := fmt.Errorf("redisbroker: no health check answered yet: %w", ErrDisconnected)
	b.health.Store(&notYet)
	if b.client == nil {
		opts := cfg.Options
		if opts == nil {
			addr := cfg.Addr
			if addr == "" {
				addr = DefaultAddr
			}
			opts = &redis.Options{Addr: addr}
		}
		b.client = redis.NewClient(opts)
		b.own = true
	}
	b.shards = make([]*pshard, cfg.Shards)
	for i := range b.shards {
		b.shards[i] = &pshard{idx: i, channel: cfg.Prefix + ":shard:" + strconv.Itoa(i),
			sem: make(chan struct{}, 1), confirm: make(chan struct{}, 1)}
	}
	b.m = newMetrics(cfg.Observer)
	return b, nil
}

// Start implements fanout.Broker: it records h and starts the health
// check. Shard receivers start on the first Subscribe of a topic in their
// shard. It makes no network call itself.
func (b *Broker) Start(h fanout.BrokerHandler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.started {
		return errors.New("redisbroker: already started")
	}
	b.started, b.h = true, h
	b.wg.Add(1)
	go b.healthLoop()
	return nil
}

// do runs fn, one Redis round trip, and returns its error, or ctx's as
// soon as ctx is done. go-redis bounds a round trip by ctx's deadline only
// (with Options.ContextTimeoutEnabled) and never by its cancellation, so
// with a cancellable ctx fn runs on a goroutine of the broker, which is
// abandoned when ctx ends first: it finishes when Redis answers or the
// client's own timeouts expire (the command may still take effect), and
// Shutdown waits for it. fn must not write anything the caller reads after
// an error. After Shutdown has begun it returns ErrClosed.
func (b *Broker) do(ctx context.Context, fn func(context.Context) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if ctx.Done() == nil {
		if b.isClosed() {
			return ErrClosed
		}
		return fn(ctx)
	}
	if !b.track() {
		return ErrClosed
	}
	done := make(chan error, 1)
	go func() {
		defer b.untrack()
		done <- fn(ctx)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done:
			return err
		default:
			return ctx.Err()
		}
	}
}

// goTracked runs fn on a goroutine Shutdown waits for, unless the broker
// is closed.
func (b *Broker) goTracked(fn func()) {
	if !b.track() {
		return
	}
	go func() {
		defer b.untrack()
		fn()
	}()
}

// failed counts a failed command in errors_total{op}, unless it failed
// because the caller's ctx ended: that is no Redis error.
func (b *Broker) failed(ctx context.Context, op string) {
	if ctx.Err() == nil {
		b.m.err(op)
	}
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func (b *Broker) track() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.calls++
	return true
}

func (b *Broker) untrack() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls--
	if b.calls == 0 && b.idle != nil {
		close(b.idle)
		b.idle = nil
	}
}

// healthLoop PINGs Redis every Config.HealthCheck until the broker stops.
func (b *Broker) healthLoop() {
	defer b.wg.Done()
	tick := time.NewTicker(b.cfg.HealthCheck)
	defer tick.Stop()
	for {
		b.checkHealth()
		select {
		case <-b.life.Done():
			return
		case <-tick.C:
		}
	}
}

func (b *Broker) checkHealth() {
	ctx, cancel := context.WithTimeout(b.life, b.cfg.HealthCheck)
	err := b.do(ctx, func(ctx context.Context) error { return b.client.Ping(ctx).Err() })
	cancel()
	if b.life.Err() != nil {
		return
	}
	if err == nil {
		if b.health.Swap(nil) != nil {
			b.log().Info("redisbroker: Redis answers")
		}
		return
	}
	herr := fmt.Errorf("redisbroker: health check: %w: %w", ErrDisconnected, err)
	if old := b.health.Swap(&herr); old == nil {
		b.log().Warn("redisbroker: Redis does not answer", "err", err)
	}
}

// Ready implements fanout.Broker: nil while Redis answers the health
// check and every subscribed shard's pub/sub connection is up; an error
// wrapping ErrDisconnected otherwise, or ErrClosed once Shutdown or Close
// has begun (and, before Start, an error wrapping ErrDisconnected). It
// does not block and makes no network call.
func (b *Broker) Ready() error {
	b.mu.Lock()
	closed, started := b.closed, b.started
	b.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !started:
		return fmt.Errorf("redisbroker: not started: %w", ErrDisconnected)
	}
	if p := b.health.Load(); p != nil {
		return *p
	}
	for _, s := range b.shards {
		if p := s.lost.Load(); p != nil && s.inUse.Load() {
			return *p
		}
	}
	return nil
}

// Client returns the Redis client in use.
func (b *Broker) Client() redis.UniversalClient { return b.client }

func (b *Broker) shard(topic string) *pshard {
	return b.shards[xxhash.Sum64String(topic)%uint64(len(b.shards))]
}

func (b *Broker) key(kind, topic string) string {
	// The hash tag keeps one topic's keys in one cluster slot.
	return b.cfg.Prefix + ":" + kind + ":{" + topic + "}"
}

func lenPrefixed(s string) string { return strconv.Itoa(len(s)) + ":" + s }

func (b *Broker) history(h fanout.HistoryOptions) (size int, ttl time.Duration) {
	size, ttl = h.Size, h.TTL
	if size == 0 {
		size = b.cfg.HistorySize
	}
	if ttl == 0 {
		ttl = b.cfg.HistoryTTL
	}
	return size, ttl
}

// Publish implements fanout.Broker in one script call (one round trip,
// bounded by ctx; when ctx ends first the publication may still be made).
func (b *Broker) Publish(ctx context.Context, topic string, payload []byte, h fanout.HistoryOptions) (fanout.Publication, error) {
	start := time.Now()
	size, ttl := b.history(h)
	meta := max(b.cfg.MetaTTL, ttl)
	now := time.Now()
	var res []any
	err := b.do(ctx, func(ctx context.Context) (err error) {
		res, err = publishScript.Run(ctx, b.client,
			[]string{b.key("h", topic), b.key("m", topic)},
			payload, strconv.FormatInt(now.UnixNano(), 10), newEpoch(), size,
			ttl.Milliseconds(), meta.Milliseconds(), b.shard(topic).channel, lenPrefixed(topic),
		).Slice()
		return err
	})
	if err != nil {
		b.failed(ctx, "publish")
		return fanout.Publication{}, fmt.Errorf("redisbroker: publish %q: %w", topic, err)
	}
	if len(res) != 2 {
		return fanout.Publication{}, fmt.Errorf("redisbroker: publish %q: unexpected reply %v", topic, res)
	}
	off, _ := res[0].(int64)
	ep, _ := res[1].(string)
	b.m.published(time.Since(start))
	return fanout.Publication{Topic: topic, Offset: uint64(off), Epoch: ep, Payload: payload, Time: now}, nil
}

// History implements fanout.Broker in one script call, bounded by ctx.
func (b *Broker) History(ctx context.Context, topic string, since uint64, limit int) ([]fanout.Publication, fanout.Position, error) {
	var res []any
	err := b.do(ctx, func(ctx context.Context) (err error) {
		res, err = historyScript.Run(ctx, b.client,
			[]string{b.key("h", topic), b.key("m", topic)},
			strconv.FormatUint(since+1, 10), limit,
		).Slice()
		return err
	})
	if err != nil {
		b.failed(ctx, "history")
		return nil, fanout.Position{}, fmt.Errorf("redisbroker: history %q: %w", topic, err)
	}
	if len(res) != 3 {
		return nil, fanout.Position{}, fmt.Errorf("redisbroker: history %q: unexpected reply", topic)
	}
	var pos fanout.Position
	switch o := res[0].(type) {
	case string:
		pos.Offset, _ = strconv.ParseUint(o, 10, 64)
	case int64:
		pos.Offset = uint64(o)
	}
	pos.Epoch, _ = res[1].(string)
	entries, _ := res[2].([]any)
	pubs := make([]fanout.Publication, 0, len(entries))
	for _, e := range entries {
		p, ok := parseEntry(topic, pos.Epoch, e)
		if !ok {
			return nil, pos, fmt.Errorf("redisbroker: history %q: malformed stream entry", topic)
		}
		pubs = append(pubs, p)
	}
	return pubs, pos, nil
}

// parseEntry decodes an XRANGE entry: [id, [field, value, ...]].
func parseEntry(topic, epoch string, e any) (fanout.Publication, bool) {
	pair, ok := e.([]any)
	if !ok || len(pair) != 2 {
		return fanout.Publication{}, false
	}
	id, _ := pair[0].(string)
	offStr, _, _ := strings.Cut(id, "-")
	off, err := strconv.ParseUint(offStr, 10, 64)
	if err != nil {
		return fanout.Publication{}, false
	}
	fields, _ := pair[1].([]any)
	p := fanout.Publication{Topic: topic, Offset: off, Epoch: epoch}
	for i := 0; i+1 < len(fields); i += 2 {
		k, _ := fields[i].(string)
		v, _ := fields[i+1].(string)
		switch k {
		case "d":
			p.Payload = []byte(v)
		case "t":
			ns, _ := strconv.ParseInt(v, 10, 64)
			p.Time = time.Unix(0, ns)
		}
	}
	return p, true
}

// Join implements fanout.Broker in one script call, bounded by ctx.
func (b *Broker) Join(ctx context.Context, topic string, m fanout.Member, ttl time.Duration) error {
	err := b.do(ctx, func(ctx context.Context) error {
		return joinScript.Run(ctx, b.client,
			[]string{b.key("z", topic), b.key("p", topic)},
			m.ID, m.Info, ttl.Milliseconds(), b.presenceKeyTTL(ttl).Milliseconds(),
			b.shard(topic).channel, lenPrefixed(topic),
		).Err()
	})
	if err != nil {
		b.failed(ctx, "join")
		return fmt.Errorf("redisbroker: join %q: %w", topic, err)
	}
	return nil
}

func (b *Broker) presenceKeyTTL(ttl time.Duration) time.Duration {
	return max(b.cfg.PresenceTTL, 2*ttl)
}

// Refresh implements fanout.Broker in one script call, bounded by ctx.
func (b *Broker) Refresh(ctx context.Context, topic, memberID string, ttl time.Duration) error {
	var n int
	err := b.do(ctx, func(ctx context.Context) (err error) {
		n, err = refreshScript.Run(ctx, b.client,
			[]string{b.key("z", topic), b.key("p", topic)},
			memberID, ttl.Milliseconds(), b.presenceKeyTTL(ttl).Milliseconds(),
		).Int()
		return err
	})
	if err != nil {
		b.failed(ctx, "refresh")
		return fmt.Errorf("redisbroker: refresh %q: %w", topic, err)
	}
	if n == 0 {
		return fanout.ErrNotMember
	}
	return nil
}

// Leave implements fanout.Broker in one script call, bounded by ctx.
func (b *Broker) Leave(ctx context.Context, topic, memberID string) error {
	var n int
	err := b.do(ctx, func(ctx context.Context) (err error) {
		n, err = leaveScript.Run(ctx, b.client,
			[]string{b.key("z", topic), b.key("p", topic)},
			memberID, b.shard(topic).channel, lenPrefixed(topic),
		).Int()
		return err
	})
	if err != nil {
		b.failed(ctx, "leave")
		return fmt.Errorf("redisbroker: leave %q: %w", topic, err)
	}
	if n == 0 {
		return fanout.ErrNotMember
	}
	return nil
}

// Members implements fanout.Broker in one script call, bounded by ctx.
func (b *Broker) Members(ctx context.Context, topic string) ([]fanout.Member, error) {
	var res []string
	err := b.do(ctx, func(ctx context.Context) (err error) {
		res, err = membersScript.Run(ctx, b.client,
			[]string{b.key("z", topic), b.key("p", topic)},
			b.shard(topic).channel, lenPrefixed(topic),
		).StringSlice()
		return err
	})
	if err != nil {
		b.failed(ctx, "members")
		return nil, fmt.Errorf("redisbroker: members %q: %w", topic, err)
	}
	out := make([]fanout.Member, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		out = append(out, fanout.Member{ID: res[i], Info: []byte(res[i+1])})
	}
	return out, nil
}

// Subscribe implements fanout.Broker: the first topic of a shard
// subscribes the shard's channel and waits for Redis to confirm it. All of
// it, waiting for a concurrent subscribe or unsubscribe of the same shard
// included, is bounded by ctx.
func (b *Broker) Subscribe(ctx context.Context, topic string) error {
	if b.isClosed() {
		return ErrClosed
	}
	s := b.shard(topic)
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("redisbroker: subscribe %q: %w", s.channel, err)
	}
	defer s.unlock()
	if s.topics > 0 {
		s.topics++
		return nil
	}
	b.mu.Lock()
	if b.closed || !b.started {
		b.mu.Unlock()
		return ErrClosed
	}
	if s.ps == nil {
		s.ps = b.client.Subscribe(b.life)
		b.wg.Add(1)
		go b.receive(s, s.ps)
	}
	ps := s.ps
	b.mu.Unlock()
	select {
	case <-s.confirm:
	default:
	}
	err := b.do(ctx, func(ctx context.Context) error { return ps.Subscribe(ctx, s.channel) })
	if err == nil {
		select {
		case <-s.confirm:
			s.topics++
			s.inUse.Store(true)
			return nil
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if ctx.Err() != nil {
		// The abandoned SUBSCRIBE may still reach Redis: take the channel
		// back once it has, unless a topic of the shard needs it by then.
		b.goTracked(func() { b.dropIdleChannel(s) })
	}
	return fmt.Errorf("redisbroker: subscribe %q: %w", s.channel, err)
}

// dropIdleChannel unsubscribes s's channel if no topic of the shard is
// subscribed.
func (b *Broker) dropIdleChannel(s *pshard) {
	if s.lock(b.life) != nil {
		return
	}
	defer s.unlock()
	if s.topics == 0 && s.ps != nil {
		if err := s.ps.Unsubscribe(b.life, s.channel); err != nil && b.life.Err() == nil {
			b.log().Warn("redisbroker: unsubscribe idle channel", "shard", s.idx, "err", err)
		}
	}
}

// Unsubscribe implements fanout.Broker: the last topic of a shard
// unsubscribes its channel (the connection stays for later use). It is
// bounded by ctx.
func (b *Broker) Unsubscribe(ctx context.Context, topic string) error {
	if b.isClosed() {
		return ErrClosed
	}
	s := b.shard(topic)
	if err := s.lock(ctx); err != nil {
		return fmt.Errorf("redisbroker: unsubscribe %q: %w", s.channel, err)
	}
	defer s.unlock()
	if s.topics == 0 {
		return nil
	}
	s.topics--
	if s.topics > 0 || s.ps == nil {
		return nil
	}
	s.inUse.Store(false)
	ps := s.ps
	if err := b.do(ctx, func(ctx context.Context) error { return ps.Unsubscribe(ctx, s.channel) }); err != nil {
		return fmt.Errorf("redisbroker: unsubscribe %q: %w", s.channel, err)
	}
	return nil
}

// receive is shard s's delivery loop; it owns nothing but its PubSub's
// read side and stops when the broker stops.
func (b *Broker) receive(s *pshard, ps *redis.PubSub) {
	defer b.wg.Done()
	backoff := 50 * time.Millisecond
	for {
		msg, err := ps.Receive(b.life)
		if err != nil {
			if b.life.Err() != nil {
				return
			}
			if s.lost.Load() == nil {
				b.m.disconnected()
				b.log().Warn("redisbroker: pub/sub connection lost", "shard", s.idx, "err", err)
				lost := fmt.Errorf("redisbroker: pub/sub shard %d: %w: %w", s.idx, ErrDisconnected, err)
				s.lost.Store(&lost)
			}
			t := time.NewTimer(backoff)
			select {
			case <-b.life.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if s.lost.Swap(nil) != nil {
				b.log().Info("redisbroker: pub/sub resubscribed", "shard", s.idx)
				idx := s.idx
				b.h.HandleReconnect(func(topic string) bool { return b.shard(topic).idx == idx })
				// No continue: this may also be the confirmation a Subscribe
				// is waiting for (a shard that had no channel while its
				// connection was down only resubscribes when asked).
			}
			select {
			case s.confirm <- struct{}{}:
			default:
			}
		case *redis.Message:
			b.dispatch(m.Payload)
		}
	}
}

func (b *Broker) dispatch(msg string) {
	if len(msg) == 0 {
		return
	}
	switch msg[0] {
	case 'p':
		p, ok := parsePublication(msg[1:])
		if !ok {
			b.m.err("decode")
			return
		}
		b.m.received(p.Time)
		b.h.HandlePublication(p)
	case 'j', 'l':
		ev, ok := parsePresence(msg[1:])
		if !ok {
			b.m.err("decode")
			return
		}
		ev.Kind = fanout.Join
		if msg[0] == 'l' {
			ev.Kind = fanout.Leave
		}
		b.h.HandlePresence(ev)
	}
}

// cutNum reads "<digits>:" from s.
func cutNum(s string) (uint64, string, bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return 0, s, false
	}
	n, err := strconv.ParseUint(s[:i], 10, 64)
	return n, s[i+1:], err == nil
}

// cutLen reads "<len>:<bytes>" from s.
func cutLen(s string) (string, string, bool) {
	n, rest, ok := cutNum(s)
	if !ok || n > uint64(len(rest)) {
		return "", s, false
	}
	return rest[:n], rest[n:], true
}

func parsePublication(s string) (fanout.Publication, bool) {
	off, s, ok1 := cutNum(s)
	ns, s, ok2 := cutNum(s)
	ep, s, ok3 := cutLen(s)
	topic, payload, ok4 := cutLen(s)
	if !ok1 || !ok2 || !ok3 || !ok4 || topic == "" || ns > math.MaxInt64 {
		return fanout.Publication{}, false
	}
	return fanout.Publication{Topic: topic, Offset: off, Epoch: ep, Payload: []byte(payload), Time: time.Unix(0, int64(ns))}, true
}

func parsePresence(s string) (fanout.PresenceEvent, bool) {
	topic, s, ok1 := cutLen(s)
	id, info, ok2 := cutLen(s)
	if !ok1 || !ok2 || topic == "" || id == "" {
		return fanout.PresenceEvent{}, false
	}
	return fanout.PresenceEvent{Topic: topic, Member: fanout.Member{ID: id, Info: []byte(info)}}, true
}

// Shutdown implements fanout.Broker: it refuses new calls at once (they
// return ErrClosed, Ready too), waits within ctx for the round trips in
// progress, then stops the shard receivers and the health check, closes
// the pub/sub connections and, if the broker created it, the client. It
// returns once no goroutine of the broker runs: a round trip abandoned by
// a cancelled caller ends when Redis answers or the client's timeouts
// expire (at once when the broker owns the client, which it closes). When
// ctx ends first it returns an error wrapping ctx.Err(). It is idempotent:
// a later call waits for the first and returns its result.
func (b *Broker) Shutdown(ctx context.Context) error {
	abandoned, err := b.shutdown(ctx)
	if abandoned && ctx.Err() != nil {
		return errors.Join(fmt.Errorf("redisbroker: shutdown: %w", ctx.Err()), err)
	}
	return err
}

// Close stops the broker at once: Shutdown with an already-canceled
// context. It returns only errors from releasing connections, and is
// idempotent.
func (b *Broker) Close() error {
	_, err := b.shutdown(lifetime.Canceled())
	return err
}

func (b *Broker) shutdown(ctx context.Context) (abandoned bool, err error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		<-b.shutDone
		return false, b.shutErr
	}
	b.closed = true
	idle := make(chan struct{})
	if b.calls == 0 {
		close(idle)
	} else {
		b.idle = idle
	}
	b.mu.Unlock()
	if ctx.Err() != nil {
		abandoned = true
	} else {
		select {
		case <-idle:
		case <-ctx.Done():
			abandoned = true
		}
	}
	b.life.Stop()
	var errs []error
	for _, s := range b.shards {
		b.mu.Lock()
		ps := s.ps
		b.mu.Unlock()
		if ps != nil {
			if err := ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	b.wg.Wait()
	if b.own {
		if err := b.client.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	<-idle
	b.shutErr = errors.Join(errs...)
	close(b.shutDone)
	return abandoned, b.shutErr
}

func (b *Broker) log() interface {
	Warn(string, ...any)
	Info(string, ...any)
} {
	return b.cfg.Observer.Logger()
}

func newEpoch() string { return strconv.FormatUint(rand.Uint64(), 36) }

type metrics struct {
	publishLat prometheus.Observer
	lag        prometheus.Observer
	errs       *prometheus.CounterVec
	disconn    prometheus.Counter
}

func newMetrics(o *observe.Observer) *metrics {
	if o == nil {
		return nil
	}
	return &metrics{
		publishLat: o.Histogram("fanout_redis", "publish_seconds", "Duration of the publish script (one round trip).", nil).WithLabelValues(),
		lag:        o.Histogram("fanout_redis", "pubsub_lag_seconds", "Time from publication to its receipt from pub/sub on this node.", nil).WithLabelValues(),
		errs:       o.Counter("fanout_redis", "errors_total", "Redis errors by operation.", "op"),
		disconn:    o.Counter("fanout_redis", "pubsub_disconnects_total", "Pub/sub connections lost.").WithLabelValues(),
	}
}

func (m *metrics) published(d time.Duration) {
	if m != nil {
		m.publishLat.Observe(d.Seconds())
	}
}

func (m *metrics) received(t time.Time) {
	if m != nil {
		m.lag.Observe(time.Since(t).Seconds())
	}
}

func (m *metrics) err(op string) {
	if m != nil {
		m.errs.WithLabelValues(op).Inc()
	}
}

func (m *metrics) disconnected() {
	if m != nil {
		m.disconn.Inc()
	}
}
