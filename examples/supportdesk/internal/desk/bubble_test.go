package desk

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/bytedance/sonic"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/auth"
	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/fanout"
	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/embedded"
)

// The timing tests run the core inside a testing/synctest bubble with what
// it needs on one node — the in-memory bus, an embedded store in the test's
// temporary directory, the data plane — but without the gateway: the test
// plays the edge. It publishes the edge's commands on the core's topic
// (desk.core) and reads what the core says on the user and supervisor
// topics. Time is the bubble's: time.Sleep moves it exactly, and after
// synctest.Wait every goroutine of the bubble is blocked, so an event that
// has not been published by then has not happened at that instant.
//
// Everything the core starts can live in the bubble: the bus's delivery
// goroutines and sweeper, the queue's and assigner's timers and notifier
// goroutines, the store's writer and the data plane's lanes are all started
// by constructors called inside it, block on channels made inside it, and
// are stopped by the cleanups below (which run inside it too; synctest.Test
// fails if any goroutine is left blocked, so each test also proves that
// closing the core, data plane, bus and store stops what they started).
// bbolt's file I/O is not "durably blocking", but it completes on its own,
// so Wait only waits longer. No Redis, no leases, no sockets: one node.

// rigNode is the node ID of the edge the test plays.
const rigNode = "edge-1"

// rig is a core under test and the test's view of the bus.
type rig struct {
	t    *testing.T
	cfg  *Config
	bus  *fanout.Bus
	data *dataPlane
	core *core

	keys  atomic.Uint64
	conns map[string]uint64 // user → open connection (0: none)
	roles map[string]string
	last  uint64    // last connection ID handed out
	seq   int       // client message IDs
	t0    time.Time // the bubble's time when the rig was ready

	mu  sync.Mutex
	got map[string][]protocol.Envelope // topic → events not yet taken
}

// newRig starts a core in the current synctest bubble with cfg (defaults
// filled in; StatsInterval an hour unless set), watching the supervisor
// topic. Every goroutine it starts is
// stopped when the test ends.
func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	st, err := embedded.Open(t.TempDir(), embedded.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, st.Close()) })
	cfg.Store = st
	cfg.NodeID = "core-1"
	if cfg.StatsInterval == 0 {
		// The stats tick does nothing observable without a supervisor's
		// connection (the rig has none), but each one is a wake-up of the
		// bubble: hours of bubble time would cost seconds under -race.
		cfg.StatsInterval = time.Hour
	}
	cfg.OnInvariant = func(err error) { t.Errorf("core invariant violated: %v", err) }
	require.NoError(t, cfg.fill())
	bus, err := fanout.New(fanout.Config{NodeID: cfg.NodeID})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, bus.Close()) })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	r := &rig{t: t, cfg: &cfg, bus: bus, conns: map[string]uint64{}, roles: map[string]string{}, got: map[string][]protocol.Envelope{}}
	r.data = newDataPlane(ctx, cfg.NodeID, st, bus, &cfg, slog.New(slog.DiscardHandler))
	r.data.report = r.toCore
	t.Cleanup(r.data.close)
	r.watch(topicSup)
	// A single node: no fence, every node live (Server.isLive without a Broker).
	r.core, err = newCore(ctx, &cfg, bus, st, r.data, session.Fence{}, nil, func(string) bool { return true })
	require.NoError(t, err)
	t.Cleanup(r.core.close)
	synctest.Wait()
	r.t0 = time.Now()
	return r
}

// watch records every event published on topic from now on.
func (r *rig) watch(topic string) {
	r.t.Helper()
	_, err := r.bus.Subscribe(context.Background(), topic, fanout.SubscribeOptions{
		Buffer: 1 << 12,
		OnPublication: func(p fanout.Publication) {
			var e protocol.Envelope
			if err := sonic.ConfigStd.Unmarshal(p.Payload, &e); err != nil {
				r.t.Errorf("undecodable event on %s: %q: %v", topic, p.Payload, err)
				return
			}
			r.mu.Lock()
			r.got[topic] = append(r.got[topic], e)
			r.mu.Unlock()
		},
	})
	require.NoError(r.t, err)
}

// toCore sends cmd to the core as an edge does (edge.toCore): with the
// node's ID and an idempotency key. It is also the data plane's report.
func (r *rig) toCore(cmd *command) error {
	cmd.Node = rigNode
	if cmd.Key == "" {
		cmd.Key = fmt.Sprintf("n:%s:%d", rigNode, r.keys.Add(1))
	}
	b, err := encodeCommand(cmd)
	if err != nil {
		return err
	}
	_, err = r.bus.Publish(context.Background(), topicCore, b)
	return err
}

// settle lets everything that is due now run to completion.
func (r *rig) settle() { synctest.Wait() }

// advance moves the bubble's clock by d and lets what became due run.
func (r *rig) advance(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// at moves the bubble's clock to t0+d and lets what became due run.
func (r *rig) at(t0 time.Time, d time.Duration) {
	time.Sleep(time.Until(t0.Add(d)))
	synctest.Wait()
}

// connect opens a connection for a user (the edge's open command) and
// returns the hello the core answered with; events the connection caused
// (an offer to an agent) stay to be taken.
func (r *rig) connect(id, role, tier string, capacity int) protocol.Envelope {
	r.t.Helper()
	if _, ok := r.roles[id]; !ok {
		r.watch(topicUser(id))
	}
	r.roles[id] = role
	r.last++
	r.conns[id] = r.last
	require.NoError(r.t, r.toCore(&command{Kind: cmdOpen, Conn: r.last, User: id, Role: role, Name: id, Tier: tier, Capacity: capacity}))
	r.settle()
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := r.got[topicUser(id)]
	i := slices.IndexFunc(evs, func(e protocol.Envelope) bool { return e.Type == protocol.TypeHello && e.Target == r.last })
	require.GreaterOrEqual(r.t, i, 0, "%s: no hello", id)
	hello := evs[i]
	r.got[topicUser(id)] = slices.Delete(evs, i, i+1)
	return hello
}

func (r *rig) agent(id string, capacity int) { r.connect(id, auth.RoleAgent, "", capacity) }

func (r *rig) customer(id, tier string) { r.connect(id, auth.RoleCustomer, tier, 0) }

// disconnect closes the user's connection (the edge's close command).
func (r *rig) disconnect(id string) {
	r.t.Helper()
	require.NoError(r.t, r.toCore(&command{Kind: cmdClose, Conn: r.conns[id], User: id, Role: r.roles[id], Name: id}))
	r.conns[id] = 0
	r.settle()
}

// send is a client envelope the edge forwards to the core.
func (r *rig) send(id string, e protocol.Envelope) {
	r.t.Helper()
	require.NoError(r.t, r.toCore(&command{Kind: cmdEnv, Conn: r.conns[id], User: id, Role: r.roles[id], Name: id, Env: &e}))
	r.settle()
}

// say sends a chat message; without conv it is a customer's first message,
// which opens a conversation (through the core), otherwise the edge hands
// it to the data plane, which reports it to the core once stored.
func (r *rig) say(id, conv, text string) {
	r.t.Helper()
	r.seq++
	e := protocol.Envelope{Type: protocol.TypeMessage, Conv: conv, ID: fmt.Sprintf("m%d", r.seq), Text: text}
	if conv == "" {
		r.send(id, e)
		return
	}
	r.data.submit(rigNode, r.conns[id], sender{id: id, role: r.roles[id], name: id}, &e)
	r.settle()
}

// start has a customer open a conversation with a first message and
// returns its ID.
func (r *rig) start(id, text string) string {
	r.t.Helper()
	r.say(id, "", text)
	q := r.takeOne(id, protocol.TypeQueued)
	require.NotEmpty(r.t, q.Conv)
	return q.Conv
}

// accept has an agent accept the offer o.
func (r *rig) accept(id string, o protocol.Envelope) {
	r.t.Helper()
	r.send(id, protocol.Envelope{Type: protocol.TypeAccept, Conv: o.Conv, Offer: o.Offer})
	a := r.takeOne(id, protocol.TypeAssigned)
	require.Equal(r.t, o.Conv, a.Conv)
}

// take returns (and forgets) the events of the given types a user (or, with
// a topic name, that topic) received since the last take; without types,
// every event.
func (r *rig) take(who string, types ...string) []protocol.Envelope {
	topic := who
	if topic != topicSup {
		topic = topicUser(who)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out, rest []protocol.Envelope
	for _, e := range r.got[topic] {
		if len(types) == 0 || slices.Contains(types, e.Type) {
			out = append(out, e)
		} else {
			rest = append(rest, e)
		}
	}
	r.got[topic] = rest
	return out
}

// onlyOffer returns the one offer that one of agents got since the last
// take, and who got it; it fails unless there is exactly one.
func (r *rig) onlyOffer(agents ...string) (string, protocol.Envelope) {
	r.t.Helper()
	var who string
	var got []protocol.Envelope
	for _, a := range agents {
		for _, e := range r.take(a, protocol.TypeOffer) {
			who, got = a, append(got, e)
		}
	}
	require.Len(r.t, got, 1, "want exactly one offer to one of %v at %v, got %+v", agents, r.elapsed(), got)
	return who, got[0]
}

// takeOne returns the only event of type typ the user received.
func (r *rig) takeOne(who, typ string) protocol.Envelope {
	r.t.Helper()
	evs := r.take(who, typ)
	require.Len(r.t, evs, 1, "%s: want exactly one %s, got %+v", who, typ, evs)
	return evs[0]
}

// quiet asserts that the users (or topicSup) got no event at all since the
// last take.
func (r *rig) quiet(who ...string) {
	r.t.Helper()
	for _, w := range who {
		assert.Empty(r.t, r.take(w), "%s at %v", w, r.elapsed())
	}
}

// noneOf asserts that the users got no event of type typ since the last
// take; other events stay to be taken.
func (r *rig) noneOf(typ string, who ...string) {
	r.t.Helper()
	for _, w := range who {
		assert.Empty(r.t, r.take(w, typ), "%s at %v", w, r.elapsed())
	}
}

// elapsed is the bubble's time since the rig started (for messages).
func (r *rig) elapsed() time.Duration { return time.Since(r.t0) }
