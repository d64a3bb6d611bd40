package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/switchboard-go/switchboard/bench/internal/ctl"
	"github.com/switchboard-go/switchboard/bench/internal/hist"
	"github.com/switchboard-go/switchboard/bench/internal/nbclient"
	"github.com/switchboard-go/switchboard/bench/internal/procstat"
)

// A load generator (-role client) holds customer and agent connections on
// nbio event loops and plays both sides of the protocol:
//
//   - customers start conversations (start → queued → position… →
//     assigned), chat, and become idle again when the conversation is
//     resolved;
//   - agents accept every offer at once, chat, and resolve a conversation
//     when its lifetime is over;
//   - both sides follow PROTOCOL.md's delivery rules: a message whose
//     offset is above the next expected one, an assigned or resolved that
//     names a later offset, and every reconnect trigger a resume; offsets
//     already held are dropped (and counted).
//
// Every handler runs inline on its connection's event loop and takes only
// that connection's mutex, so event loops never wait on each other. Chat
// messages carry their send time in the text and their ID in the id, so the
// receiver times the delivery and the sender times the ack without any
// shared table.

// secretEnv carries the token secret from the coordinator to its children
// (never on a command line).
const secretEnv = "DESKBENCH_SECRET"

type userRange struct {
	First int `json:"first"`
	Count int `json:"count"`
}

type connectArgs struct {
	Nodes       []string   `json:"nodes"` // WebSocket host:port of every node
	Src         []string   `json:"src"`   // source IPs, round-robin
	Customers   userRange  `json:"customers"`
	Agents      userRange  `json:"agents"`
	Flooders    userRange  `json:"flooders"`
	AgentCap    int        `json:"agent_cap"`
	AgentSkills []string   `json:"agent_skills,omitempty"`
	TierMix     [3]float64 `json:"tier_mix"`
	Concurrency int        `json:"concurrency"`
	TimeoutMS   int        `json:"timeout_ms"`
	TokenTTLSec int        `json:"token_ttl_sec"`
	Reconnect   bool       `json:"reconnect"`
	MsgSize     int        `json:"msg_size"`
}

type connectReply struct {
	Established int      `json:"established"`
	Failed      int      `json:"failed"`
	Seconds     float64  `json:"seconds"`
	Errors      []string `json:"errors,omitempty"`
}

type progressEvent struct {
	Established int64 `json:"established"`
	Failed      int64 `json:"failed"`
}

// params are the live knobs of the traffic; the coordinator changes them
// between phases (configure).
type params struct {
	ConvRate   float64 `json:"conv_rate"`   // new conversations per second started by this process
	PairRate   float64 `json:"pair_rate"`   // messages per second per side of each active conversation
	TypingFrac float64 `json:"typing_frac"` // fraction of messages preceded by typing "on"
	ConvDurMS  int64   `json:"conv_dur_ms"` // lifetime of a conversation after assignment
	// WarmEndNS: conversations assigned before it end at WarmEndNS plus a
	// uniform fraction of the lifetime, so that the warm-up fills the
	// steady-state number of conversations with end times spread evenly.
	WarmEndNS int64 `json:"warm_end_ns"`
	Sending   bool  `json:"sending"`
}

type floodArgs struct {
	On         bool    `json:"on"`
	Rate       float64 `json:"rate"`        // messages per second after the burst
	Burst      int     `json:"burst"`       // messages sent at once when the flood starts
	TypingRate float64 `json:"typing_rate"` // typing frames per second
	Size       int     `json:"size"`        // text size of flood messages
}

type waitArgs struct {
	Count int    `json:"count"`
	Entry string `json:"entry"`
}

type markArgs struct {
	NS int64 `json:"ns"`
}

// counters are cumulative; the coordinator takes differences between
// ticks.
type counters struct {
	Started        int64 `json:"started"`
	StartSkipped   int64 `json:"start_skipped"` // no idle customer of the drawn tier
	Queued         int64 `json:"queued"`
	Offers         int64 `json:"offers"`
	OffersExpired  int64 `json:"offers_expired"`
	AssignedC      int64 `json:"assigned_c"`
	AssignedA      int64 `json:"assigned_a"`
	ResolvedC      int64 `json:"resolved_c"`
	Positions      int64 `json:"positions"`
	OfferedNotices int64 `json:"offered_notices"`
	SentC          int64 `json:"sent_c"`
	SentA          int64 `json:"sent_a"`
	SentFlood      int64 `json:"sent_flood"`
	Skipped        int64 `json:"skipped"` // due while the connection was down
	Retried        int64 `json:"retried"`
	Acked          int64 `json:"acked"`
	RecvC2A        int64 `json:"recv_c2a"` // customers' messages received by agents
	RecvA2C        int64 `json:"recv_a2c"`
	RecvFlood      int64 `json:"recv_flood"`
	RecvSelf       int64 `json:"recv_self"`
	TypingSent     int64 `json:"typing_sent"`
	TypingRecv     int64 `json:"typing_recv"`
	DupLive        int64 `json:"dup_live"`
	Resumes        int64 `json:"resumes"`
	Errors         int64 `json:"errors"`
	BadFrames      int64 `json:"bad_frames"`
	Dropped        int64 `json:"dropped"`
	Reconnected    int64 `json:"reconnected"`
	Other          int64 `json:"other"`
	CommandRetries int64 `json:"command_retries"` // start/resolve/cancel sent again after commandRetry
}

type counterSet struct {
	started, startSkipped, queued, offers, offersExpired, assignedC, assignedA, resolvedC   atomic.Int64
	positions, offeredNotices, sentC, sentA, sentFlood, skipped, retried, acked             atomic.Int64
	recvC2A, recvA2C, recvFlood, recvSelf, typingSent, typingRecv, dupLive, resumes, errors atomic.Int64
	badFrames, dropped, reconnected, other, commandRetries                                  atomic.Int64
}

func (c *counterSet) load() counters {
	return counters{
		Started: c.started.Load(), StartSkipped: c.startSkipped.Load(), Queued: c.queued.Load(), Offers: c.offers.Load(),
		OffersExpired: c.offersExpired.Load(), AssignedC: c.assignedC.Load(), AssignedA: c.assignedA.Load(), ResolvedC: c.resolvedC.Load(),
		Positions: c.positions.Load(), OfferedNotices: c.offeredNotices.Load(), SentC: c.sentC.Load(), SentA: c.sentA.Load(),
		SentFlood: c.sentFlood.Load(), Skipped: c.skipped.Load(), Retried: c.retried.Load(), Acked: c.acked.Load(),
		RecvC2A: c.recvC2A.Load(), RecvA2C: c.recvA2C.Load(), RecvFlood: c.recvFlood.Load(), RecvSelf: c.recvSelf.Load(),
		TypingSent: c.typingSent.Load(), TypingRecv: c.typingRecv.Load(), DupLive: c.dupLive.Load(), Resumes: c.resumes.Load(),
		Errors: c.errors.Load(), BadFrames: c.badFrames.Load(), Dropped: c.dropped.Load(), Reconnected: c.reconnected.Load(), Other: c.other.Load(), CommandRetries: c.commandRetries.Load(),
	}
}

// window holds the latencies recorded since the last tick.
type window struct {
	c2a, a2c, ack, flood hist.Histogram
}

type tickReply struct {
	procstat.Sample
	Counters counters         `json:"counters"`
	Errors   map[string]int64 `json:"errors,omitempty"` // by code and request type, cumulative
	C2A      hist.Snapshot    `json:"c2a"`
	A2C      hist.Snapshot    `json:"a2c"`
	Ack      hist.Snapshot    `json:"ack"`
	Flood    hist.Snapshot    `json:"flood"`
	Up       int              `json:"up"`      // connections with hello received
	Pairs    int              `json:"pairs"`   // active conversation sides sending
	Pending  int              `json:"pending"` // my messages awaiting an ack
	Waiting  int              `json:"waiting"` // customers parked in the queue
	// Since the last mark (chaos): first offer and first ack received.
	FirstOfferNS int64 `json:"first_offer_ns,omitempty"`
	FirstAckNS   int64 `json:"first_ack_ns,omitempty"`
	// Reconnects since the last tick: drop → hello again, and when.
	Reconnects []reconnect `json:"reconnects,omitempty"`
	Unresolved int         `json:"unresolved"` // conversations not yet finalised (finish)
}

type reconnect struct {
	DropNS  int64 `json:"drop_ns"`
	HelloNS int64 `json:"hello_ns"`
}

type reportReply struct {
	Convs []convReport `json:"convs"`
}

// dconn is one customer, agent or flooding customer connection.
type dconn struct {
	lg    *loadGen
	user  string
	userB []byte
	role  byte // roleCustomer or roleAgent
	flood bool
	tier  int8
	token string
	node  int // index in connectArgs.Nodes being used

	mu       sync.Mutex
	ws       *websocket.Conn
	attached bool     // ws is on its event loop (Dial returned): writes may go out
	outbox   [][]byte // written before that, sent when Dial returns
	up       bool
	hello    chan struct{} // closed at the first hello of the current connection
	dropNS   int64
	redialed bool // the current connection replaced a dropped one

	// customer
	state       int8 // custIdle, custStarting, custQueued, custActive, custWaiting
	startNS     int64
	startSentNS int64 // last start sent (retries)
	entry       string
	cur         *conv

	convs map[string]*conv // every conversation this connection took part in
}

const (
	custIdle int8 = iota
	custStarting
	custQueued
	custActive
	custWaiting
)

type loadGen struct {
	srv    *ctl.Server
	nb     *nbclient.Client
	secret []byte

	args    connectArgs
	params  atomic.Pointer[params]
	ctx     context.Context
	closing atomic.Bool

	mu       sync.Mutex
	conns    []*dconn
	idle     [3][]*dconn // idle customers by tier
	pairs    []*conv     // active conversation sides that send
	retryQ   []*conv     // conversations with messages to send again
	starting []*dconn    // customers whose start has no queued yet
	flooder  *dconn
	waiting  int

	cnt    counterSet
	win    atomic.Pointer[window]
	errMu  sync.Mutex
	errs   map[string]int64
	recMu  sync.Mutex
	recons []reconnect

	mark       atomic.Int64
	firstOffer atomic.Int64
	firstAck   atomic.Int64

	floodMu   sync.Mutex // serialises flood and stopFlood
	floodStop chan struct{}
	floodWG   sync.WaitGroup
	loops     sync.WaitGroup
}

func runClient(ctx context.Context, procs int) error {
	if procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	secret := os.Getenv(secretEnv)
	if secret == "" {
		return fmt.Errorf("%s is not set", secretEnv)
	}
	lg := &loadGen{srv: ctl.NewServer(os.Stdout), secret: []byte(secret), ctx: ctx, errs: map[string]int64{}}
	lg.win.Store(&window{})
	lg.params.Store(&params{})
	nb, err := nbclient.New(nbclient.Config{Name: "deskbench-client", OnMessage: lg.onMessage, OnClose: lg.onClose})
	if err != nil {
		return err
	}
	lg.nb = nb
	defer nb.Close()
	lg.srv.Emit("ready", map[string]int{"pid": os.Getpid()})
	lctx, cancel := context.WithCancel(ctx)
	lg.loops.Add(3)
	go lg.sendLoop(lctx)
	go lg.startLoop(lctx)
	go lg.resolveLoop(lctx)
	err = lg.srv.Serve(ctx, os.Stdin, lg.handle)
	lg.closing.Store(true)
	cancel()
	lg.stopFlood()
	lg.loops.Wait()
	if ctx.Err() != nil || err == nil || err.Error() == "EOF" {
		return nil
	}
	return err
}

func decode[T any](raw json.RawMessage) (T, error) {
	var v T
	if len(raw) == 0 {
		return v, nil
	}
	err := json.Unmarshal(raw, &v)
	return v, err
}

func (lg *loadGen) handle(ctx context.Context, cmd string, raw json.RawMessage) (any, error) {
	switch cmd {
	case "connect":
		a, err := decode[connectArgs](raw)
		if err != nil {
			return nil, err
		}
		return lg.connect(ctx, a), nil
	case "configure":
		p, err := decode[params](raw)
		if err != nil {
			return nil, err
		}
		lg.params.Store(&p)
		return nil, nil
	case "wait":
		a, err := decode[waitArgs](raw)
		if err != nil {
			return nil, err
		}
		return lg.startWaiting(a), nil
	case "flood_start":
		return nil, lg.floodStart()
	case "flood":
		a, err := decode[floodArgs](raw)
		if err != nil {
			return nil, err
		}
		return nil, lg.flood(a)
	case "mark":
		a, err := decode[markArgs](raw)
		if err != nil {
			return nil, err
		}
		lg.firstOffer.Store(0)
		lg.firstAck.Store(0)
		lg.mark.Store(a.NS)
		return nil, nil
	case "tick":
		return lg.tick()
	case "resolve_all":
		lg.resolveAll()
		return nil, nil
	case "audit":
		return lg.audit(), nil
	case "report":
		return lg.report(), nil
	default:
		return nil, fmt.Errorf("client: unknown command %q", cmd)
	}
}

// --- connecting ---------------------------------------------------------

// tierOf spreads the tiers over customer indexes by the mix, evenly
// (a low-discrepancy sequence, not random: every run has the same tiers).
func tierOf(i int, mix [3]float64) int8 {
	f := float64(uint64(i)*0x9E3779B97F4A7C15>>11) / (1 << 53)
	switch {
	case f < mix[0]:
		return 0
	case f < mix[0]+mix[1]:
		return 1
	default:
		return 2
	}
}

var tierNames = [3]string{"vip", "premium", "standard"}

func (lg *loadGen) newConn(user string, role byte, tier int8, flood bool, node int) (*dconn, error) {
	c := tokenClaims{Sub: user, Name: user, Exp: time.Now().Add(time.Duration(lg.args.TokenTTLSec) * time.Second).Unix()}
	if role == roleAgent {
		c.Role, c.Cap, c.Skills = "agent", lg.args.AgentCap, lg.args.AgentSkills
	} else {
		c.Role, c.Tier = "customer", tierNames[tier]
	}
	tok, err := signToken(lg.secret, c)
	if err != nil {
		return nil, err
	}
	return &dconn{lg: lg, user: user, userB: []byte(user), role: role, tier: tier, flood: flood, token: tok, node: node, convs: map[string]*conv{}}, nil
}

func (lg *loadGen) connect(ctx context.Context, a connectArgs) connectReply {
	lg.args = a
	timeout := time.Duration(a.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	var all []*dconn
	n := 0
	add := func(user string, role byte, tier int8, flood bool, global int) {
		dc, err := lg.newConn(user, role, tier, flood, global%max(len(a.Nodes), 1))
		if err != nil {
			return
		}
		all = append(all, dc)
		n++
	}
	// Agents first, interleaved with customers, so that offers have
	// somewhere to go as soon as customers start.
	for i := range a.Agents.Count {
		g := a.Agents.First + i
		add("a"+strconv.Itoa(g), roleAgent, 0, false, g)
	}
	for i := range a.Flooders.Count {
		g := a.Flooders.First + i
		add("f"+strconv.Itoa(g), roleCustomer, 2, true, g)
	}
	for i := range a.Customers.Count {
		g := a.Customers.First + i
		add("c"+strconv.Itoa(g), roleCustomer, tierOf(g, a.TierMix), false, g)
	}
	jobs := make(chan int)
	go func() {
		defer close(jobs)
		for i := range all {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	var est, failed atomic.Int64
	var emu sync.Mutex
	errs := map[string]int{}
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-tk.C:
				lg.srv.Emit("progress", progressEvent{Established: est.Load(), Failed: failed.Load()})
			case <-stop:
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range max(a.Concurrency, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				dc := all[i]
				src := ""
				if len(a.Src) > 0 {
					src = a.Src[i%len(a.Src)]
				}
				if err := dc.dial(ctx, src, timeout); err != nil {
					failed.Add(1)
					emu.Lock()
					if len(errs) < 8 {
						errs[err.Error()]++
					}
					emu.Unlock()
					continue
				}
				est.Add(1)
				lg.mu.Lock()
				lg.conns = append(lg.conns, dc)
				switch {
				case dc.flood:
					lg.flooder = dc
				case dc.role == roleCustomer:
					lg.idle[dc.tier] = append(lg.idle[dc.tier], dc)
				}
				lg.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	pwg.Wait()
	lg.srv.Emit("progress", progressEvent{Established: est.Load(), Failed: failed.Load()})
	r := connectReply{Established: int(est.Load()), Failed: int(failed.Load()), Seconds: time.Since(start).Seconds()}
	for e, k := range errs {
		r.Errors = append(r.Errors, fmt.Sprintf("%s (×%d)", e, k))
	}
	return r
}

// dial opens dc's connection to its node and waits for hello.
func (dc *dconn) dial(ctx context.Context, src string, timeout time.Duration) error {
	lg := dc.lg
	hello := make(chan struct{})
	dc.mu.Lock()
	dc.hello = hello
	dc.attached = false
	dc.mu.Unlock()
	ws, err := lg.nb.Dial(ctx, nbclient.Dial{
		Dst: lg.args.Nodes[dc.node], Src: src, Path: "/ws?token=" + dc.token, Timeout: timeout, Session: dc,
	})
	if err != nil {
		dc.mu.Lock()
		dc.outbox = nil
		dc.mu.Unlock()
		return err
	}
	// Frames that came with the 101 response (hello, a re-sent offer) were
	// handled inside Dial, before the connection was on its event loop;
	// what their handlers wrote waits in the outbox until now.
	dc.mu.Lock()
	dc.ws = ws
	dc.attached = true
	for _, b := range dc.outbox {
		_ = ws.WriteMessage(websocket.TextMessage, b)
	}
	dc.outbox = nil
	dc.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-hello:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	dc.mu.Lock()
	if dc.ws == ws {
		dc.ws = nil
	}
	dc.mu.Unlock()
	_ = ws.Close()
	return errors.New("no hello within the timeout")
}

func (lg *loadGen) onClose(ws *websocket.Conn, err error) {
	defer lg.reportPanic("onClose")
	dc, _ := ws.Session().(*dconn)
	if dc == nil {
		return
	}
	dc.mu.Lock()
	if dc.ws != ws {
		dc.mu.Unlock()
		return
	}
	dc.ws, dc.up, dc.attached = nil, false, false
	dc.dropNS = time.Now().UnixNano()
	dc.mu.Unlock()
	if lg.closing.Load() {
		return
	}
	lg.cnt.dropped.Add(1)
	msg := "closed"
	if err != nil {
		msg = "closed: " + err.Error()
	}
	lg.countError(msg)
	if lg.args.Reconnect {
		go dc.redial()
	}
}

// redial reconnects a dropped connection with backoff and jitter, to the
// next node when there are several (PROTOCOL.md: close 1001 or a dead node
// → reconnect, to another node if you have one).
func (dc *dconn) redial() {
	lg := dc.lg
	backoff := 100 * time.Millisecond
	// A connection the server never greets (no hello: its announcement to
	// the core was lost, e.g. during a core failover) is given up after
	// commandRetry and opened again.
	timeout := min(time.Duration(lg.args.TimeoutMS)*time.Millisecond, commandRetry)
	for lg.ctx.Err() == nil && !lg.closing.Load() {
		time.Sleep(backoff/2 + time.Duration(mrand.Int64N(int64(backoff))))
		backoff = min(2*backoff, 2*time.Second)
		dc.mu.Lock()
		if len(lg.args.Nodes) > 1 {
			dc.node = (dc.node + 1) % len(lg.args.Nodes)
		}
		dc.redialed = true
		dc.mu.Unlock()
		src := ""
		if len(lg.args.Src) > 0 {
			src = lg.args.Src[mrand.IntN(len(lg.args.Src))]
		}
		if err := dc.dial(lg.ctx, src, timeout); err == nil {
			return
		}
	}
}

// --- receiving ----------------------------------------------------------

func (lg *loadGen) onMessage(ws *websocket.Conn, _ websocket.MessageType, data []byte) {
	defer lg.reportPanic("onMessage")
	now := time.Now().UnixNano()
	dc, _ := ws.Session().(*dconn)
	if dc == nil {
		return
	}
	var f frame
	if err := scanFrame(data, &f); err != nil {
		lg.cnt.badFrames.Add(1)
		return
	}
	switch string(f.typ) {
	case "message":
		dc.onChat(&f, now)
	case "ack":
		dc.onAck(&f, now)
	case "typing":
		lg.cnt.typingRecv.Add(1)
	case "hello":
		dc.onHello(ws, data, now)
	case "queued":
		dc.onQueued(&f, now)
	case "position":
		dc.onPosition(&f)
	case "offer":
		dc.onOffer(&f, now)
	case "assigned":
		dc.onAssigned(&f, now)
	case "resolved":
		dc.onResolved(&f, now)
	case "resumed":
		dc.onResumed(&f)
	case "sync":
		dc.onSync(&f)
	case "offer_expired":
		lg.cnt.offersExpired.Add(1)
	case "error":
		dc.onError(&f)
	case "read", "pong", "presence":
	default:
		lg.cnt.other.Add(1)
		lg.countError("unexpected " + string(f.typ))
	}
}

// reportPanic prints a handler's panic with its stack and exits: nbio
// would recover it silently, leaving the connection's locks held.
func (lg *loadGen) reportPanic(where string) {
	if p := recover(); p != nil {
		fmt.Fprintf(os.Stderr, "deskbench client: panic in %s: %v\n%s", where, p, debug.Stack())
		os.Exit(3)
	}
}

func (lg *loadGen) countError(key string) {
	lg.errMu.Lock()
	if _, ok := lg.errs[key]; ok || len(lg.errs) < 64 {
		lg.errs[key]++
	}
	lg.errMu.Unlock()
}

// convLocked returns dc's view of conversation id, creating it; dc.mu held.
func (dc *dconn) convLocked(id []byte) *conv {
	if cv := dc.convs[string(id)]; cv != nil {
		return cv
	}
	cv := &conv{id: string(id), dc: dc, role: dc.role, tier: dc.tier, pairIdx: -1, pending: map[uint64]int64{}, flood: dc.flood}
	dc.convs[cv.id] = cv
	return cv
}

// sendLocked writes b on dc's connection; dc.mu held. A connection that is
// down drops it (the reconnect recovers what matters).
func (dc *dconn) sendLocked(b []byte) bool {
	if dc.ws == nil {
		return false
	}
	if !dc.attached {
		dc.outbox = append(dc.outbox, append([]byte(nil), b...))
		return true
	}
	return dc.ws.WriteMessage(websocket.TextMessage, b) == nil
}

// resumeLocked asks for every stored message after cv.last, unless a
// resume is already out.
// (PROTOCOL.md: wait for hello before sending resume — events of the
// user's topic can reach a new connection before it; the resume then goes
// out with the hello.)
func (dc *dconn) resumeLocked(cv *conv) {
	if cv.resumeOut > 0 {
		return
	}
	if !dc.up {
		cv.needResume = true
		return
	}
	if dc.sendLocked(resumeMsg(cv.id, cv.last, cv.epoch)) {
		cv.needResume = false
		cv.resumeOut++
		cv.resumes++
		dc.lg.cnt.resumes.Add(1)
	}
}

func (dc *dconn) onChat(f *frame, now int64) {
	lg := dc.lg
	off := uint64(f.offset)
	sent, okTS := textSentNS(f.text)
	mine := bytes.Equal(f.from, dc.userB)
	dc.mu.Lock()
	cv := dc.convLocked(f.conv)
	if !cv.recv.add(off) {
		// PROTOCOL.md: live messages may overlap what a resume returns.
		if cv.resumeOut > 0 || cv.viaRes.has(off) {
			cv.resumeDup++
		} else {
			cv.dupLive++
			lg.cnt.dupLive.Add(1)
		}
		dc.mu.Unlock()
		return
	}
	switch {
	case cv.auditing:
		cv.auditRecovered++
		cv.viaRes.add(off)
	case cv.resumeOut > 0:
		cv.recovered++
		cv.viaRes.add(off)
	}
	cv.maxSeen = max(cv.maxSeen, off)
	cv.advance()
	if cv.last < cv.maxSeen {
		// A gap below this message: resume from the last offset held.
		dc.resumeLocked(cv)
	}
	flood := cv.flood
	if mine {
		cv.selfRecv++
	} else {
		cv.peerRecv++
	}
	dc.mu.Unlock()
	if mine {
		lg.cnt.recvSelf.Add(1)
		return
	}
	w := lg.win.Load()
	lat := now - sent
	switch {
	case flood:
		lg.cnt.recvFlood.Add(1)
		if okTS {
			w.flood.Record(lat)
		}
	case dc.role == roleAgent:
		lg.cnt.recvC2A.Add(1)
		if okTS {
			w.c2a.Record(lat)
		}
	default:
		lg.cnt.recvA2C.Add(1)
		if okTS {
			w.a2c.Record(lat)
		}
	}
}

func (dc *dconn) onAck(f *frame, now int64) {
	lg := dc.lg
	seq, ok := parseUint(f.id)
	if !ok {
		lg.countError("ack with a foreign id")
		return
	}
	dc.mu.Lock()
	cv := dc.convLocked(f.conv)
	cv.setEpoch(f.epoch)
	sent, known := cv.pending[seq]
	if known {
		delete(cv.pending, seq)
	}
	cv.acked.add(uint64(f.offset))
	cv.ackCount++
	dc.mu.Unlock()
	lg.cnt.acked.Add(1)
	if m := lg.mark.Load(); m != 0 && now > m {
		lg.firstAck.CompareAndSwap(0, now)
	}
	if known {
		lg.win.Load().ack.Record(now - sent)
	} else {
		lg.countError("ack for a message not pending (a retry acknowledged twice)")
	}
}

func (cv *conv) setEpoch(e []byte) {
	if len(e) > 0 && cv.epoch != string(e) {
		cv.epoch = string(e)
	}
}

// helloFrame is the part of hello a reconnecting client needs.
type helloFrame struct {
	Convs []struct {
		Conv   string `json:"conv"`
		State  string `json:"state"`
		Offset uint64 `json:"offset"`
		Epoch  string `json:"epoch"`
	} `json:"convs"`
}

func (dc *dconn) onHello(ws *websocket.Conn, data []byte, now int64) {
	lg := dc.lg
	dc.mu.Lock()
	if dc.ws != nil && dc.ws != ws {
		dc.mu.Unlock()
		return
	}
	if dc.ws == nil {
		dc.ws = ws // hello came with the 101 response, before Dial returned
	}
	dc.up = true
	if dc.hello != nil {
		close(dc.hello)
		dc.hello = nil
	}
	if !dc.redialed {
		for _, cv := range dc.convs {
			if cv.needResume {
				dc.resumeLocked(cv)
			}
		}
		dc.mu.Unlock()
		return
	}
	// A reconnect: recover every conversation the server lists, send again
	// what was not acknowledged, and start again what was never queued.
	dc.redialed = false
	drop := dc.dropNS
	var h helloFrame
	if err := json.Unmarshal(data, &h); err != nil {
		dc.mu.Unlock()
		lg.countError("undecodable hello")
		return
	}
	listed := map[string]bool{}
	var finished []*conv
	var idle bool
	for _, ci := range h.Convs {
		cv := dc.convs[ci.Conv]
		if ci.State == "resolved" || ci.State == "closed" {
			// Finished while we were away: its resolved was lost.
			if cv != nil && !cv.resolved {
				idle = dc.finishLocked(cv, ci.Offset, now) || idle
				finished = append(finished, cv)
			}
			continue
		}
		listed[ci.Conv] = true
		if cv == nil {
			if dc.role != roleCustomer || dc.state != custStarting {
				continue
			}
			// The start was stored before the drop; its queued was lost.
			cv = dc.convLocked([]byte(ci.Conv))
			cv.startNS, cv.queuedNS = dc.startNS, now
			dc.cur = cv
			dc.state = custQueued
			if ci.State == "active" {
				dc.state = custActive
			}
		}
		if ci.Offset > cv.last {
			cv.resumeOut = 0
			dc.resumeLocked(cv)
		}
	}
	if dc.role == roleCustomer && dc.state == custStarting {
		dc.sendLocked(startMsg(dc.entry))
	}
	for _, cv := range dc.convs {
		if !listed[cv.id] && !cv.resolved && (cv.active || cv.role == roleCustomer && dc.cur == cv) {
			// Not open any more, and not listed: it finished while we were
			// away (a restarted node forgets finished conversations).
			lg.countError("reconnect: a conversation finished while disconnected")
			idle = dc.finishLocked(cv, 0, now) || idle
			finished = append(finished, cv)
		}
		// Anything missed while away: resume after every reconnect.
		if cv.needResume || cv.last < max(cv.final, cv.maxSeen) {
			cv.resumeOut = 0
			dc.resumeLocked(cv)
		}
		// A resolve or cancel sent to the dead node may be lost: again.
		cv.resolving = false
		for seq := range cv.pending {
			cv.retry = append(cv.retry, seq)
		}
		if len(cv.retry) > 0 {
			lg.queueRetry(cv)
		}
	}
	dc.mu.Unlock()
	for i, cv := range finished {
		dc.afterFinish(cv, idle && i == 0)
	}
	lg.cnt.reconnected.Add(1)
	lg.recMu.Lock()
	lg.recons = append(lg.recons, reconnect{DropNS: drop, HelloNS: now})
	lg.recMu.Unlock()
}

func (dc *dconn) onQueued(f *frame, now int64) {
	lg := dc.lg
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if dc.role != roleCustomer {
		return
	}
	if dc.state != custStarting && dc.state != custWaiting {
		return // a repeated queued for the open conversation
	}
	if dc.cur != nil && dc.cur.id == string(f.conv) {
		return
	}
	cv := dc.convLocked(f.conv)
	cv.setEpoch(f.epoch)
	cv.startNS, cv.queuedNS = dc.startNS, now
	cv.waiting = dc.state == custWaiting
	dc.cur = cv
	if dc.state == custStarting {
		dc.state = custQueued
	}
	lg.cnt.queued.Add(1)
}

func (dc *dconn) onPosition(f *frame) {
	lg := dc.lg
	offered := string(f.state) == "offered"
	dc.mu.Lock()
	if cv := dc.convs[string(f.conv)]; cv != nil {
		if offered {
			cv.offeredNotices++
		} else {
			cv.positions++
		}
	}
	dc.mu.Unlock()
	if offered {
		lg.cnt.offeredNotices.Add(1)
	} else {
		lg.cnt.positions.Add(1)
	}
}

func (dc *dconn) onOffer(f *frame, now int64) {
	lg := dc.lg
	lg.cnt.offers.Add(1)
	if m := lg.mark.Load(); m != 0 && now > m {
		lg.firstOffer.CompareAndSwap(0, now)
	}
	dc.mu.Lock()
	cv := dc.convLocked(f.conv)
	if cv.offerNS == 0 {
		cv.offerNS = now
	}
	cv.offerID = string(f.offer)
	cv.flood = bytes.HasPrefix(f.customer, []byte("f"))
	dc.sendLocked(acceptMsg(cv.id, cv.offerID))
	dc.mu.Unlock()
}

func (dc *dconn) onAssigned(f *frame, now int64) {
	lg := dc.lg
	dc.mu.Lock()
	cv := dc.convLocked(f.conv)
	cv.setEpoch(f.epoch)
	first := cv.assignedNS == 0
	if first {
		cv.assignedNS = now
	}
	if dc.role == roleAgent && bytes.HasPrefix(f.customer, []byte("f")) {
		cv.flood = true
	}
	if dc.role == roleCustomer && dc.cur == cv {
		dc.state = custActive
	}
	if dc.role == roleAgent && first {
		p := lg.params.Load()
		d := p.ConvDurMS * int64(time.Millisecond)
		if now < p.WarmEndNS {
			cv.endNS = p.WarmEndNS + int64(mrand.Float64()*float64(d))
		} else {
			cv.endNS = now + d
		}
	}
	if off := uint64(f.offset); off > cv.last {
		dc.resumeLocked(cv)
	}
	start := !cv.active && !cv.resolved && !cv.waiting
	if start {
		cv.active = true
	}
	flood := cv.flood
	dc.mu.Unlock()
	if dc.role == roleCustomer {
		lg.cnt.assignedC.Add(1)
	} else {
		lg.cnt.assignedA.Add(1)
	}
	if start && !(flood && dc.role == roleCustomer) {
		lg.addPair(cv)
	}
}

func (dc *dconn) onResolved(f *frame, now int64) {
	dc.mu.Lock()
	cv := dc.convLocked(f.conv)
	if cv.resolved {
		dc.mu.Unlock()
		return
	}
	idle := dc.finishLocked(cv, uint64(f.offset), now)
	dc.mu.Unlock()
	dc.afterFinish(cv, idle)
}

// finishLocked marks cv finished with its last offset final, resuming if
// messages before it are missing, and reports whether the customer is idle
// again; dc.mu held. afterFinish must follow, without the lock.
func (dc *dconn) finishLocked(cv *conv, final uint64, now int64) (idle bool) {
	cv.resolved, cv.active, cv.resolvedNS = true, false, now
	cv.final = max(cv.final, final)
	if cv.last < cv.final {
		dc.resumeLocked(cv)
	}
	if dc.role == roleCustomer && dc.cur == cv {
		dc.cur = nil
		idle = dc.state != custWaiting && !dc.flood
		dc.state = custIdle
	}
	return idle
}

func (dc *dconn) afterFinish(cv *conv, idle bool) {
	lg := dc.lg
	lg.removePair(cv)
	if dc.role == roleCustomer {
		lg.cnt.resolvedC.Add(1)
	}
	if idle {
		lg.mu.Lock()
		lg.idle[dc.tier] = append(lg.idle[dc.tier], dc)
		lg.mu.Unlock()
	}
}

func (dc *dconn) onResumed(f *frame) {
	dc.mu.Lock()
	if cv := dc.convs[string(f.conv)]; cv != nil {
		if cv.resumeOut > 0 {
			cv.resumeOut--
		}
		if cv.resumeOut == 0 {
			cv.auditing = false
			// Another gap may have opened meanwhile.
			if cv.last < cv.maxSeen || cv.last < cv.final {
				dc.resumeLocked(cv)
			}
		}
	}
	dc.mu.Unlock()
}

// onSync handles the server's sync hint (PROTOCOL.md: the node restored a
// lost subscription and may have missed delivering messages): resume when
// the transcript is ahead of what this connection has.
func (dc *dconn) onSync(f *frame) {
	dc.mu.Lock()
	if cv := dc.convs[string(f.conv)]; cv != nil && uint64(f.offset) > cv.last {
		if uint64(f.offset) > cv.maxSeen {
			cv.maxSeen = uint64(f.offset)
		}
		dc.resumeLocked(cv)
	}
	dc.mu.Unlock()
}

// onError handles an error envelope. Its ref is the request's type and,
// for messages, ":" + the message ID.
func (dc *dconn) onError(f *frame) {
	lg := dc.lg
	lg.cnt.errors.Add(1)
	ref := string(f.ref)
	code := string(f.code)
	kind, id, _ := strings.Cut(ref, ":")
	lg.countError(code + " (" + kind + ")")
	switch kind {
	case "message":
		seq, ok := parseUint([]byte(id))
		if !ok {
			return
		}
		dc.mu.Lock()
		if cv := dc.convs[string(f.conv)]; cv != nil {
			if _, pend := cv.pending[seq]; pend {
				switch code {
				case "rate_limited", "unavailable", "internal":
					// Nothing was stored: again later, with the same id.
					cv.retry = append(cv.retry, seq)
					cv.retryAt = time.Now().Add(retryBackoff).UnixNano()
					lg.queueRetry(cv)
				default:
					delete(cv.pending, seq) // refused for good (e.g. resolved meanwhile)
					cv.rejected++
				}
			}
		}
		dc.mu.Unlock()
	case "resume":
		dc.mu.Lock()
		if cv := dc.convs[string(f.conv)]; cv != nil && cv.resumeOut > 0 {
			cv.resumeOut--
		}
		dc.mu.Unlock()
	case "start":
		dc.mu.Lock()
		if dc.state == custStarting || dc.state == custWaiting && dc.cur == nil {
			dc.state = custIdle
			idle := !dc.flood
			dc.mu.Unlock()
			if idle {
				lg.mu.Lock()
				lg.idle[dc.tier] = append(lg.idle[dc.tier], dc)
				lg.mu.Unlock()
			}
			return
		}
		dc.mu.Unlock()
	}
}

// --- sending ------------------------------------------------------------

func (lg *loadGen) addPair(cv *conv) {
	lg.mu.Lock()
	if cv.pairIdx < 0 {
		cv.pairIdx = len(lg.pairs)
		lg.pairs = append(lg.pairs, cv)
	}
	lg.mu.Unlock()
}

func (lg *loadGen) removePair(cv *conv) {
	lg.mu.Lock()
	if i := cv.pairIdx; i >= 0 && i < len(lg.pairs) && lg.pairs[i] == cv {
		last := len(lg.pairs) - 1
		lg.pairs[i] = lg.pairs[last]
		lg.pairs[i].pairIdx = i
		lg.pairs[last] = nil
		lg.pairs = lg.pairs[:last]
		cv.pairIdx = -1
	}
	lg.mu.Unlock()
}

// sendLoop paces chat messages: every millisecond it adds PairRate × the
// number of active conversation sides to a budget and sends that many
// messages, round-robin over the sides, so each side sends PairRate/s on
// average and the total follows the number of live conversations. It also
// sends again what the server asked to retry.
func (lg *loadGen) sendLoop(ctx context.Context) {
	defer lg.loops.Done()
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	var budget float64
	next := 0
	last := time.Now()
	buf := make([]byte, 0, 1024)
	lastRetry := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			dt := now.Sub(last).Seconds()
			last = now
			p := lg.params.Load()
			lg.mu.Lock()
			n := len(lg.pairs)
			lg.mu.Unlock()
			if !p.Sending || n == 0 {
				budget = 0
			} else {
				budget = min(budget+p.PairRate*float64(n)*dt, max(p.PairRate*float64(n)*0.05, 1))
			}
			for budget >= 1 {
				budget--
				lg.mu.Lock()
				if len(lg.pairs) == 0 {
					lg.mu.Unlock()
					break
				}
				next = (next + 1) % len(lg.pairs)
				cv := lg.pairs[next]
				lg.mu.Unlock()
				buf = lg.sendChat(cv, buf, p.TypingFrac)
			}
			if now.Sub(lastRetry) >= 50*time.Millisecond {
				lastRetry = now
				buf = lg.sendRetries(buf)
			}
		}
	}
}

// sendChat sends one new message on cv (and maybe typing first).
func (lg *loadGen) sendChat(cv *conv, buf []byte, typingFrac float64) []byte {
	dc := cv.dc
	size := lg.args.MsgSize
	dc.mu.Lock()
	if !dc.up || !cv.active || cv.resolving || cv.resolved {
		dc.mu.Unlock()
		lg.cnt.skipped.Add(1)
		return buf
	}
	cv.seq++
	now := time.Now().UnixNano()
	cv.pending[cv.seq] = now
	if typingFrac > 0 && mrand.Float64() < typingFrac {
		if dc.sendLocked(typingMsg(cv.id, "on")) {
			lg.cnt.typingSent.Add(1)
		}
	}
	buf = appendMessage(buf[:0], cv.id, cv.seq, now, size)
	dc.sendLocked(buf)
	dc.mu.Unlock()
	if dc.role == roleAgent {
		lg.cnt.sentA.Add(1)
	} else {
		lg.cnt.sentC.Add(1)
	}
	return buf
}

// queueRetry puts cv on the retry queue; cv.dc.mu held.
func (lg *loadGen) queueRetry(cv *conv) {
	if cv.queued {
		return
	}
	cv.queued = true
	lg.mu.Lock()
	lg.retryQ = append(lg.retryQ, cv)
	lg.mu.Unlock()
}

// sendRetries sends again, with the same IDs, the messages the server did
// not store (rate_limited, unavailable) or that were in flight when a
// connection dropped.
func (lg *loadGen) sendRetries(buf []byte) []byte {
	lg.mu.Lock()
	q := lg.retryQ
	lg.retryQ = nil
	lg.mu.Unlock()
	now := time.Now().UnixNano()
	for _, cv := range q {
		dc := cv.dc
		dc.mu.Lock()
		cv.queued = false
		if !dc.up || cv.retryAt > now {
			lg.queueRetry(cv) // again once the connection is back, or later
			dc.mu.Unlock()
			continue
		}
		size := lg.args.MsgSize
		if cv.flood && dc.role == roleCustomer {
			size = max(size, int(floodSize.Load()))
		}
		for _, seq := range cv.retry {
			sent, ok := cv.pending[seq]
			if !ok {
				continue
			}
			buf = appendMessage(buf[:0], cv.id, seq, sent, size)
			dc.sendLocked(buf)
			lg.cnt.retried.Add(1)
		}
		cv.retry = cv.retry[:0]
		dc.mu.Unlock()
	}
	return buf
}

// retryBackoff is how long a message refused with rate_limited or
// unavailable waits before it is sent again.
const retryBackoff = 500 * time.Millisecond

// floodSize is the text size of the flooder's messages (for retries).
var floodSize atomic.Int64

// startLoop starts ConvRate conversations per second from idle customers,
// drawing each one's tier from the mix.
func (lg *loadGen) startLoop(ctx context.Context) {
	defer lg.loops.Done()
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	var budget float64
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tk.C:
			dt := now.Sub(last).Seconds()
			last = now
			p := lg.params.Load()
			if p.ConvRate <= 0 {
				budget = 0
				continue
			}
			budget = min(budget+p.ConvRate*dt, max(p.ConvRate, 1))
			for budget >= 1 {
				budget--
				tier := tierOfDraw(mrand.Float64(), lg.args.TierMix)
				dc := lg.takeIdle(tier)
				if dc == nil {
					lg.cnt.startSkipped.Add(1)
					continue
				}
				if dc.start("", false) {
					lg.cnt.started.Add(1)
				}
			}
		}
	}
}

func tierOfDraw(f float64, mix [3]float64) int8 {
	switch {
	case f < mix[0]:
		return 0
	case f < mix[0]+mix[1]:
		return 1
	default:
		return 2
	}
}

// takeIdle removes a random idle customer of tier (or of any tier, if that
// one has none left) from the idle lists.
func (lg *loadGen) takeIdle(tier int8) *dconn {
	lg.mu.Lock()
	defer lg.mu.Unlock()
	for k := range 3 {
		t := (int(tier) + k) % 3
		l := lg.idle[t]
		if len(l) == 0 {
			continue
		}
		i := mrand.IntN(len(l))
		dc := l[i]
		l[i] = l[len(l)-1]
		l[len(l)-1] = nil
		lg.idle[t] = l[:len(l)-1]
		return dc
	}
	return nil
}

// start sends start on an idle customer.
func (dc *dconn) start(entry string, waiting bool) bool {
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if !dc.up || dc.state != custIdle {
		return false
	}
	dc.state = custStarting
	if waiting {
		dc.state = custWaiting
	}
	dc.entry = entry
	dc.startNS = time.Now().UnixNano()
	dc.startSentNS = dc.startNS
	dc.lg.mu.Lock()
	dc.lg.starting = append(dc.lg.starting, dc)
	dc.lg.mu.Unlock()
	return dc.sendLocked(startMsg(entry))
}

// retryStarts sends start again for customers whose start got no queued
// within commandRetry (a second start is answered with the open
// conversation, so it is safe), and forgets those that got it.
func (lg *loadGen) retryStarts(now int64) {
	lg.mu.Lock()
	list := lg.starting
	lg.starting = nil
	lg.mu.Unlock()
	var keep []*dconn
	for _, dc := range list {
		dc.mu.Lock()
		waitingForQueued := (dc.state == custStarting || dc.state == custWaiting) && dc.cur == nil
		if waitingForQueued {
			keep = append(keep, dc)
			if dc.up && now-dc.startSentNS >= int64(commandRetry) && dc.sendLocked(startMsg(dc.entry)) {
				dc.startSentNS = now
				lg.cnt.commandRetries.Add(1)
			}
		}
		dc.mu.Unlock()
	}
	lg.mu.Lock()
	lg.starting = append(lg.starting, keep...)
	lg.mu.Unlock()
}

// startWaiting parks count idle customers in the queue with an entry skill
// no agent has: they wait for the whole run and receive position updates.
func (lg *loadGen) startWaiting(a waitArgs) int {
	n := 0
	for range a.Count {
		dc := lg.takeIdle(2)
		if dc == nil {
			break
		}
		if dc.start(a.Entry, true) {
			n++
		}
	}
	lg.mu.Lock()
	lg.waiting += n
	lg.mu.Unlock()
	return n
}

// resolveLoop resolves, as the agent, every conversation whose lifetime is
// over (not the flooded one: it lasts until the end).
func (lg *loadGen) resolveLoop(ctx context.Context) {
	defer lg.loops.Done()
	tk := time.NewTicker(100 * time.Millisecond)
	defer tk.Stop()
	var lastStartCheck int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			now := time.Now().UnixNano()
			if now-lastStartCheck >= int64(time.Second) {
				lastStartCheck = now
				lg.retryStarts(now)
			}
			lg.mu.Lock()
			pairs := append([]*conv(nil), lg.pairs...)
			lg.mu.Unlock()
			for _, cv := range pairs {
				if cv.role == roleAgent {
					cv.dc.resolveIfDue(cv, now)
				}
			}
		}
	}
}

func (dc *dconn) resolveIfDue(cv *conv, now int64) {
	dc.mu.Lock()
	if !cv.flood && cv.endNS != 0 && cv.endNS <= now && dc.needsResolveLocked(cv, now) {
		if dc.sendLocked(resolveMsg(cv.id)) {
			cv.resolving, cv.resolveNS = true, now
		}
	}
	dc.mu.Unlock()
}

// commandRetry is how long a resolve, cancel or start waits for its answer
// before it is sent again: the core's commands travel on a bus topic, and
// while no node runs the core (a failover) they are lost without an error.
const commandRetry = 5 * time.Second

// needsResolveLocked: cv is not finished and no resolve (or cancel) went
// out within commandRetry; dc.mu held.
func (dc *dconn) needsResolveLocked(cv *conv, now int64) bool {
	if cv.resolved || !dc.up {
		return false
	}
	if cv.resolving && now-cv.resolveNS < int64(commandRetry) {
		return false
	}
	if cv.resolving {
		dc.lg.cnt.commandRetries.Add(1)
	}
	return true
}

// --- the isolation check's flood ----------------------------------------

// floodStart makes the flooding customer open its conversation.
func (lg *loadGen) floodStart() error {
	lg.mu.Lock()
	dc := lg.flooder
	lg.mu.Unlock()
	if dc == nil {
		return errors.New("client: no flooding customer here")
	}
	if !dc.start("", false) {
		return errors.New("client: the flooding customer could not start")
	}
	return nil
}

// flood starts or stops the flooder: a burst of Burst messages, then Rate
// per second, with TypingRate typing frames per second — the most one
// sender may send in one conversation by PROTOCOL.md's limits.
func (lg *loadGen) flood(a floodArgs) error {
	lg.floodMu.Lock()
	defer lg.floodMu.Unlock()
	lg.stopFloodLocked()
	if !a.On {
		return nil
	}
	lg.mu.Lock()
	dc := lg.flooder
	lg.mu.Unlock()
	if dc == nil {
		return errors.New("client: no flooding customer here")
	}
	dc.mu.Lock()
	cv := dc.cur
	dc.mu.Unlock()
	if cv == nil {
		return errors.New("client: the flooding customer has no conversation")
	}
	floodSize.Store(int64(a.Size))
	stop := make(chan struct{})
	lg.floodStop = stop
	lg.floodWG.Add(1)
	go func() {
		defer lg.floodWG.Done()
		buf := make([]byte, 0, a.Size+128)
		send := func() {
			dc.mu.Lock()
			if dc.up && cv.active {
				cv.seq++
				now := time.Now().UnixNano()
				cv.pending[cv.seq] = now
				buf = appendMessage(buf[:0], cv.id, cv.seq, now, a.Size)
				dc.sendLocked(buf)
				lg.cnt.sentFlood.Add(1)
			}
			dc.mu.Unlock()
		}
		for range a.Burst {
			send()
		}
		start := time.Now()
		var msgs, typing float64
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-lg.ctx.Done():
				return
			case now := <-tk.C:
				el := now.Sub(start).Seconds()
				for msgs < el*a.Rate {
					msgs++
					send()
				}
				for typing < el*a.TypingRate {
					typing++
					dc.mu.Lock()
					if dc.sendLocked(typingMsg(cv.id, "on")) {
						lg.cnt.typingSent.Add(1)
					}
					dc.mu.Unlock()
				}
			}
		}
	}()
	return nil
}

func (lg *loadGen) stopFlood() {
	lg.floodMu.Lock()
	defer lg.floodMu.Unlock()
	lg.stopFloodLocked()
}

func (lg *loadGen) stopFloodLocked() {
	if lg.floodStop != nil {
		close(lg.floodStop)
		lg.floodStop = nil
	}
	lg.floodWG.Wait()
}

// --- ticks, the end of the run and the report -----------------------------

func (lg *loadGen) tick() (tickReply, error) {
	w := lg.win.Swap(&window{})
	s, err := procstat.Self()
	r := tickReply{Sample: s, Counters: lg.cnt.load(), C2A: w.c2a.Snapshot(), A2C: w.a2c.Snapshot(), Ack: w.ack.Snapshot(), Flood: w.flood.Snapshot()}
	lg.errMu.Lock()
	r.Errors = maps.Clone(lg.errs)
	lg.errMu.Unlock()
	lg.mu.Lock()
	conns := lg.conns
	r.Pairs = len(lg.pairs)
	r.Waiting = lg.waiting
	lg.mu.Unlock()
	for _, dc := range conns {
		dc.mu.Lock()
		if dc.up {
			r.Up++
		}
		for _, cv := range dc.convs {
			r.Pending += len(cv.pending)
			if !cv.resolved && (cv.assignedNS != 0 || cv.queuedNS != 0) || cv.resumeOut > 0 {
				r.Unresolved++
			}
		}
		dc.mu.Unlock()
	}
	r.FirstOfferNS, r.FirstAckNS = lg.firstOffer.Load(), lg.firstAck.Load()
	lg.recMu.Lock()
	r.Reconnects, lg.recons = lg.recons, nil
	lg.recMu.Unlock()
	return r, err
}

// resolveAll ends every conversation: agents resolve theirs, customers
// still queued (or parked) cancel. New starts and chat stopped before.
func (lg *loadGen) resolveAll() {
	lg.stopFlood()
	lg.mu.Lock()
	conns := lg.conns
	lg.mu.Unlock()
	now := time.Now().UnixNano()
	for _, dc := range conns {
		dc.mu.Lock()
		for _, cv := range dc.convs {
			switch {
			case dc.role == roleAgent && cv.assignedNS != 0:
				if dc.needsResolveLocked(cv, now) && dc.sendLocked(resolveMsg(cv.id)) {
					cv.resolving, cv.resolveNS = true, now
				}
			case dc.role == roleCustomer && cv.assignedNS == 0 && cv.queuedNS != 0:
				if dc.needsResolveLocked(cv, now) && dc.sendLocked(cancelMsg(cv.id)) {
					cv.resolving, cv.resolveNS = true, now
				}
			}
		}
		dc.mu.Unlock()
	}
}

// audit sends one last resume on every conversation this process took part
// in, from the last offset held: what arrives now was stored but not
// delivered live. It returns how many were sent.
func (lg *loadGen) audit() int {
	lg.mu.Lock()
	conns := lg.conns
	lg.mu.Unlock()
	n := 0
	for _, dc := range conns {
		dc.mu.Lock()
		for _, cv := range dc.convs {
			if cv.assignedNS == 0 && cv.last == 0 && len(cv.recv) == 0 {
				continue // never assigned, nothing to deliver
			}
			live := append(offsetSet(nil), cv.recv...)
			cv.live = &live
			if dc.up && dc.sendLocked(resumeMsg(cv.id, cv.last, cv.epoch)) {
				cv.auditing = true
				cv.resumeOut++
				n++
			}
		}
		dc.mu.Unlock()
	}
	return n
}

func (lg *loadGen) report() reportReply {
	lg.mu.Lock()
	conns := lg.conns
	lg.mu.Unlock()
	var r reportReply
	for _, dc := range conns {
		dc.mu.Lock()
		for _, cv := range dc.convs {
			cr := convReport{
				Conv: cv.id, Role: string(rune(cv.role)), Tier: cv.tier, Flood: cv.flood, Waiting: cv.waiting,
				Start: cv.startNS, Queued: cv.queuedNS, Offer: cv.offerNS, Assigned: cv.assignedNS, Resolved: cv.resolvedNS,
				Acked: cv.acked.trim(), Recv: cv.recv.trim(), Final: max(cv.final, cv.maxSeen),
				DupLive: cv.dupLive, ResumeDup: cv.resumeDup, Recovered: cv.recovered, AuditRecovered: cv.auditRecovered,
				Resumes: cv.resumes, Pending: len(cv.pending), Rejected: cv.rejected, Positions: cv.positions,
				Active: cv.active, Resolving: cv.resolving, ResumeOut: cv.resumeOut, Sent: cv.seq,
			}
			if cv.live != nil {
				cr.Live = cv.live.trim()
			} else {
				cr.Live = cr.Recv
			}
			r.Convs = append(r.Convs, cr)
		}
		dc.mu.Unlock()
	}
	return r
}
