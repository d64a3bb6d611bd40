package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/switchboard-go/switchboard/bench/internal/ctl"
	"github.com/switchboard-go/switchboard/bench/internal/hist"
	"github.com/switchboard-go/switchboard/bench/internal/logw"
	"github.com/switchboard-go/switchboard/bench/internal/plan"
	"github.com/switchboard-go/switchboard/bench/internal/procstat"
)

// config is everything the coordinator needs for one run.
type config struct {
	Self                   string   // executable re-run for the children
	ChildEnv               []string // extra environment for the children (tests)
	ClientProcs            int      // GOMAXPROCS of each load generator; 0: clientProcs
	Targets                []string
	Scenarios              []string
	Conns                  int
	Servers, Clients       int
	Headroom               int
	SrcAddrs, DstAddrs     int
	ConnectConcurrency     int
	ConnectTimeout         time.Duration
	Settle                 time.Duration
	Rate                   float64
	Duration               time.Duration
	Size                   int
	Repeats                int
	BroadcastTimeout       time.Duration
	ChurnRate              float64
	ChurnDuration          time.Duration
	LeakRSSTolerance       float64
	LeakGoroutineTolerance int
	JSON                   bool
	HTML                   string
	Strict                 bool
}

var knownScenarios = []string{"idle", "echo", "broadcast", "churn"}

func (c *config) validate() error {
	if c.Conns < 1 {
		return fmt.Errorf("-conns must be positive, got %d", c.Conns)
	}
	if len(c.Targets) == 0 {
		return errors.New("-targets is empty")
	}
	for _, t := range c.Targets {
		if _, ok := targetFactories[t]; !ok {
			return fmt.Errorf("-targets: unknown target %q (built: %s)", t, strings.Join(targetNames(), ", "))
		}
	}
	if len(c.Scenarios) == 0 {
		return errors.New("-scenarios is empty")
	}
	for _, s := range c.Scenarios {
		if !slices.Contains(knownScenarios, s) {
			return fmt.Errorf("-scenarios: unknown scenario %q (known: %s)", s, strings.Join(knownScenarios, ", "))
		}
	}
	if c.Size < headerLen {
		return fmt.Errorf("-size must be at least %d, got %d", headerLen, c.Size)
	}
	if c.Repeats < 1 {
		return fmt.Errorf("-repeats must be positive, got %d", c.Repeats)
	}
	if c.ConnectConcurrency < 1 {
		return fmt.Errorf("-connect-concurrency must be positive, got %d", c.ConnectConcurrency)
	}
	return nil
}

// Result is one target × scenario row. The JSON keys are the harness's
// public output format (see bench/README.md).
type Result struct {
	Target   string `json:"target"`
	Scenario string `json:"scenario"`

	Conns          int     `json:"conns"`
	Established    int     `json:"established"`
	Failed         int     `json:"failed"`
	Servers        int     `json:"servers"`
	Clients        int     `json:"clients"`
	ConnectSeconds float64 `json:"connect_seconds"`
	LoadAvg1m      float64 `json:"load_avg_1m"` // the machine's 1-minute load average when the target started

	ServerRSSBytes     int64   `json:"server_rss_bytes"`      // summed over server processes, after GC + FreeOSMemory
	ServerRSSRawBytes  int64   `json:"server_rss_raw_bytes"`  // the same, read before the GC
	ServerRSSBaseBytes int64   `json:"server_rss_base_bytes"` // before any connection
	RSSPerConnBytes    float64 `json:"rss_per_conn_bytes"`    // (rss - base) / established
	ServerGoroutines   int64   `json:"server_goroutines"`
	ServerHeapInuse    int64   `json:"server_heap_inuse_bytes"`
	GCPauseP99MS       float64 `json:"gc_pause_p99_ms"`
	ServerCPUSeconds   float64 `json:"server_cpu_seconds"` // during this scenario
	ClientCPUSeconds   float64 `json:"client_cpu_seconds"` // during this scenario
	DurationSeconds    float64 `json:"duration_seconds"`

	P50MS        float64 `json:"p50_ms"`  // echo: round trip; broadcast: per-delivery latency
	P99MS        float64 `json:"p99_ms"`  //
	P999MS       float64 `json:"p999_ms"` //
	MaxMS        float64 `json:"max_ms"`
	MsgsPerSec   float64 `json:"msgs_per_sec"` // messages received by clients per second
	Sent         int64   `json:"sent"`
	Received     int64   `json:"received"`
	BroadcastP50 float64 `json:"broadcast_p50_ms"` // completion (last delivery) over repeats
	BroadcastP99 float64 `json:"broadcast_p99_ms"`
	Repeats      int     `json:"broadcast_repeats,omitempty"`

	ChurnClosed          int64 `json:"churn_closed,omitempty"`
	ChurnOpened          int64 `json:"churn_opened,omitempty"`
	ChurnFailed          int64 `json:"churn_failed,omitempty"`
	ChurnRSSBeforeBytes  int64 `json:"churn_rss_before_bytes,omitempty"`
	ChurnRSSAfterBytes   int64 `json:"churn_rss_after_bytes,omitempty"`
	GoroutinesBase       int64 `json:"goroutines_base,omitempty"`
	GoroutinesAfterClose int64 `json:"goroutines_after_close,omitempty"`
	LeakOK               *bool `json:"leak_ok,omitempty"`

	Dropped     int64 `json:"dropped"`      // connections the server or network closed during the scenario
	BadMessages int64 `json:"bad_messages"` // messages clients could not parse

	Error string `json:"error,omitempty"`

	latency      hist.Snapshot
	connectCurve []curvePoint
}

type curvePoint struct {
	Seconds     float64
	Established int64
}

// runState is one target's processes and what is known about them.
type runState struct {
	cfg      config
	target   string
	log      io.Writer
	plan     plan.Plan
	group    *ctl.Group
	servers  []*ctl.Child
	clients  []*ctl.Child
	srvAddrs [][]string
	src      []string

	base       []serverStats
	connectRes Result // connection figures shared by every scenario row
	curve      []curvePoint
}

// coordinate runs every target in turn and returns their rows. A failing
// target is recorded with Error set and the next target still runs, unless
// ctx is cancelled.
func coordinate(ctx context.Context, cfg config, log io.Writer) ([]Result, error) {
	log = logw.Locked(log)
	soft, _, err := plan.NoFile()
	if err != nil {
		return nil, err
	}
	per := plan.PerProcess(soft, cfg.Headroom)
	p, err := plan.Make(cfg.Conns, per, cfg.Servers, cfg.Clients)
	if err != nil {
		return nil, err
	}
	lo, hi, changed, err := plan.WidenPortRange(plan.PortRangeFile, 1024, 65535)
	if err != nil {
		fmt.Fprintf(log, "wsbench: ip_local_port_range: %v (continuing)\n", err)
		lo, hi = 32768, 60999
	}
	portRange := hi - lo + 1
	maxPerServer := slices.Max(p.PerServer)
	src, dst := plan.AddrsFor(maxPerServer, portRange)
	if cfg.SrcAddrs > 0 {
		src = cfg.SrcAddrs
	}
	if cfg.DstAddrs > 0 {
		dst = cfg.DstAddrs
	}
	fmt.Fprintf(log, "wsbench: RLIMIT_NOFILE=%d → ≤%d conns/process; %d conns → %d server + %d client processes per target; ports %d-%d%s; %d src × %d dst loopback addrs\n",
		soft, per, cfg.Conns, p.Servers, p.Clients, lo, hi, map[bool]string{true: " (widened)", false: ""}[changed], src, dst)

	var results []Result
	for _, t := range cfg.Targets {
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
		rs, err := runTarget(ctx, cfg, t, p, src, dst, log)
		results = append(results, rs...)
		if err != nil {
			if ctx.Err() != nil {
				return results, ctx.Err()
			}
			fmt.Fprintf(log, "wsbench: target %s: %v\n", t, err)
			results = append(results, Result{Target: t, Scenario: "error", Conns: cfg.Conns, Error: err.Error()})
		}
	}
	return results, nil
}

func runTarget(ctx context.Context, cfg config, target string, p plan.Plan, nsrc, ndst int, log io.Writer) ([]Result, error) {
	st := &runState{cfg: cfg, target: target, log: log, plan: p, group: &ctl.Group{}}
	defer st.group.Close()
	st.src = plan.LoopbackAddrs(nsrc, 0)
	dstIPs := plan.LoopbackAddrs(ndst, 0)
	listen := make([]string, len(dstIPs))
	for i, ip := range dstIPs {
		listen[i] = ip + ":0"
	}
	if la, err := procstat.LoadAvg("/proc/loadavg"); err == nil {
		st.connectRes.LoadAvg1m = la
	}
	fmt.Fprintf(log, "[%s] starting %d server and %d client processes (load average %.2f)\n", target, p.Servers, p.Clients, st.connectRes.LoadAvg1m)
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i := range p.Servers {
		c, err := st.group.Start(fmt.Sprintf("%s-server-%d", target, i), cfg.Self,
			[]string{"-role", "server", "-target", target, "-addrs", strings.Join(listen, ",")}, cfg.ChildEnv, logw.Prefix(log, fmt.Sprintf("[%s-server-%d] ", target, i)))
		if err != nil {
			return nil, err
		}
		st.servers = append(st.servers, c)
	}
	procs := strconv.Itoa(cfg.ClientProcs)
	if cfg.ClientProcs <= 0 {
		procs = strconv.Itoa(clientProcs(runtime.NumCPU(), p.Clients))
	}
	for i := range p.Clients {
		c, err := st.group.Start(fmt.Sprintf("%s-client-%d", target, i), cfg.Self,
			[]string{"-role", "client", "-procs", procs}, cfg.ChildEnv, logw.Prefix(log, fmt.Sprintf("[%s-client-%d] ", target, i)))
		if err != nil {
			return nil, err
		}
		st.clients = append(st.clients, c)
	}
	for _, c := range st.servers {
		ev, err := c.WaitEvent(startCtx, "ready")
		if err != nil {
			return nil, err
		}
		var r readyEvent
		if err := jsonUnmarshal(ev.Data, &r); err != nil {
			return nil, err
		}
		st.srvAddrs = append(st.srvAddrs, r.Addrs)
	}
	for _, c := range st.clients {
		if _, err := c.WaitEvent(startCtx, "ready"); err != nil {
			return nil, err
		}
	}
	base, err := st.serverStats(ctx, true)
	if err != nil {
		return nil, err
	}
	st.base = base

	if err := st.connect(ctx); err != nil {
		return nil, err
	}
	var out []Result
	for _, sc := range cfg.Scenarios {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		fmt.Fprintf(log, "[%s] scenario %s\n", target, sc)
		r, err := st.runScenario(ctx, sc)
		if err != nil {
			r.Error = err.Error()
			fmt.Fprintf(log, "[%s] scenario %s: %v\n", target, sc, err)
		}
		out = append(out, r)
	}
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	// Teardown doubles as the leak check: every client connection closed,
	// the servers' goroutines must come back to their baseline.
	after, err := st.closeAndWaitBaseline(ctx)
	if err == nil {
		for i := range out {
			if out[i].Scenario == "churn" {
				out[i].GoroutinesAfterClose = after
				ok := out[i].LeakOK != nil && *out[i].LeakOK && after <= out[i].GoroutinesBase+int64(cfg.LeakGoroutineTolerance)
				out[i].LeakOK = &ok
			}
		}
	} else if ctx.Err() == nil {
		fmt.Fprintf(log, "[%s] teardown: %v\n", target, err)
	}
	shCtx, shCancel := context.WithTimeout(ctx, 30*time.Second)
	defer shCancel()
	for _, s := range st.servers {
		_ = s.Call(shCtx, "shutdown", nil, nil)
	}
	return out, nil
}

func jsonUnmarshal(b []byte, v any) error {
	if len(b) == 0 {
		return errors.New("empty reply")
	}
	return json.Unmarshal(b, v)
}

// serverStats asks every server for a sample, concurrently.
func (st *runState) serverStats(ctx context.Context, gc bool) ([]serverStats, error) {
	out := make([]serverStats, len(st.servers))
	err := ctl.ForEach(st.servers, func(i int, c *ctl.Child) error {
		return c.Call(ctx, "stats", statsArgs{GC: gc}, &out[i])
	})
	return out, err
}

func (st *runState) clientStats(ctx context.Context) ([]clientStats, error) {
	out := make([]clientStats, len(st.clients))
	err := ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
		return c.Call(ctx, "stats", nil, &out[i])
	})
	return out, err
}

func (st *runState) connect(ctx context.Context) error {
	counts := make([]atomic.Int64, len(st.clients))
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
						var p progressEvent
						if jsonUnmarshal(ev.Data, &p) == nil {
							counts[i].Store(p.Established)
						}
					}
				case <-done:
					return
				}
			}
		}()
	}
	start := time.Now()
	total := func() int64 {
		var n int64
		for i := range counts {
			n += counts[i].Load()
		}
		return n
	}
	replies := make([]connectReply, len(st.clients))
	errCh := make(chan error, 1)
	go func() {
		errCh <- ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
			args := connectArgs{Src: st.src, Concurrency: st.cfg.ConnectConcurrency, TimeoutMS: int(st.cfg.ConnectTimeout / time.Millisecond),
				Proto: targetProtocols[st.target]}
			for s, n := range st.plan.Matrix[i] {
				if n > 0 {
					args.Targets = append(args.Targets, dialTarget{Addrs: st.srvAddrs[s], Count: n})
				}
			}
			return c.Call(ctx, "connect", args, &replies[i])
		})
	}()
	tk := time.NewTicker(250 * time.Millisecond)
	defer tk.Stop()
	st.curve = []curvePoint{{0, 0}}
	lastPrint := time.Now()
	var err error
wait:
	for {
		select {
		case err = <-errCh:
			break wait
		case <-tk.C:
			el := time.Since(start)
			n := total()
			st.curve = append(st.curve, curvePoint{el.Seconds(), n})
			if time.Since(lastPrint) >= time.Second {
				lastPrint = time.Now()
				eta := "?"
				if n > 0 {
					eta = (time.Duration(float64(el) * float64(int64(st.cfg.Conns)-n) / float64(n))).Round(100 * time.Millisecond).String()
				}
				fmt.Fprintf(st.log, "[%s] connecting: %d/%d established, %s elapsed, ETA %s\n", st.target, n, st.cfg.Conns, el.Round(100*time.Millisecond), eta)
			}
		}
	}
	close(done)
	wg.Wait()
	if err != nil {
		return err
	}
	r := &st.connectRes
	r.Conns, r.Servers, r.Clients = st.cfg.Conns, st.plan.Servers, st.plan.Clients
	for _, rep := range replies {
		r.Established += rep.Established
		r.Failed += rep.Failed
		r.ConnectSeconds = math.Max(r.ConnectSeconds, rep.Seconds)
		for _, e := range rep.Errors {
			fmt.Fprintf(st.log, "[%s] connect error: %s\n", st.target, e)
		}
	}
	st.curve = append(st.curve, curvePoint{r.ConnectSeconds, int64(r.Established)})
	fmt.Fprintf(st.log, "[%s] connected: %d/%d established, %d failed, in %.2fs\n", st.target, r.Established, r.Conns, r.Failed, r.ConnectSeconds)
	if r.Established == 0 {
		return errors.New("no connection established")
	}
	return nil
}

func sumCPU(ss []serverStats) float64 {
	var t float64
	for _, s := range ss {
		t += s.CPUSeconds
	}
	return t
}

func sumClientCPU(cs []clientStats) float64 {
	var t float64
	for _, s := range cs {
		t += s.CPUSeconds
	}
	return t
}

// fillServer copies summed server figures into r.
func (st *runState) fillServer(r *Result, ss []serverStats) {
	r.ServerRSSBytes, r.ServerRSSRawBytes, r.ServerGoroutines, r.ServerHeapInuse = 0, 0, 0, 0
	r.ServerRSSBaseBytes = 0
	for i, s := range ss {
		r.ServerRSSBytes += s.RSSBytes
		r.ServerRSSRawBytes += s.RawRSSBytes
		r.ServerGoroutines += s.Goroutines
		r.ServerHeapInuse += s.HeapInuseBytes
		r.GCPauseP99MS = math.Max(r.GCPauseP99MS, s.GCPauseP99Sec*1e3)
		if i < len(st.base) {
			r.ServerRSSBaseBytes += st.base[i].RSSBytes
		}
	}
	if r.Established > 0 {
		r.RSSPerConnBytes = float64(r.ServerRSSBytes-r.ServerRSSBaseBytes) / float64(r.Established)
	}
}

func (st *runState) runScenario(ctx context.Context, name string) (Result, error) {
	r := st.connectRes
	r.Target, r.Scenario = st.target, name
	r.connectCurve = st.curve
	cpu0, err := st.serverStats(ctx, false)
	if err != nil {
		return r, err
	}
	ccpu0, err := st.clientStats(ctx)
	if err != nil {
		return r, err
	}
	start := time.Now()
	stopProgress := st.scenarioProgress(name, start)
	defer stopProgress()
	switch name {
	case "idle":
		err = ctl.Sleep(ctx, st.cfg.Settle)
	case "echo":
		err = st.echo(ctx, &r)
	case "broadcast":
		err = st.broadcast(ctx, &r)
	case "churn":
		err = st.churn(ctx, &r)
	}
	r.DurationSeconds = time.Since(start).Seconds()
	if err != nil {
		return r, err
	}
	// CPU before the measuring GC, so the forced collection is not billed.
	cpu1, err := st.serverStats(ctx, false)
	if err != nil {
		return r, err
	}
	ccpu1, err := st.clientStats(ctx)
	if err != nil {
		return r, err
	}
	r.ServerCPUSeconds = sumCPU(cpu1) - sumCPU(cpu0)
	r.ClientCPUSeconds = sumClientCPU(ccpu1) - sumClientCPU(ccpu0)
	ss, err := st.serverStats(ctx, true)
	if err != nil {
		return r, err
	}
	var live int64
	for i, c := range ccpu1 {
		live += c.Established
		r.Dropped += c.Dropped - ccpu0[i].Dropped
		r.BadMessages += c.BadMessages - ccpu0[i].BadMessages
		if c.Dropped > ccpu0[i].Dropped {
			fmt.Fprintf(st.log, "[%s] %s: client %d: %d connections closed by the other side (reasons since start: %v)\n", st.target, name, i, c.Dropped-ccpu0[i].Dropped, c.DropErrors)
		}
	}
	r.Established = int(live)
	st.fillServer(&r, ss)
	return r, nil
}

// scenarioProgress prints elapsed time and ETA of timed scenarios to the
// log every 5 s until the returned function is called.
func (st *runState) scenarioProgress(name string, start time.Time) func() {
	var total time.Duration
	switch name {
	case "idle":
		total = st.cfg.Settle
	case "echo":
		total = st.cfg.Duration
	case "churn":
		total = st.cfg.ChurnDuration + st.cfg.Settle
	}
	if total < 10*time.Second {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(5 * time.Second)
		defer tk.Stop()
		for {
			select {
			case <-done:
				return
			case <-tk.C:
				el := time.Since(start)
				fmt.Fprintf(st.log, "[%s] %s: %s elapsed, ETA %s\n", st.target, name,
					el.Round(time.Second), max(total-el, 0).Round(time.Second))
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
}

func ms(ns int64) float64 { return float64(ns) / 1e6 }

func (st *runState) echo(ctx context.Context, r *Result) error {
	shares := plan.Split(int(math.Round(st.cfg.Rate*1000)), len(st.clients))
	replies := make([]echoReply, len(st.clients))
	err := ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
		return c.Call(ctx, "echo", echoArgs{
			Rate: float64(shares[i]) / 1000, DurationMS: int(st.cfg.Duration / time.Millisecond),
			Size: st.cfg.Size, DrainMS: 5000,
		}, &replies[i])
	})
	if err != nil {
		return err
	}
	var h hist.Snapshot
	var secs float64
	for _, rep := range replies {
		h.Merge(rep.RTT)
		r.Sent += rep.Sent
		r.Received += rep.Received
		secs = math.Max(secs, rep.Seconds)
	}
	r.latency = h
	r.P50MS, r.P99MS, r.P999MS, r.MaxMS = ms(h.Quantile(0.5)), ms(h.Quantile(0.99)), ms(h.Quantile(0.999)), ms(h.Max)
	if secs > 0 {
		r.MsgsPerSec = float64(r.Received) / secs
	}
	return nil
}

func (st *runState) broadcast(ctx context.Context, r *Result) error {
	var deliveries hist.Snapshot
	completions := make([]int64, 0, st.cfg.Repeats)
	start := time.Now()
	for rep := range st.cfg.Repeats {
		seq := uint32(rep + 1)
		if err := ctl.ForEach(st.clients, func(_ int, c *ctl.Child) error {
			return c.Call(ctx, "bcast_arm", bcastArmArgs{Seq: seq}, nil)
		}); err != nil {
			return err
		}
		if err := ctl.ForEach(st.servers, func(_ int, c *ctl.Child) error {
			var br broadcastReply
			return c.Call(ctx, "broadcast", broadcastArgs{Seq: seq, Size: st.cfg.Size}, &br)
		}); err != nil {
			return err
		}
		waits := make([]bcastWaitReply, len(st.clients))
		if err := ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
			return c.Call(ctx, "bcast_wait", bcastWaitArgs{Seq: seq, TimeoutMS: int(st.cfg.BroadcastTimeout / time.Millisecond)}, &waits[i])
		}); err != nil {
			return err
		}
		var round hist.Snapshot
		var expected int64
		for _, w := range waits {
			round.Merge(w.Latency)
			expected += w.Expected
			r.Received += w.Received
		}
		r.Sent += expected
		if st.cfg.Repeats >= 10 && seq%5 == 0 {
			fmt.Fprintf(st.log, "[%s] broadcast: %d/%d published, last completed in %.1f ms\n", st.target, seq, st.cfg.Repeats, ms(round.Max))
		}
		deliveries.Merge(round)
		completions = append(completions, round.Max)
		if round.Count < uint64(expected) {
			fmt.Fprintf(st.log, "[%s] broadcast %d: %d of %d delivered within %s\n", st.target, seq, round.Count, expected, st.cfg.BroadcastTimeout)
		}
		// Let the system quiesce between publishes.
		if err := ctl.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
	r.latency = deliveries
	r.Repeats = st.cfg.Repeats
	r.P50MS, r.P99MS, r.P999MS, r.MaxMS = ms(deliveries.Quantile(0.5)), ms(deliveries.Quantile(0.99)), ms(deliveries.Quantile(0.999)), ms(deliveries.Max)
	r.BroadcastP50, r.BroadcastP99 = ms(exactQuantile(completions, 0.5)), ms(exactQuantile(completions, 0.99))
	if el := time.Since(start).Seconds(); el > 0 {
		r.MsgsPerSec = float64(r.Received) / el
	}
	return nil
}

// exactQuantile returns the nearest-rank quantile of a small sample.
func exactQuantile(v []int64, q float64) int64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

func (st *runState) churn(ctx context.Context, r *Result) error {
	before, err := st.serverStats(ctx, true)
	if err != nil {
		return err
	}
	shares := plan.Split(int(math.Round(st.cfg.ChurnRate*1000)), len(st.clients))
	replies := make([]churnReply, len(st.clients))
	if err := ctl.ForEach(st.clients, func(i int, c *ctl.Child) error {
		return c.Call(ctx, "churn", churnArgs{Rate: float64(shares[i]) / 1000, DurationMS: int(st.cfg.ChurnDuration / time.Millisecond), Concurrency: st.cfg.ConnectConcurrency}, &replies[i])
	}); err != nil {
		return err
	}
	for _, rep := range replies {
		r.ChurnClosed += rep.Closed
		r.ChurnOpened += rep.Opened
		r.ChurnFailed += rep.Failed
	}
	if err := ctl.Sleep(ctx, st.cfg.Settle); err != nil {
		return err
	}
	after, err := st.serverStats(ctx, true)
	if err != nil {
		return err
	}
	var gBefore, gAfter int64
	for i := range before {
		r.ChurnRSSBeforeBytes += before[i].RSSBytes
		r.ChurnRSSAfterBytes += after[i].RSSBytes
		gBefore += before[i].Goroutines
		gAfter += after[i].Goroutines
	}
	var baseG int64
	for _, b := range st.base {
		baseG += b.Goroutines
	}
	r.GoroutinesBase = baseG
	// Connections that failed to reopen lower the goroutine count of a
	// goroutine-per-connection server; only growth is a leak.
	growth := float64(r.ChurnRSSAfterBytes - r.ChurnRSSBeforeBytes)
	ok := growth <= st.cfg.LeakRSSTolerance*float64(r.ChurnRSSBeforeBytes)+8<<20 &&
		gAfter <= gBefore+int64(st.cfg.LeakGoroutineTolerance)
	r.LeakOK = &ok
	if !ok {
		fmt.Fprintf(st.log, "[%s] churn: RSS %d → %d bytes, goroutines %d → %d\n", st.target, r.ChurnRSSBeforeBytes, r.ChurnRSSAfterBytes, gBefore, gAfter)
	}
	return nil
}

// closeAndWaitBaseline closes every client connection and waits (up to
// 15 s) for the servers' goroutine count to return to the pre-connection
// baseline; it returns the last count seen.
func (st *runState) closeAndWaitBaseline(ctx context.Context) (int64, error) {
	if err := ctl.ForEach(st.clients, func(_ int, c *ctl.Child) error {
		return c.Call(ctx, "close_all", nil, nil)
	}); err != nil {
		return 0, err
	}
	var baseG int64
	for _, b := range st.base {
		baseG += b.Goroutines
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ss, err := st.serverStats(ctx, false)
		if err != nil {
			return 0, err
		}
		var g int64
		for _, s := range ss {
			g += s.Goroutines
		}
		if g <= baseG+int64(st.cfg.LeakGoroutineTolerance) || time.Now().After(deadline) {
			return g, nil
		}
		if err := ctl.Sleep(ctx, 100*time.Millisecond); err != nil {
			return g, err
		}
	}
}

// checkStrict lists what makes a -strict run fail.
func checkStrict(rs []Result) []string {
	var out []string
	for _, r := range rs {
		id := r.Target + "/" + r.Scenario
		if r.Error != "" {
			out = append(out, id+": "+r.Error)
			continue
		}
		if r.Established < r.Conns {
			out = append(out, fmt.Sprintf("%s: %d of %d connections established", id, r.Established, r.Conns))
		}
		switch r.Scenario {
		case "echo", "broadcast":
			if r.Received < r.Sent || r.Sent == 0 {
				out = append(out, fmt.Sprintf("%s: %d of %d messages received", id, r.Received, r.Sent))
			}
		case "churn":
			if r.LeakOK == nil || !*r.LeakOK {
				out = append(out, fmt.Sprintf("%s: leak check failed (RSS %d → %d, goroutines base %d, after close %d)",
					id, r.ChurnRSSBeforeBytes, r.ChurnRSSAfterBytes, r.GoroutinesBase, r.GoroutinesAfterClose))
			}
			if r.ChurnOpened == 0 {
				out = append(out, id+": no connection churned")
			}
		}
	}
	return out
}

// clientProcs is the GOMAXPROCS of each load generator: the machine's CPUs
// shared among the clients, at least two. Several clients each running as
// many Ps and event loops as there are CPUs would only add scheduler
// wake-ups and thread hand-offs per message. A load generator runs one
// event loop fewer than it has Ps (nbclient.Pollers): an event loop idles
// inside epoll_wait holding its P, and when no P is idle Go's sysmon takes
// that P back on every tick of its 20µs-to-10ms loop, which keeps sysmon
// waking every 20µs.
func clientProcs(cpus, clients int) int {
	return max(2, cpus/max(clients, 1))
}
