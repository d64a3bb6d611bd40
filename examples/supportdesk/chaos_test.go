package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bytedance/sonic"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/internal/pgtest"
	"github.com/switchboard-go/switchboard/internal/redistest"
	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/pgstore"
)

// The chaos suite runs three supportdesk processes on one redis-server (with
// AOF) and one PostgreSQL, drives a scripted workload (customers of every
// tier, agents accepting, messages both ways) and injects one fault at a
// time: SIGKILL of the partition owner, SIGKILL of an edge holding
// customers, SIGSTOP of the owner past its lease then SIGCONT, a Redis
// restart, and CLIENT KILL TYPE pubsub. Afterwards it checks: no
// acknowledged message lost or stored twice, every message delivered to
// the other side, no waiting customer lost or reordered within its tier, no
// conversation held by two agents, no agent over capacity, a fenced zombie,
// and only documented close codes. SWITCHBOARD_CHAOS_ROUNDS=N repeats the
// fault sequence N times (the long version; default 1).

const (
	chaosLeaseTTL = 1500 * time.Millisecond
	chaosNodeTTL  = 2 * time.Second
	agentCap      = 2
)

type cluster struct {
	t     *testing.T
	args  []string
	names []string
	addrs []string
	procs []*proc
}

func (c *cluster) start(i int) {
	c.procs[i] = startProc(c.t, c.addrs[i], append([]string{"-node", c.names[i], "-ops-addr", freeAddr(c.t)}, c.args...)...)
}

type nodeState struct {
	Core bool `json:"core"`
}

// owner returns the index of the node that owns the partition (-1: none).
func (c *cluster) owner() int {
	found := -1
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 500 * time.Millisecond}
	for i, p := range c.procs {
		if p == nil || p.cmd.ProcessState != nil {
			continue
		}
		resp, err := hc.Get(p.base + "/api/info")
		if err != nil {
			continue
		}
		var st nodeState
		err = json.NewDecoder(resp.Body).Decode(&st)
		_ = resp.Body.Close()
		if err == nil && st.Core {
			found = i
		}
	}
	return found
}

func (c *cluster) waitOwner(not int, within time.Duration) (int, time.Duration) {
	c.t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if o := c.owner(); o >= 0 && o != not {
			return o, time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("no partition owner within %v", within)
	return -1, 0
}

// actor is a test client that keeps its connection up (reconnecting to the
// next node when it drops) and records what it acknowledged and received.
type actor struct {
	t       *testing.T
	c       *cluster
	name    string
	user    string
	role    string
	token   string
	node    int
	mu      sync.Mutex
	conn    *websocket.Conn
	acked   map[string]uint64            // client id → stored offset
	sentTxt map[string]string            // client id → text
	got     map[string]map[uint64]string // conv → offset → "from|id|text"
	convs   []string
	closes  map[int]int // close code → count
	resumed map[string]bool
	seq     int
	stop    chan struct{}
	done    chan struct{}
	probeOK chan struct{}
}

func (c *cluster) newActor(name, body string, node int) *actor {
	tok := c.procs[node].token(body)
	a := &actor{
		t: c.t, c: c, name: name, user: tok.User, token: tok.Token, node: node,
		acked: map[string]uint64{}, sentTxt: map[string]string{}, got: map[string]map[uint64]string{},
		closes: map[int]int{}, resumed: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{}),
		probeOK: make(chan struct{}, 64),
	}
	if strings.Contains(body, `"agent"`) {
		a.role = "agent"
	} else {
		a.role = "customer"
	}
	go a.loop()
	c.t.Cleanup(a.halt)
	return a
}

func (a *actor) halt() {
	select {
	case <-a.stop:
	default:
		close(a.stop)
	}
	a.mu.Lock()
	if a.conn != nil {
		_ = a.conn.Close()
	}
	a.mu.Unlock()
	<-a.done
}

// loop connects, reads until the connection drops, and reconnects to the
// next live node.
func (a *actor) loop() {
	defer close(a.done)
	for {
		select {
		case <-a.stop:
			return
		default:
		}
		p := a.c.procs[a.node]
		if p == nil || p.cmd.ProcessState != nil {
			a.node = (a.node + 1) % len(a.c.procs)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		url := "ws" + strings.TrimPrefix(p.base, "http") + "/ws?token=" + a.token
		d := websocket.Dialer{HandshakeTimeout: 2 * time.Second}
		conn, resp, err := d.Dial(url, nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			a.node = (a.node + 1) % len(a.c.procs)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		a.mu.Lock()
		a.conn = conn
		a.mu.Unlock()
		select {
		case <-a.stop: // halt may have looked before conn was set
			_ = conn.Close()
		default:
		}
		a.read(conn)
		a.mu.Lock()
		a.conn = nil
		a.mu.Unlock()
		_ = conn.Close()
		a.node = (a.node + 1) % len(a.c.procs)
	}
}

func (a *actor) send(e protocol.Envelope) bool {
	b, _ := sonic.ConfigStd.Marshal(e)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conn == nil {
		return false
	}
	_ = a.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	return a.conn.WriteMessage(websocket.TextMessage, b) == nil
}

func (a *actor) read(conn *websocket.Conn) {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			code := 1006
			if ce, ok := err.(*websocket.CloseError); ok {
				code = ce.Code
			}
			select {
			case <-a.stop:
			default:
				a.mu.Lock()
				a.closes[code]++
				a.mu.Unlock()
			}
			return
		}
		var e protocol.Envelope
		if sonic.ConfigStd.Unmarshal(data, &e) != nil {
			continue
		}
		a.handle(e)
	}
}

func (a *actor) handle(e protocol.Envelope) {
	switch e.Type {
	case protocol.TypeHello:
		// A (re)connect: catch up on every conversation from the start.
		a.mu.Lock()
		for _, ci := range e.Convs {
			if !slices.Contains(a.convs, ci.Conv) {
				a.convs = append(a.convs, ci.Conv)
			}
		}
		convs := slices.Clone(a.convs)
		a.mu.Unlock()
		for _, c := range convs {
			a.send(protocol.Envelope{Type: protocol.TypeResume, Conv: c})
		}
	case protocol.TypeQueued:
		a.mu.Lock()
		if !slices.Contains(a.convs, e.Conv) {
			a.convs = append(a.convs, e.Conv)
		}
		a.mu.Unlock()
	case protocol.TypeOffer:
		a.send(protocol.Envelope{Type: protocol.TypeAccept, Conv: e.Conv, Offer: e.Offer})
	case protocol.TypeAssigned:
		a.mu.Lock()
		if (a.role == "agent" && e.Agent == a.user || a.role == "customer") && !slices.Contains(a.convs, e.Conv) {
			a.convs = append(a.convs, e.Conv)
		}
		a.mu.Unlock()
		a.send(protocol.Envelope{Type: protocol.TypeResume, Conv: e.Conv})
	case protocol.TypeSync:
		a.send(protocol.Envelope{Type: protocol.TypeResume, Conv: e.Conv})
	case protocol.TypeAck:
		a.mu.Lock()
		a.acked[e.ID] = e.Offset
		a.mu.Unlock()
	case protocol.TypeMessage:
		a.mu.Lock()
		m := a.got[e.Conv]
		if m == nil {
			m = map[uint64]string{}
			a.got[e.Conv] = m
		}
		_, seen := m[e.Offset]
		m[e.Offset] = e.From + "|" + e.ID + "|" + e.Text
		a.mu.Unlock()
		// Agents answer every new live customer message (not the history a
		// resume brings: answering that at once would exceed the frame rate).
		if !seen && a.role == "agent" && e.Role == "customer" && time.Since(time.UnixMilli(e.TS)) < 2*time.Second {
			a.say(e.Conv, "re: "+e.Text)
		}
	case protocol.TypeResumed:
		a.mu.Lock()
		a.resumed[e.Conv] = true
		a.mu.Unlock()
	case protocol.TypePresence:
		select {
		case a.probeOK <- struct{}{}:
		default:
		}
	}
}

// say sends a message with a fresh client id (retried by the caller's next
// round when not acknowledged).
func (a *actor) say(conv, text string) {
	a.mu.Lock()
	a.seq++
	id := a.name + "-" + strconv.Itoa(a.seq)
	a.sentTxt[id] = text
	a.mu.Unlock()
	a.send(protocol.Envelope{Type: protocol.TypeMessage, Conv: conv, ID: id, Text: text})
}

func (a *actor) conv() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.convs) == 0 {
		return ""
	}
	return a.convs[0]
}

// retryUnacked resends every message that has no ack yet, with its id.
func (a *actor) retryUnacked() {
	a.mu.Lock()
	var ids []string
	for id := range a.sentTxt {
		if _, ok := a.acked[id]; !ok {
			ids = append(ids, id)
		}
	}
	conv := ""
	if len(a.convs) > 0 {
		conv = a.convs[0]
	}
	texts := map[string]string{}
	for _, id := range ids {
		texts[id] = a.sentTxt[id]
	}
	a.mu.Unlock()
	if conv == "" || a.role != "customer" {
		return
	}
	// Paced: the server allows 50 frames/s per connection and 10 messages/s
	// per sender and conversation.
	sort.Strings(ids)
	for i, id := range ids {
		if i == 8 {
			break
		}
		a.send(protocol.Envelope{Type: protocol.TypeMessage, Conv: conv, ID: id, Text: texts[id]})
	}
}

func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos suite: not in -short")
	}
	rounds := 1
	if n, err := strconv.Atoi(os.Getenv("SWITCHBOARD_CHAOS_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	rs := redistest.StartServerWith(t, redistest.Options{AppendOnly: true})
	pg := pgtest.Start(t)
	dsn := pg.DSN("postgres")
	c := &cluster{t: t, names: []string{"a", "b", "c"}, procs: make([]*proc, 3),
		args: []string{"-redis", rs.Addr(), "-postgres", dsn, "-lease-ttl", chaosLeaseTTL.String(), "-node-ttl", chaosNodeTTL.String(),
			"-agent-grace", "30s", "-offer-timeout", "30s", "-agent-capacity", strconv.Itoa(agentCap), "-log-level", "info"}}
	for i := range c.names {
		c.addrs = append(c.addrs, freeAddr(t))
		c.start(i)
	}
	owner, _ := c.waitOwner(-1, 20*time.Second)
	t.Logf("initial owner: node %s", c.names[owner])

	var agents, customers []*actor
	for i := range 3 {
		agents = append(agents, c.newActor(fmt.Sprintf("ag%d", i), fmt.Sprintf(`{"name":"Agent%d","role":"agent","capacity":%d}`, i, agentCap), i))
	}
	tiers := []string{"vip", "premium", "standard"}
	for i := range 8 {
		cu := c.newActor(fmt.Sprintf("cu%d", i), fmt.Sprintf(`{"name":"Cust%d","role":"customer","tier":%q}`, i, tiers[i%3]), i%3)
		customers = append(customers, cu)
	}
	// Every customer opens a conversation (in this order, per tier).
	for _, cu := range customers {
		require.Eventually(t, func() bool {
			if cu.conv() != "" {
				return true
			}
			cu.send(protocol.Envelope{Type: protocol.TypeStart})
			return false
		}, 20*time.Second, 300*time.Millisecond, "%s gets a conversation", cu.name)
	}

	// Traffic: every customer writes every 200 ms; agents answer each.
	stopTalk := make(chan struct{})
	var talkWG sync.WaitGroup
	for _, cu := range customers {
		talkWG.Add(1)
		go func() {
			defer talkWG.Done()
			tk := time.NewTicker(200 * time.Millisecond)
			defer tk.Stop()
			n := 0
			for {
				select {
				case <-stopTalk:
					return
				case <-tk.C:
					n++
					if conv := cu.conv(); conv != "" {
						cu.say(conv, fmt.Sprintf("%s says %d", cu.name, n))
					}
					if n%10 == 0 {
						cu.retryUnacked()
					}
				}
			}
		}()
	}
	traffic := func(d time.Duration) { time.Sleep(d) }
	// probe measures how long until the partition owner answers a command
	// (an agent's presence), i.e. the takeover time seen by a client.
	probe := func(avoid int) time.Duration {
		start := time.Now()
		// An agent connected to a running node other than avoid; a fresh
		// one when every agent happens to sit on the avoided node.
		var ag *actor
		for _, a := range agents {
			a.mu.Lock()
			ok := a.node != avoid && a.conn != nil
			a.mu.Unlock()
			if ok {
				ag = a
				break
			}
		}
		if ag == nil {
			n := (avoid + 1) % len(c.procs)
			ag = c.newActor(fmt.Sprintf("probe%d", len(agents)), fmt.Sprintf(`{"name":"Probe%d","role":"agent","capacity":%d}`, len(agents), agentCap), n)
			agents = append(agents, ag)
		}
		for len(ag.probeOK) > 0 {
			<-ag.probeOK
		}
		deadline := time.After(30 * time.Second)
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		ag.send(protocol.Envelope{Type: protocol.TypePresence, State: "online"})
		for {
			select {
			case <-ag.probeOK:
				return time.Since(start)
			case <-tk.C:
				ag.send(protocol.Envelope{Type: protocol.TypePresence, State: "online"})
			case <-deadline:
				t.Fatalf("the owner did not answer within 30s")
			}
		}
	}
	var takeovers []time.Duration
	traffic(2 * time.Second)

	for round := range rounds {
		t.Logf("round %d", round+1)

		// 1. SIGKILL the partition owner.
		owner = c.owner()
		require.GreaterOrEqual(t, owner, 0)
		t.Logf("SIGKILL owner %s", c.names[owner])
		killed := time.Now()
		c.procs[owner].kill()
		newOwner, _ := c.waitOwner(owner, 20*time.Second)
		d := probe(owner)
		takeovers = append(takeovers, time.Since(killed))
		t.Logf("  new owner %s; a command answered %v after the kill (probe %v)", c.names[newOwner], time.Since(killed), d)
		c.start(owner)
		traffic(2 * time.Second)

		// 2. SIGKILL an edge holding customers (not the owner).
		owner = c.owner()
		edge := (owner + 1) % 3
		t.Logf("SIGKILL edge %s", c.names[edge])
		c.procs[edge].kill()
		traffic(2 * time.Second)
		c.start(edge)
		traffic(time.Second)

		// 3. SIGSTOP the owner past its lease, then SIGCONT: the zombie must
		// not write.
		owner = c.owner()
		zombie := c.procs[owner]
		t.Logf("SIGSTOP owner %s", c.names[owner])
		require.NoError(t, zombie.cmd.Process.Signal(syscall.SIGSTOP))
		stopped := time.Now()
		newOwner, _ = c.waitOwner(owner, 20*time.Second)
		probe(owner)
		takeovers = append(takeovers, time.Since(stopped))
		t.Logf("  new owner %s after %v", c.names[newOwner], time.Since(stopped))
		require.NoError(t, zombie.cmd.Process.Signal(syscall.SIGCONT))
		require.Eventually(t, func() bool { return strings.Contains(zombie.out.String(), "giving up the partition") }, 15*time.Second, 50*time.Millisecond, "the resumed zombie steps down")
		assert.Equal(t, newOwner, c.owner(), "the new owner keeps the partition")
		traffic(time.Second)

		// 4. Redis restart (AOF on).
		t.Log("Redis restart")
		rs.Restart()
		traffic(3 * time.Second)
		probe(-1)

		// 5. CLIENT KILL TYPE pubsub under load.
		t.Log("CLIENT KILL TYPE pubsub")
		rc := redis.NewClient(&redis.Options{Addr: rs.Addr()})
		require.NoError(t, rc.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err())
		require.NoError(t, rc.Close())
		traffic(3 * time.Second)
		probe(-1)
	}

	close(stopTalk)
	talkWG.Wait()
	// Let every unacknowledged message be retried and answered.
	for range 3 {
		for _, cu := range customers {
			cu.retryUnacked()
		}
		time.Sleep(time.Second)
	}
	// Every actor catches up from the transcript.
	for _, a := range append(slices.Clone(agents), customers...) {
		a.mu.Lock()
		convs := slices.Clone(a.convs)
		a.resumed = map[string]bool{}
		a.mu.Unlock()
		for _, conv := range convs {
			require.Eventually(t, func() bool {
				a.mu.Lock()
				done := a.resumed[conv]
				a.mu.Unlock()
				if !done {
					a.send(protocol.Envelope{Type: protocol.TypeResume, Conv: conv})
				}
				return done
			}, 20*time.Second, 500*time.Millisecond, "%s resumes %s", a.name, conv)
		}
	}

	// --- checks against the store ---
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := pgstore.Open(ctx, dsn, pgstore.Options{})
	require.NoError(t, err)
	defer st.Close()

	totalAcked := 0
	for _, a := range append(slices.Clone(agents), customers...) {
		a.mu.Lock()
		acked := maps.Clone(a.acked)
		sent := maps.Clone(a.sentTxt)
		closes := maps.Clone(a.closes)
		convs := slices.Clone(a.convs)
		a.mu.Unlock()
		for code, n := range closes {
			assert.Contains(t, []int{1001, 1006, 1012, 1013}, code, "%s: close code %d (%d times) is documented", a.name, code, n)
		}
		for id, off := range acked {
			totalAcked++
			found := false
			for _, conv := range convs {
				msgs, err := st.Messages(ctx, conv, off-1, 1)
				require.NoError(t, err)
				if len(msgs) == 1 && msgs[0].ClientID == id && msgs[0].Sender == a.user {
					assert.Equal(t, sent[id], msgs[0].Body, "%s: acked %s stored with its text", a.name, id)
					found = true
				}
			}
			assert.True(t, found, "%s: acknowledged message %s at offset %d is in the transcript", a.name, id, off)
		}
	}
	t.Logf("%d acknowledged messages checked", totalAcked)
	require.Positive(t, totalAcked)

	// Transcripts: offsets without gaps, no (sender, id) stored twice, and
	// every message delivered to each participant holding the conversation.
	open, err := st.OpenConversations(ctx, "")
	require.NoError(t, err)
	byID := map[string]*session.Record{}
	for _, r := range open {
		byID[r.ID] = r
	}
	for _, cu := range customers {
		conv := cu.conv()
		require.NotEmpty(t, conv)
		r := byID[conv]
		require.NotNil(t, r, "%s's conversation is still open (no waiting customer lost)", cu.name)
		msgs, err := st.Messages(ctx, conv, 0, 100000)
		require.NoError(t, err)
		keys := map[string]bool{}
		for i, m := range msgs {
			require.Equal(t, uint64(i+1), m.Offset, "no gap")
			k := m.Sender + "|" + m.ClientID
			assert.False(t, keys[k], "%s stored once", k)
			keys[k] = true
		}
		cu.mu.Lock()
		got := cu.got[conv]
		for _, m := range msgs {
			assert.Equal(t, m.Sender+"|"+m.ClientID+"|"+m.Body, got[m.Offset], "%s received offset %d", cu.name, m.Offset)
		}
		cu.mu.Unlock()
		if a := r.Conversation.Assignee; a != "" {
			for _, ag := range agents {
				if ag.user != a {
					continue
				}
				ag.mu.Lock()
				got := ag.got[conv]
				for _, m := range msgs {
					assert.Equal(t, m.Sender+"|"+m.ClientID+"|"+m.Body, got[m.Offset], "%s received offset %d of %s", ag.name, m.Offset, conv)
				}
				ag.mu.Unlock()
			}
		}
	}

	// Assignment history: never two agents at once, never over capacity;
	// waiting customers keep their order within their tier.
	load := map[string]int{}
	type span struct {
		at    time.Time
		agent string
		delta int
	}
	var spans []span
	for _, r := range open {
		audit, err := st.Audit(ctx, r.ID)
		require.NoError(t, err)
		holder := ""
		for _, e := range audit {
			switch e.Event {
			case session.Accept:
				assert.Empty(t, holder, "%s accepted by %s while %s holds it", r.ID, e.Actor, holder)
				holder = e.Actor
				spans = append(spans, span{e.At, holder, +1})
			case session.Transfer, session.Assign: // at once, to e.Agent
				if holder != "" {
					spans = append(spans, span{e.At, holder, -1})
				}
				holder = e.Agent
				spans = append(spans, span{e.At, holder, +1})
			case session.Requeue, session.OfferTransfer, session.Resolve, session.Close:
				if holder != "" {
					spans = append(spans, span{e.At, holder, -1})
				}
				holder = ""
			}
		}
	}
	sort.Slice(spans, func(i, j int) bool {
		if !spans[i].at.Equal(spans[j].at) {
			return spans[i].at.Before(spans[j].at)
		}
		return spans[i].delta < spans[j].delta
	})
	for _, s := range spans {
		load[s.agent] += s.delta
		assert.LessOrEqual(t, load[s.agent], agentCap, "%s over capacity at %v", s.agent, s.at)
	}
	var waiting []*session.Record
	for _, r := range open {
		if r.Queue != nil {
			waiting = append(waiting, r)
		}
	}
	rank := map[string]int{}
	for i, cu := range customers {
		rank[cu.conv()] = i
	}
	sort.SliceStable(waiting, func(i, j int) bool { return waiting[i].Queue.Rank < waiting[j].Queue.Rank })
	for tier := range 3 {
		var ranks []int
		for _, r := range waiting {
			if r.Tier == tier && r.Queue.Rank >= 0 {
				ranks = append(ranks, rank[r.ID])
			}
		}
		assert.True(t, sort.IntsAreSorted(ranks), "tier %d: waiting customers in their arrival order %v", tier, ranks)
	}

	sort.Slice(takeovers, func(i, j int) bool { return takeovers[i] < takeovers[j] })
	t.Logf("takeover (fault → first command answered): %v", takeovers)
	for _, d := range takeovers {
		assert.Less(t, d, 15*time.Second, "takeover time")
	}
	for i, p := range c.procs {
		if p != nil {
			assert.NotContains(t, p.out.String(), "invariant", "node %s reported an invariant violation", c.names[i])
		}
	}
	resp, err := httpClient.Get(c.procs[c.owner()].base + "/api/info")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}
