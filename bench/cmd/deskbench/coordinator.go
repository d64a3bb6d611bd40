package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-go/switchboard/bench/internal/ctl"
	"github.com/switchboard-go/switchboard/bench/internal/hist"
	"github.com/switchboard-go/switchboard/bench/internal/logw"
	"github.com/switchboard-go/switchboard/bench/internal/plan"
	"github.com/switchboard-go/switchboard/bench/internal/procstat"
)

// sample is one second of the run, merged over every load generator and
// server process.
type sample struct {
	T     float64 // seconds since the run started, at the end of the window
	Dt    float64 // window length in seconds
	Phase string

	C2A, A2C, Ack, Flood hist.Snapshot
	Cnt                  counters // cumulative, summed over load generators
	Errors               map[string]int64
	Up, Pairs, Pending   int
	Waiting, Unresolved  int

	ServerCPU  float64 // CPU seconds used by the supportdesk nodes in this window
	ServerRSS  int64   // summed over live nodes
	StoreCPU   float64 // redis + postgres, this window
	ClientCPU  float64 // load generators, this window
	NodesAlive int

	FirstOfferNS, FirstAckNS int64 // since the last mark, earliest over load generators
	Reconnects               []reconnect
}

type span struct {
	name       string
	start, end int64 // Unix ns
}

type runState struct {
	cfg     config
	log     io.Writer
	dir     string
	secret  string
	startAt time.Time

	plan    plan.Plan
	nodes   []*deskNode
	redis   *child
	pg      *postgres
	group   *ctl.Group
	clients []*ctl.Child

	connect connectFigures

	series    []sample
	phases    []span
	lastCPU   map[string]float64 // per process, cumulative, for deltas
	lastCli   []float64
	chaos     chaosFigures
	planned   time.Duration // total planned run time, for the ETA
	doneSoFar time.Duration // planned time of the finished segments
	profiles  []string
}

type connectFigures struct {
	conns, established, failed int
	seconds                    float64
	rssBase, rssConnected      int64
	loadAvg                    float64
}

// coordinate runs the whole benchmark and returns its rows: one per phase,
// then the summary.
func coordinate(ctx context.Context, cfg config, log io.Writer) ([]Result, error) {
	log = logw.Locked(log)
	st := &runState{cfg: cfg, log: log, lastCPU: map[string]float64{}, startAt: time.Now()}
	st.planned = st.plannedTime()
	defer st.teardown()
	rows, err := st.run(ctx)
	st.teardown()
	if ctx.Err() != nil {
		return rows, ctx.Err()
	}
	if cfg.EchoRef && err == nil {
		echo := st.runEcho(ctx)
		applyEcho(rows, echo)
	}
	if len(rows) > 0 {
		finishSummary(&rows[len(rows)-1], rows, cfg)
	}
	return rows, err
}

// plannedTime estimates the whole run for the progress ETA.
func (st *runState) plannedTime() time.Duration {
	c := st.cfg
	d := c.Warmup + c.Duration + 20*time.Second // connect + finish, roughly
	if c.Sweep {
		d += time.Duration(len(c.SweepRates)) * (c.SweepStep + 3*time.Second)
	}
	if c.Isolation {
		d += 2 * c.IsolationDur
	}
	if c.Chaos {
		d += c.ChaosDuration
	}
	if c.EchoRef {
		d += c.EchoDuration + 20*time.Second
	}
	return d
}

func (st *runState) logf(format string, args ...any) {
	fmt.Fprintf(st.log, "deskbench: "+format+"\n", args...)
}

func (st *runState) teardown() {
	if st.group != nil {
		st.group.Close()
		st.group = nil
	}
	for _, n := range st.nodes {
		n.kill()
	}
	st.nodes = nil
	if st.redis != nil {
		st.redis.kill()
		st.redis = nil
	}
	if st.pg != nil {
		if err := st.pg.close(); err != nil {
			st.logf("postgres: %v", err)
		}
		st.pg = nil
	}
	if st.dir != "" && os.Getenv("DESKBENCH_KEEP") == "" {
		_ = os.RemoveAll(st.dir)
		st.dir = ""
	}
}

func randomSecret() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (st *runState) run(ctx context.Context) ([]Result, error) {
	cfg := st.cfg
	var err error
	if st.dir, err = tempDir(); err != nil {
		return nil, err
	}
	if lo, hi, changed, err := plan.WidenPortRange(plan.PortRangeFile, 1024, 65535); err == nil {
		if changed {
			st.logf("ephemeral port range widened to %d-%d", lo, hi)
		}
	}
	soft, _, err := plan.NoFile()
	if err != nil {
		return nil, err
	}
	per := plan.PerProcess(soft, cfg.Headroom)
	if st.plan, err = plan.Make(cfg.conns(), per, cfg.Nodes, cfg.Clients); err != nil {
		if cfg.Setup == "single" {
			return nil, fmt.Errorf("%d connections do not fit one supportdesk process: RLIMIT_NOFILE is %d (minus -headroom %d); use -setup cluster -nodes %d: %w",
				cfg.conns(), soft, cfg.Headroom, (cfg.conns()+per-1)/per, err)
		}
		return nil, err
	}
	bin := cfg.Supportdesk
	if bin == "" {
		bin = joinPath(st.dir, "supportdesk")
		st.logf("building %s", supportdeskPkg)
		if err := goBuild(ctx, supportdeskPkg, bin, st.log); err != nil {
			return nil, err
		}
	}
	if err := st.startServers(ctx, bin); err != nil {
		return nil, err
	}
	if err := st.startClients(ctx); err != nil {
		return nil, err
	}
	if err := st.connectAll(ctx); err != nil {
		return nil, err
	}
	return st.phasesRun(ctx)
}

func (st *runState) startServers(ctx context.Context, bin string) error {
	cfg := st.cfg
	st.secret = randomSecret()
	env := []string{"SUPPORTDESK_SECRET=" + st.secret}
	common := []string{"-dev", "-log-level", cfg.ServerLog}
	if cfg.Setup == "cluster" {
		var err error
		var redisAddr string
		st.logf("starting redis-server and PostgreSQL")
		if st.redis, redisAddr, err = startRedis(ctx, st.dir, st.log); err != nil {
			return err
		}
		if st.pg, err = startPostgres(ctx); err != nil {
			return fmt.Errorf("postgres: %w", err)
		}
		common = append(common, "-redis", redisAddr, "-postgres", st.pg.dsn)
	}
	common = append(common, cfg.ServerArgs...)
	for i := range cfg.Nodes {
		name := "node" + strconv.Itoa(i)
		args := append([]string(nil), common...)
		if cfg.Setup == "cluster" {
			args = append(args, "-node", name)
		} else {
			args = append(args, "-data", joinPath(st.dir, "data-"+name))
		}
		n := &deskNode{name: name, bin: bin, args: args, env: env, log: st.log, host: "127.0.0.1"}
		// One at a time: the first node is the oldest, so it runs the core.
		if err := n.start(ctx); err != nil {
			return err
		}
		st.nodes = append(st.nodes, n)
		if s, err := n.sample(); err == nil {
			n.base = s.RSSBytes
			st.connect.rssBase += s.RSSBytes
		}
		st.logf("%s up: ws %s, ops %s", name, n.ws, n.ops)
	}
	return nil
}

func (st *runState) startClients(ctx context.Context) error {
	cfg := st.cfg
	st.group = &ctl.Group{}
	procs := cfg.ClientProcs
	if procs <= 0 {
		procs = max(2, runtime.NumCPU()/max(st.plan.Clients, 1))
	}
	env := append([]string{secretEnv + "=" + st.secret}, cfg.ChildEnv...)
	for i := range st.plan.Clients {
		name := "client" + strconv.Itoa(i)
		c, err := st.group.Start(name, cfg.Self, []string{"-role", "client", "-procs", strconv.Itoa(procs)}, env, logw.Prefix(st.log, "["+name+"] "))
		if err != nil {
			return err
		}
		st.clients = append(st.clients, c)
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return ctl.ForEach(st.clients, func(_ int, c *ctl.Child) error {
		_, err := c.WaitEvent(rctx, "ready")
		return err
	})
}

func (st *runState) connectAll(ctx context.Context) error {
	cfg := st.cfg
	k := len(st.clients)
	custs, agents := plan.Split(cfg.Customers, k), plan.Split(cfg.Agents, k)
	nodes := make([]string, len(st.nodes))
	for i, n := range st.nodes {
		nodes[i] = n.ws
	}
	lo, hi, err := plan.ReadPortRange(plan.PortRangeFile)
	if err != nil {
		lo, hi = 32768, 60999
	}
	srcN := cfg.SrcAddrs
	if srcN <= 0 {
		perNode := (cfg.conns() + len(nodes) - 1) / len(nodes)
		srcN, _ = plan.AddrsFor(perNode, hi-lo+1)
		srcN = max(srcN, 2)
	}
	src := plan.LoopbackAddrs(srcN, 100)
	st.connect.conns = cfg.conns()
	if la, err := procstat.LoadAvg("/proc/loadavg"); err == nil {
		st.connect.loadAvg = la
	}
	counts := make([]atomic.Int64, k)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, c := range st.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case ev, ok := <-c.Events():
					if !ok {
						return
					}
					if ev.Event == "progress" {
						if p, err := decode[progressEvent](ev.Data); err == nil {
							counts[i].Store(p.Established)
						}
					}
				case <-done:
					return
				}
			}
		}()
	}
	replies := make([]connectReply, k)
	errCh := make(chan error, 1)
	start := time.Now()
	go func() {
		first, firstA := 0, 0
		ranges := make([][2]userRange, k)
		for i := range k {
			ranges[i] = [2]userRange{{First: first, Count: custs[i]}, {First: firstA, Count: agents[i]}}
			first += custs[i]
			firstA += agents[i]
		}
		errCh <- ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
			a := connectArgs{
				Nodes: nodes, Src: src, Customers: ranges[i][0], Agents: ranges[i][1],
				AgentCap: cfg.AgentCap, AgentSkills: cfg.AgentSkills, TierMix: cfg.TierMix,
				Concurrency: cfg.ConnectConcurrency, TimeoutMS: int(cfg.ConnectTimeout / time.Millisecond),
				TokenTTLSec: 24 * 3600, Reconnect: true, MsgSize: cfg.MsgSize,
			}
			if i == 0 && cfg.Isolation {
				a.Flooders = userRange{First: 0, Count: 1}
			}
			return c.Call(ctx, "connect", a, &replies[i])
		})
	}()
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	var cerr error
wait:
	for {
		select {
		case cerr = <-errCh:
			break wait
		case <-tk.C:
			var n int64
			for i := range counts {
				n += counts[i].Load()
			}
			el := time.Since(start)
			eta := "?"
			if n > 0 {
				eta = time.Duration(float64(el) * float64(int64(cfg.conns())-n) / float64(n)).Round(time.Second).String()
			}
			st.logf("connecting: %d/%d established, %s elapsed, ETA %s", n, cfg.conns(), el.Round(time.Second), eta)
		}
	}
	close(done)
	wg.Wait()
	if cerr != nil {
		return cerr
	}
	for _, r := range replies {
		st.connect.established += r.Established
		st.connect.failed += r.Failed
		st.connect.seconds = math.Max(st.connect.seconds, r.Seconds)
		for _, e := range r.Errors {
			st.logf("connect error: %s", e)
		}
	}
	st.logf("connected: %d/%d in %.1fs (%d failed)", st.connect.established, cfg.conns(), st.connect.seconds, st.connect.failed)
	if st.connect.established < cfg.conns() {
		return fmt.Errorf("only %d of %d connections established", st.connect.established, cfg.conns())
	}
	if err := ctl.Sleep(ctx, time.Second); err != nil {
		return err
	}
	for _, n := range st.nodes {
		if s, err := n.sample(); err == nil {
			st.connect.rssConnected += s.RSSBytes
		}
	}
	return nil
}

// --- sampling -------------------------------------------------------------

// tick samples every load generator and server process once and appends
// the result to the series under phase.
func (st *runState) tick(ctx context.Context, phase string) (sample, error) {
	replies := make([]tickReply, len(st.clients))
	err := ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
		return c.Call(ctx, "tick", nil, &replies[i])
	})
	if err != nil {
		return sample{}, err
	}
	now := time.Since(st.startAt).Seconds()
	s := sample{T: now, Phase: phase, Errors: map[string]int64{}}
	if len(st.series) > 0 {
		s.Dt = now - st.series[len(st.series)-1].T
	} else {
		s.Dt = now
	}
	if st.lastCli == nil {
		st.lastCli = make([]float64, len(replies))
	}
	for i, r := range replies {
		s.C2A.Merge(r.C2A)
		s.A2C.Merge(r.A2C)
		s.Ack.Merge(r.Ack)
		s.Flood.Merge(r.Flood)
		addCounters(&s.Cnt, r.Counters)
		for k, v := range r.Errors {
			s.Errors[k] += v
		}
		s.Up += r.Up
		s.Pairs += r.Pairs
		s.Pending += r.Pending
		s.Waiting += r.Waiting
		s.Unresolved += r.Unresolved
		s.ClientCPU += math.Max(r.CPUSeconds-st.lastCli[i], 0)
		st.lastCli[i] = r.CPUSeconds
		s.FirstOfferNS = minNonZero(s.FirstOfferNS, r.FirstOfferNS)
		s.FirstAckNS = minNonZero(s.FirstAckNS, r.FirstAckNS)
		s.Reconnects = append(s.Reconnects, r.Reconnects...)
	}
	for _, n := range st.nodes {
		ps, err := n.sample()
		if err != nil {
			continue
		}
		s.NodesAlive++
		s.ServerRSS += ps.RSSBytes
		s.ServerCPU += st.cpuDelta(n.name+strconv.Itoa(n.current().pid()), ps.CPUSeconds)
	}
	if st.redis != nil {
		if ps, err := procstat.Proc(st.redis.pid()); err == nil {
			s.StoreCPU += st.cpuDelta("redis", ps.CPUSeconds)
		}
	}
	if st.pg != nil {
		if ps, err := st.pg.sample(); err == nil {
			s.StoreCPU += st.cpuDelta("postgres", ps.CPUSeconds)
		}
	}
	st.series = append(st.series, s)
	return s, nil
}

// cpuDelta returns the CPU used by process key since its last sample (a
// restarted process starts a new key).
func (st *runState) cpuDelta(key string, cum float64) float64 {
	prev, ok := st.lastCPU[key]
	st.lastCPU[key] = cum
	if !ok {
		return 0
	}
	return math.Max(cum-prev, 0)
}

func minNonZero(a, b int64) int64 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	default:
		return min(a, b)
	}
}

func addCounters(dst *counters, c counters) {
	dst.Started += c.Started
	dst.StartSkipped += c.StartSkipped
	dst.Queued += c.Queued
	dst.Offers += c.Offers
	dst.OffersExpired += c.OffersExpired
	dst.AssignedC += c.AssignedC
	dst.AssignedA += c.AssignedA
	dst.ResolvedC += c.ResolvedC
	dst.Positions += c.Positions
	dst.OfferedNotices += c.OfferedNotices
	dst.SentC += c.SentC
	dst.SentA += c.SentA
	dst.SentFlood += c.SentFlood
	dst.Skipped += c.Skipped
	dst.Retried += c.Retried
	dst.Acked += c.Acked
	dst.RecvC2A += c.RecvC2A
	dst.RecvA2C += c.RecvA2C
	dst.RecvFlood += c.RecvFlood
	dst.RecvSelf += c.RecvSelf
	dst.TypingSent += c.TypingSent
	dst.TypingRecv += c.TypingRecv
	dst.DupLive += c.DupLive
	dst.Resumes += c.Resumes
	dst.Errors += c.Errors
	dst.BadFrames += c.BadFrames
	dst.Dropped += c.Dropped
	dst.Reconnected += c.Reconnected
	dst.Other += c.Other
	dst.CommandRetries += c.CommandRetries
}

// segment runs for d, ticking every second under phase and calling each
// (if set) after every tick with the time elapsed; each returning true ends
// the segment early. It prints progress with an ETA every 5 seconds.
func (st *runState) segment(ctx context.Context, phase string, d time.Duration, each func(el time.Duration, s sample) bool) error {
	start := time.Now()
	sp := span{name: phase, start: start.UnixNano()}
	if _, err := st.tick(ctx, "gap"); err != nil { // a clean window start
		return err
	}
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	lastPrint := start
	defer func() {
		sp.end = time.Now().UnixNano()
		st.phases = append(st.phases, sp)
		st.doneSoFar += d
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tk.C:
		}
		s, err := st.tick(ctx, phase)
		if err != nil {
			return err
		}
		el := time.Since(start)
		if time.Since(lastPrint) >= 5*time.Second || el >= d {
			lastPrint = time.Now()
			st.progress(phase, el, d, s)
		}
		if each != nil && each(el, s) {
			return nil
		}
		if el >= d {
			return nil
		}
	}
}

func (st *runState) progress(phase string, el, d time.Duration, s sample) {
	runLeft := max(st.planned-st.doneSoFar-el, 0)
	rate := 0.0
	if s.Dt > 0 && len(st.series) >= 2 {
		prev := st.series[len(st.series)-2].Cnt
		rate = float64(s.Cnt.RecvC2A+s.Cnt.RecvA2C-prev.RecvC2A-prev.RecvA2C) / s.Dt
	}
	var msg hist.Snapshot
	msg.Merge(s.C2A)
	msg.Merge(s.A2C)
	cores, ccores := 0.0, 0.0
	if s.Dt > 0 {
		cores, ccores = s.ServerCPU/s.Dt, s.ClientCPU/s.Dt
	}
	c := s.Cnt
	st.logf("[%s] %s/%s, run ETA %s: %.0f msgs/s, p99 %.1f ms, ack p99 %.1f ms; %d conversations (started %d, queued %d, offered %d, assigned %d, resolved %d, no idle customer %d); %d conns up, %d acks pending; server %.2f cores, load generators %.2f, %d nodes up",
		phase, el.Round(time.Second), d, runLeft.Round(time.Second), rate, ms(msg.Quantile(0.99)), ms(s.Ack.Quantile(0.99)),
		s.Pairs/2, c.Started, c.Queued, c.Offers, c.AssignedC, c.ResolvedC, c.StartSkipped, s.Up, s.Pending, cores, ccores, s.NodesAlive)
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

// configure sends the traffic parameters to every load generator, giving
// each its share of the conversation rate.
func (st *runState) configure(ctx context.Context, convRate, rate float64, sending bool, warmEnd time.Time) error {
	shares := plan.Split(int(math.Round(convRate*1000)), len(st.clients))
	return ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
		p := params{
			ConvRate: float64(shares[i]) / 1000, PairRate: st.cfg.pairRate(rate), TypingFrac: st.cfg.TypingFrac,
			ConvDurMS: st.cfg.ConvDuration.Milliseconds(), Sending: sending,
		}
		if !warmEnd.IsZero() {
			p.WarmEndNS = warmEnd.UnixNano()
		}
		return c.Call(ctx, "configure", p, nil)
	})
}

func (st *runState) callAll(ctx context.Context, cmd string, args any) error {
	return ctl.ForEach(st.clients, func(_ int, c *ctl.Child) error { return c.Call(ctx, cmd, args, nil) })
}
