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
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/switchboard-go/switchboard/fanout"
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
	// Observer receives metrics and logs. Default nil: off.
	Observer *observe.Observer
}

// Broker is a fanout.Broker on Redis: pub/sub sharded over Config.Shards
// channels, history in Streams, offsets and epochs in a per-topic hash
// updated by Lua scripts, presence in a sorted set plus a hash. It is safe
// for concurrent use and is used by one fanout.Bus.
type Broker struct {
	cfg    Config
	client redis.UniversalClient
	own    bool
	shards []*pshard
	m      *metrics

	mu      sync.Mutex
	h       fanout.BrokerHandler
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  bool
	started bool
}

// pshard is one pub/sub channel and the connection receiving it.
type pshard struct {
	idx     int
	channel string

	mu      sync.Mutex // serialises subscribe/unsubscribe of this shard
	topics  int        // subscribed topics mapped to this shard
	ps      *redis.PubSub
	confirm chan struct{}
}

var _ fanout.Broker = (*Broker)(nil)

// ErrClosed is returned after Close.
var ErrClosed = errors.New("redisbroker: closed")

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
	b := &Broker{cfg: cfg, client: cfg.Client}
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
		b.shards[i] = &pshard{idx: i, channel: cfg.Prefix + ":shard:" + strconv.Itoa(i), confirm: make(chan struct{}, 1)}
	}
	b.m = newMetrics(cfg.Observer)
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// Start implements fanout.Broker: it records h. Shard receivers start on
// the first Subscribe of a topic in their shard.
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

// Publish implements fanout.Broker in one script call (one round trip).
func (b *Broker) Publish(ctx context.Context, topic string, payload []byte, h fanout.HistoryOptions) (fanout.Publication, error) {
	start := time.Now()
	size, ttl := b.history(h)
	meta := max(b.cfg.MetaTTL, ttl)
	now := time.Now()
	res, err := publishScript.Run(ctx, b.client,
		[]string{b.key("h", topic), b.key("m", topic)},
		payload, strconv.FormatInt(now.UnixNano(), 10), newEpoch(), size,
		ttl.Milliseconds(), meta.Milliseconds(), b.shard(topic).channel, lenPrefixed(topic),
	).Slice()
	if err != nil {
		b.m.err("publish")
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

// History implements fanout.Broker in one script call.
func (b *Broker) History(ctx context.Context, topic string, since uint64, limit int) ([]fanout.Publication, fanout.Position, error) {
	res, err := historyScript.Run(ctx, b.client,
		[]string{b.key("h", topic), b.key("m", topic)},
		strconv.FormatUint(since+1, 10), limit,
	).Slice()
	if err != nil {
		b.m.err("history")
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

// Join implements fanout.Broker.
func (b *Broker) Join(ctx context.Context, topic string, m fanout.Member, ttl time.Duration) error {
	err := joinScript.Run(ctx, b.client,
		[]string{b.key("z", topic), b.key("p", topic)},
		m.ID, m.Info, ttl.Milliseconds(), b.presenceKeyTTL(ttl).Milliseconds(),
		b.shard(topic).channel, lenPrefixed(topic),
	).Err()
	if err != nil {
		b.m.err("join")
		return fmt.Errorf("redisbroker: join %q: %w", topic, err)
	}
	return nil
}

func (b *Broker) presenceKeyTTL(ttl time.Duration) time.Duration {
	return max(b.cfg.PresenceTTL, 2*ttl)
}

// Refresh implements fanout.Broker.
func (b *Broker) Refresh(ctx context.Context, topic, memberID string, ttl time.Duration) error {
	n, err := refreshScript.Run(ctx, b.client,
		[]string{b.key("z", topic), b.key("p", topic)},
		memberID, ttl.Milliseconds(), b.presenceKeyTTL(ttl).Milliseconds(),
	).Int()
	if err != nil {
		b.m.err("refresh")
		return fmt.Errorf("redisbroker: refresh %q: %w", topic, err)
	}
	if n == 0 {
		return fanout.ErrNotMember
	}
	return nil
}

// Leave implements fanout.Broker.
func (b *Broker) Leave(ctx context.Context, topic, memberID string) error {
	n, err := leaveScript.Run(ctx, b.client,
		[]string{b.key("z", topic), b.key("p", topic)},
		memberID, b.shard(topic).channel, lenPrefixed(topic),
	).Int()
	if err != nil {
		b.m.err("leave")
		return fmt.Errorf("redisbroker: leave %q: %w", topic, err)
	}
	if n == 0 {
		return fanout.ErrNotMember
	}
	return nil
}

// Members implements fanout.Broker.
func (b *Broker) Members(ctx context.Context, topic string) ([]fanout.Member, error) {
	res, err := membersScript.Run(ctx, b.client,
		[]string{b.key("z", topic), b.key("p", topic)},
		b.shard(topic).channel, lenPrefixed(topic),
	).StringSlice()
	if err != nil {
		b.m.err("members")
		return nil, fmt.Errorf("redisbroker: members %q: %w", topic, err)
	}
	out := make([]fanout.Member, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		out = append(out, fanout.Member{ID: res[i], Info: []byte(res[i+1])})
	}
	return out, nil
}

// Subscribe implements fanout.Broker: the first topic of a shard
// subscribes the shard's channel and waits for Redis to confirm it.
func (b *Broker) Subscribe(ctx context.Context, topic string) error {
	s := b.shard(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
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
		s.ps = b.client.Subscribe(b.ctx)
		b.wg.Add(1)
		go b.receive(s, s.ps)
	}
	b.mu.Unlock()
	select {
	case <-s.confirm:
	default:
	}
	if err := s.ps.Subscribe(ctx, s.channel); err != nil {
		return fmt.Errorf("redisbroker: subscribe %q: %w", s.channel, err)
	}
	select {
	case <-s.confirm:
	case <-ctx.Done():
		_ = s.ps.Unsubscribe(context.Background(), s.channel)
		return fmt.Errorf("redisbroker: subscribe %q: %w", s.channel, ctx.Err())
	}
	s.topics++
	return nil
}

// Unsubscribe implements fanout.Broker: the last topic of a shard
// unsubscribes its channel (the connection stays for later use).
func (b *Broker) Unsubscribe(ctx context.Context, topic string) error {
	s := b.shard(topic)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.topics == 0 {
		return nil
	}
	s.topics--
	if s.topics > 0 || s.ps == nil {
		return nil
	}
	if err := s.ps.Unsubscribe(ctx, s.channel); err != nil {
		return fmt.Errorf("redisbroker: unsubscribe %q: %w", s.channel, err)
	}
	return nil
}

// receive is shard s's delivery loop; it owns nothing but its PubSub's
// read side and stops when the broker's context is cancelled.
func (b *Broker) receive(s *pshard, ps *redis.PubSub) {
	defer b.wg.Done()
	broken := false
	backoff := 50 * time.Millisecond
	for {
		msg, err := ps.Receive(b.ctx)
		if err != nil {
			if b.ctx.Err() != nil {
				return
			}
			if !broken {
				b.m.disconnected()
				b.log().Warn("redisbroker: pub/sub connection lost", "shard", s.idx, "err", err)
			}
			broken = true
			t := time.NewTimer(backoff)
			select {
			case <-b.ctx.Done():
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
			if broken {
				broken = false
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

// Close stops the shard receivers and closes the client if the broker
// created it. It waits for the receivers to exit.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.cancel()
	b.mu.Unlock()
	var errs []error
	for _, s := range b.shards {
		s.mu.Lock()
		if s.ps != nil {
			if err := s.ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
				errs = append(errs, err)
			}
		}
		s.mu.Unlock()
	}
	b.wg.Wait()
	if b.own {
		if err := b.client.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
