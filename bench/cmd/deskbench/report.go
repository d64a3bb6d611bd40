package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/switchboard-go/switchboard/bench/internal/hist"
	"github.com/switchboard-go/switchboard/bench/internal/svgchart"
)

// Result is one row of the output: a measured phase, or the run's summary.
// The JSON keys are the harness's public format (bench/README.md): every
// row carries every key.
type Result struct {
	Setup          string  `json:"setup"`
	Phase          string  `json:"phase"`
	Nodes          int     `json:"nodes"`
	Customers      int     `json:"customers"`
	Agents         int     `json:"agents"`
	AgentCapacity  int     `json:"agent_capacity"`
	Waiting        int     `json:"waiting"`
	Conns          int     `json:"conns"`
	Established    int     `json:"established"`
	ConnectSeconds float64 `json:"connect_seconds"`
	Clients        int     `json:"clients"`
	LoadAvg1m      float64 `json:"load_avg_1m"`

	DurationSeconds float64 `json:"duration_seconds"`
	TargetRate      float64 `json:"target_rate"`  // chat messages/s asked, both directions
	MsgsPerSec      float64 `json:"msgs_per_sec"` // chat messages received by the other side per second
	SentPerSec      float64 `json:"sent_per_sec"`
	AckedPerSec     float64 `json:"acked_per_sec"`
	ActiveConvs     float64 `json:"active_convs"`
	ConvStarted     int64   `json:"conv_started"`
	ConvsPerSec     float64 `json:"convs_per_sec"`

	C2AP50MS  float64 `json:"c2a_p50_ms"`
	C2AP99MS  float64 `json:"c2a_p99_ms"`
	C2AP999MS float64 `json:"c2a_p999_ms"`
	A2CP50MS  float64 `json:"a2c_p50_ms"`
	A2CP99MS  float64 `json:"a2c_p99_ms"`
	A2CP999MS float64 `json:"a2c_p999_ms"`
	MsgP50MS  float64 `json:"msg_p50_ms"` // both directions
	MsgP99MS  float64 `json:"msg_p99_ms"`
	MsgP999MS float64 `json:"msg_p999_ms"`
	AckP50MS  float64 `json:"ack_p50_ms"`
	AckP99MS  float64 `json:"ack_p99_ms"`
	AckP999MS float64 `json:"ack_p999_ms"`

	TimeToOffer  map[string]quant `json:"time_to_offer_ms"`  // by tier (vip, premium, standard, all)
	TimeToAssign map[string]quant `json:"time_to_assign_ms"` // by tier

	PositionUpdates int64            `json:"position_updates"`
	PositionsPerSec float64          `json:"positions_per_sec"`
	TypingReceived  int64            `json:"typing_received"`
	Resumes         int64            `json:"resumes"`
	Errors          int64            `json:"errors"`
	ErrorCodes      map[string]int64 `json:"error_codes"`
	Dropped         int64            `json:"dropped"`

	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerCores      float64 `json:"server_cpu_cores"` // CPU seconds per second of the phase
	ServerCPUPerMsg  float64 `json:"server_cpu_us_per_msg"`
	ServerRSSBytes   int64   `json:"server_rss_bytes"`
	RSSPerConnBytes  float64 `json:"rss_per_conn_bytes"`
	StoreCPUSeconds  float64 `json:"store_cpu_seconds"` // redis + postgres (cluster)
	ClientCPUSeconds float64 `json:"client_cpu_seconds"`

	SweepRate           float64 `json:"sweep_rate"`
	SweepMaxRate        float64 `json:"sweep_max_rate"`
	IsolationP99BaseMS  float64 `json:"isolation_p99_base_ms"`
	IsolationP99FloodMS float64 `json:"isolation_p99_flood_ms"`
	IsolationRisePct    float64 `json:"isolation_rise_pct"`
	FloodSent           int64   `json:"flood_sent"`
	FloodReceived       int64   `json:"flood_received"`

	ChaosNode           string  `json:"chaos_node"`
	TakeoverSeconds     float64 `json:"takeover_seconds"`
	CoreTakeoverSeconds float64 `json:"core_takeover_seconds"`
	FlowRecoverySeconds float64 `json:"flow_recovery_seconds"`
	Reconnects          int     `json:"reconnects"`
	ReconnectP50MS      float64 `json:"reconnect_p50_ms"`
	ReconnectP99MS      float64 `json:"reconnect_p99_ms"`
	ReconnectMaxMS      float64 `json:"reconnect_max_ms"`

	EchoConns      int     `json:"echo_conns"`
	EchoRate       float64 `json:"echo_rate"`
	EchoP50MS      float64 `json:"echo_p50_ms"`
	EchoP99MS      float64 `json:"echo_p99_ms"`
	EchoP999MS     float64 `json:"echo_p999_ms"`
	EchoMsgsPerSec float64 `json:"echo_msgs_per_sec"`
	DeskVsEchoP99  float64 `json:"desk_vs_echo_p99"`
	EchoError      string  `json:"echo_error"`

	// Run totals from the join of every conversation's records (the same
	// in every row).
	RunAcked          int64 `json:"run_acked"`
	RunLost           int64 `json:"run_lost"`
	RunLostC2A        int64 `json:"run_lost_c2a"`
	RunLostA2C        int64 `json:"run_lost_a2c"`
	RunLostSelf       int64 `json:"run_lost_self"`
	RunMissedLive     int64 `json:"run_missed_live"`
	RunDuplicated     int64 `json:"run_duplicated"`
	RunUnanswered     int64 `json:"run_unanswered"`
	RunRecovered      int64 `json:"run_recovered"`
	RunAuditRecovered int64 `json:"run_audit_recovered"`
	LossOK            bool  `json:"loss_ok"`

	Targets  []targetCheck `json:"targets"`
	Profiles []string      `json:"profiles"`
	Error    string        `json:"error,omitempty"`

	phaseKey             string
	c2a, a2c, msg, ack   hist.Snapshot
	tto, tta             [4][]float64
	series               []sample
	chaosKillT, restartT float64
}

type targetCheck struct {
	Name string  `json:"name"`
	Want string  `json:"want"`
	Got  float64 `json:"got"`
	Met  bool    `json:"met"`
	Note string  `json:"note,omitempty"`
}

// baseRow fills what every row shares.
func (st *runState) baseRow(phase string, rate float64) Result {
	cfg := st.cfg
	r := Result{
		Setup: cfg.Setup, Phase: phase, Nodes: cfg.Nodes, Customers: cfg.Customers, Agents: cfg.Agents,
		AgentCapacity: cfg.AgentCap, Waiting: cfg.Waiting, Conns: st.connect.conns, Established: st.connect.established,
		ConnectSeconds: st.connect.seconds, Clients: len(st.clients), LoadAvg1m: st.connect.loadAvg, TargetRate: rate,
		ErrorCodes: map[string]int64{}, TimeToOffer: map[string]quant{}, TimeToAssign: map[string]quant{},
		Targets: []targetCheck{}, Profiles: []string{},
	}
	if st.connect.established > 0 {
		r.RSSPerConnBytes = float64(st.connect.rssConnected-st.connect.rssBase) / float64(st.connect.established)
	}
	r.ServerRSSBytes = st.connect.rssConnected
	r.series = st.series
	if st.chaos.killNS != 0 {
		r.chaosKillT = float64(st.chaos.killNS-st.startAt.UnixNano()) / 1e9
		if st.chaos.restartNS != 0 {
			r.restartT = float64(st.chaos.restartNS-st.startAt.UnixNano()) / 1e9
		}
	}
	return r
}

// aggregate sums the samples of phase key into a row named phase.
func (st *runState) aggregate(key, phase string, rate float64) Result {
	r := st.baseRow(phase, rate)
	r.phaseKey = key
	if phase == "sweep" {
		r.SweepRate = rate
	}
	first := -1
	var dur float64
	var pairs float64
	var cpu, store, client float64
	var rss int64
	n := 0
	for i, s := range st.series {
		if s.Phase != key {
			continue
		}
		if first < 0 {
			first = i
		}
		n++
		r.c2a.Merge(s.C2A)
		r.a2c.Merge(s.A2C)
		r.ack.Merge(s.Ack)
		dur += s.Dt
		pairs += float64(s.Pairs)
		cpu += s.ServerCPU
		store += s.StoreCPU
		client += s.ClientCPU
		rss = max(rss, s.ServerRSS)
	}
	if first <= 0 || dur <= 0 {
		r.Error = "no samples"
		return r
	}
	lastIdx := first
	for i := first; i < len(st.series) && st.series[i].Phase == key; i++ {
		lastIdx = i
	}
	a, b := st.series[first-1], st.series[lastIdx]
	d := func(x, y int64) int64 { return y - x }
	r.DurationSeconds = dur
	recv := d(a.Cnt.RecvC2A+a.Cnt.RecvA2C, b.Cnt.RecvC2A+b.Cnt.RecvA2C)
	r.MsgsPerSec = float64(recv) / dur
	r.SentPerSec = float64(d(a.Cnt.SentC+a.Cnt.SentA, b.Cnt.SentC+b.Cnt.SentA)) / dur
	r.AckedPerSec = float64(d(a.Cnt.Acked, b.Cnt.Acked)) / dur
	r.ActiveConvs = pairs / float64(n) / 2
	r.ConvStarted = d(a.Cnt.Started, b.Cnt.Started)
	r.ConvsPerSec = float64(r.ConvStarted) / dur
	r.PositionUpdates = d(a.Cnt.Positions, b.Cnt.Positions)
	r.PositionsPerSec = float64(r.PositionUpdates) / dur
	r.TypingReceived = d(a.Cnt.TypingRecv, b.Cnt.TypingRecv)
	r.Resumes = d(a.Cnt.Resumes, b.Cnt.Resumes)
	r.Errors = d(a.Cnt.Errors, b.Cnt.Errors)
	r.Dropped = d(a.Cnt.Dropped, b.Cnt.Dropped)
	r.FloodSent = d(a.Cnt.SentFlood, b.Cnt.SentFlood)
	r.FloodReceived = d(a.Cnt.RecvFlood, b.Cnt.RecvFlood)
	for k, v := range b.Errors {
		if dv := v - a.Errors[k]; dv > 0 {
			r.ErrorCodes[k] = dv
		}
	}
	r.ServerCPUSeconds, r.StoreCPUSeconds, r.ClientCPUSeconds = cpu, store, client
	r.ServerCores = cpu / dur
	if recv > 0 {
		r.ServerCPUPerMsg = cpu / float64(recv) * 1e6
	}
	if rss > 0 {
		r.ServerRSSBytes = rss
	}
	r.msg.Merge(r.c2a)
	r.msg.Merge(r.a2c)
	q := func(s hist.Snapshot) (float64, float64, float64) {
		return ms(s.Quantile(0.5)), ms(s.Quantile(0.99)), ms(s.Quantile(0.999))
	}
	r.C2AP50MS, r.C2AP99MS, r.C2AP999MS = q(r.c2a)
	r.A2CP50MS, r.A2CP99MS, r.A2CP999MS = q(r.a2c)
	r.MsgP50MS, r.MsgP99MS, r.MsgP999MS = q(r.msg)
	r.AckP50MS, r.AckP99MS, r.AckP999MS = q(r.ack)
	return r
}

// applyEcho copies the gateway echo's figures into every row.
func applyEcho(rows []Result, e echoResult) {
	for i := range rows {
		r := &rows[i]
		r.EchoConns, r.EchoRate, r.EchoP50MS, r.EchoP99MS, r.EchoP999MS, r.EchoMsgsPerSec = e.Conns, e.Rate, e.P50MS, e.P99MS, e.P999MS, e.MsgsPerSec
		r.EchoError = e.Err
		if e.P99MS > 0 && r.MsgP99MS > 0 {
			r.DeskVsEchoP99 = r.MsgP99MS / e.P99MS
		}
	}
}

// finishSummary checks the targets against the summary row.
func finishSummary(sum *Result, rows []Result, cfg config) {
	if sum.Phase != "summary" {
		return
	}
	add := func(name, want string, got float64, met bool, note string) {
		sum.Targets = append(sum.Targets, targetCheck{Name: name, Want: want, Got: got, Met: met, Note: note})
	}
	var steady *Result
	for i := range rows {
		if rows[i].Phase == "steady" {
			steady = &rows[i]
		}
	}
	if steady == nil {
		return
	}
	note := ""
	if cfg.Setup == "single" && sum.Customers < 100_000 {
		note = fmt.Sprintf("at %d customers, not 100,000: one process holds < RLIMIT_NOFILE connections", sum.Customers)
	}
	add("messages_per_sec", "≥ 10000 with send→receive P99 ≤ 50 ms", steady.MsgsPerSec,
		steady.MsgsPerSec >= 10_000 && steady.MsgP99MS <= 50 && sum.Customers >= 100_000, note)
	add("msg_p99_ms", "≤ 50", steady.MsgP99MS, steady.MsgP99MS <= 50, "")
	if sum.EchoP99MS > 0 {
		add("desk_vs_echo_p99", "≤ 3 (same connections and rate)", sum.DeskVsEchoP99, sum.DeskVsEchoP99 <= 3, "")
	}
	if q, ok := steady.TimeToOffer["all"]; ok && q.N > 0 {
		add("time_to_offer_p99_ms", "≤ 100 with an agent free", q.P99, q.P99 <= 100, "")
	}
	if cfg.Isolation {
		add("isolation_rise_pct", "< 20", sum.IsolationRisePct, sum.IsolationRisePct < 20, "")
	}
	add("losses", "0 lost, 0 duplicated", float64(sum.RunLost+sum.RunLostSelf+sum.RunDuplicated+sum.RunMissedLive), sum.LossOK, "")
	if cfg.Sweep {
		add("sweep_max_rate", "highest rate with P99 ≤ 50 ms", sum.SweepMaxRate, sum.SweepMaxRate > 0, "")
	}
}

// ---- text and JSON ----------------------------------------------------------

func writeJSONLines(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func writeTable(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\trate\tmsgs/s\tc→a p50/p99/p99.9 ms\ta→c p50/p99/p99.9 ms\tack p99 ms\toffer p50/p99 ms\tassign p99 ms\tconvs\tpositions/s\tsrv cores\tsrv µs/msg\terrors\t")
	for _, r := range rs {
		if r.Phase == "summary" {
			continue
		}
		o, a := r.TimeToOffer["all"], r.TimeToAssign["all"]
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.1f/%.1f/%.1f\t%.1f/%.1f/%.1f\t%.1f\t%.1f/%.1f\t%.1f\t%.0f\t%.0f\t%.2f\t%.0f\t%d\t\n",
			r.Phase, r.TargetRate, r.MsgsPerSec, r.C2AP50MS, r.C2AP99MS, r.C2AP999MS, r.A2CP50MS, r.A2CP99MS, r.A2CP999MS,
			r.AckP99MS, o.P50, o.P99, a.P99, r.ActiveConvs, r.PositionsPerSec, r.ServerCores, r.ServerCPUPerMsg, r.Errors)
	}
	_ = tw.Flush()
	for _, r := range rs {
		if r.Phase != "summary" {
			continue
		}
		fmt.Fprintf(w, "\n%s, %d node(s): %d customers + %d agents (capacity %d), %d waiting; %d/%d connected in %.1fs; server RSS %.1f MiB, %.0f B per connection\n",
			r.Setup, r.Nodes, r.Customers, r.Agents, r.AgentCapacity, r.Waiting, r.Established, r.Conns, r.ConnectSeconds, float64(r.ServerRSSBytes)/(1<<20), r.RSSPerConnBytes)
		fmt.Fprintf(w, "messages: %d acknowledged, %d lost (c→a %d, a→c %d, to sender %d), %d not delivered live, %d duplicated, %d unanswered, %d recovered by resume\n",
			r.RunAcked, r.RunLost, r.RunLostC2A, r.RunLostA2C, r.RunLostSelf, r.RunMissedLive, r.RunDuplicated, r.RunUnanswered, r.RunRecovered)
		for _, t := range []string{"vip", "premium", "standard"} {
			o, a := r.TimeToOffer[t], r.TimeToAssign[t]
			fmt.Fprintf(w, "  %-8s start→offer p50 %.1f p99 %.1f ms, start→assigned p50 %.1f p99 %.1f ms (%d conversations)\n", t, o.P50, o.P99, a.P50, a.P99, o.N)
		}
		if r.SweepMaxRate > 0 {
			fmt.Fprintf(w, "sweep: highest rate with P99 ≤ 50 ms: %.0f msgs/s\n", r.SweepMaxRate)
		}
		if r.IsolationP99BaseMS > 0 {
			fmt.Fprintf(w, "isolation: P99 %.1f ms without the flood, %.1f ms with it (%+.1f%%); flood %d sent, %d received\n",
				r.IsolationP99BaseMS, r.IsolationP99FloodMS, r.IsolationRisePct, r.FloodSent, r.FloodReceived)
		}
		if r.ChaosNode != "" {
			fmt.Fprintf(w, "chaos: %s SIGKILLed; takeover %.2fs (every dropped connection back), first offer after %.2fs, flow back after %.1fs; %d reconnects p50 %.0f p99 %.0f ms\n",
				r.ChaosNode, r.TakeoverSeconds, r.CoreTakeoverSeconds, r.FlowRecoverySeconds, r.Reconnects, r.ReconnectP50MS, r.ReconnectP99MS)
		}
		if r.EchoP99MS > 0 || r.EchoError != "" {
			fmt.Fprintf(w, "gateway echo (wsbench, %d conns, %.0f msgs/s): p50 %.2f p99 %.2f ms; desk P99 / echo P99 = %.2f %s\n",
				r.EchoConns, r.EchoRate, r.EchoP50MS, r.EchoP99MS, r.DeskVsEchoP99, r.EchoError)
		}
		for _, t := range r.Targets {
			mark := "MET"
			if !t.Met {
				mark = "MISSED"
			}
			fmt.Fprintf(w, "target %-22s %-7s got %.2f, want %s %s\n", t.Name, mark, t.Got, t.Want, t.Note)
		}
	}
}

// ---- HTML report ----------------------------------------------------------

func writeHTMLFile(path string, cfg config, rs []Result) error {
	var b bytes.Buffer
	writeHTML(&b, cfg, rs, time.Now())
	return os.WriteFile(path, b.Bytes(), 0o644)
}

var (
	percentileAxis   = []float64{0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1}
	percentileLabels = []string{"50", "75", "90", "95", "99", "99.5", "99.9", "99.99", "max"}
)

func writeHTML(w io.Writer, cfg config, rs []Result, now time.Time) {
	e := html.EscapeString
	var sum *Result
	for i := range rs {
		if rs[i].Phase == "summary" {
			sum = &rs[i]
		}
	}
	fmt.Fprintf(w, `<!doctype html><html><head><meta charset="utf-8"><title>deskbench</title>
<style>body{font:14px system-ui,sans-serif;margin:24px;max-width:1100px}table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f4f4f4}h2{margin-top:32px}
.miss{color:#b00}.met{color:#070}svg text{font:11px system-ui,sans-serif}</style></head><body>
<h1>deskbench — supportdesk end to end</h1>
<p>Setup %s, %d node(s); %d customers, %d agents (capacity %d), %d parked in the queue; %.0f conversations/s lasting %s; %.0f chat messages/s asked. Generated %s.</p>
`, e(cfg.Setup), cfg.Nodes, cfg.Customers, cfg.Agents, cfg.AgentCap, cfg.Waiting, cfg.ConvRate, cfg.ConvDuration, cfg.Rate, now.Format(time.RFC3339))
	if sum != nil {
		fmt.Fprintln(w, "<h2>Targets</h2><ul>")
		for _, t := range sum.Targets {
			cls, mark := "met", "met"
			if !t.Met {
				cls, mark = "miss", "missed"
			}
			fmt.Fprintf(w, `<li class="%s">%s: %s (got %.2f, want %s) %s</li>`+"\n", cls, e(t.Name), mark, t.Got, e(t.Want), e(t.Note))
		}
		fmt.Fprintf(w, "<li>messages: %d acknowledged, %d lost, %d not delivered live, %d duplicated</li></ul>\n",
			sum.RunAcked, sum.RunLost+sum.RunLostSelf, sum.RunMissedLive, sum.RunDuplicated)
	}
	if len(rs) == 0 {
		fmt.Fprintln(w, "</body></html>")
		return
	}
	series := rs[len(rs)-1].series
	var marks []svgchart.Mark
	if k := rs[len(rs)-1].chaosKillT; k > 0 {
		marks = append(marks, svgchart.Mark{X: k, Label: "SIGKILL"})
		if rt := rs[len(rs)-1].restartT; rt > 0 {
			marks = append(marks, svgchart.Mark{X: rt, Label: "restarted"})
		}
	}
	// Phase boundaries as marks on the timelines.
	prev := ""
	for _, s := range series {
		if s.Phase != prev && s.Phase != "gap" {
			if s.Phase == "steady" || strings.HasPrefix(s.Phase, "isolation") || s.Phase == "chaos" || s.Phase == "drain" {
				marks = append(marks, svgchart.Mark{X: s.T - s.Dt, Label: s.Phase})
			}
			prev = s.Phase
		}
	}
	lat := []svgchart.Series{{Name: "c→a p50"}, {Name: "c→a p99"}, {Name: "a→c p50"}, {Name: "a→c p99"}, {Name: "ack p99"}}
	rate := []svgchart.Series{{Name: "delivered msgs/s"}, {Name: "acks/s"}, {Name: "errors/s"}, {Name: "positions/s"}}
	res := []svgchart.Series{{Name: "server cores"}, {Name: "load-gen cores"}, {Name: "redis+pg cores"}}
	conns := []svgchart.Series{{Name: "connections up"}, {Name: "conversations"}}
	for i, s := range series {
		if i == 0 || s.Dt <= 0 || s.Phase == "gap" {
			continue
		}
		p := series[i-1].Cnt
		t := s.T
		add := func(ss []svgchart.Series, k int, v float64) { ss[k].Points = append(ss[k].Points, [2]float64{t, v}) }
		if s.C2A.Count > 0 {
			add(lat, 0, ms(s.C2A.Quantile(0.5)))
			add(lat, 1, ms(s.C2A.Quantile(0.99)))
		}
		if s.A2C.Count > 0 {
			add(lat, 2, ms(s.A2C.Quantile(0.5)))
			add(lat, 3, ms(s.A2C.Quantile(0.99)))
		}
		if s.Ack.Count > 0 {
			add(lat, 4, ms(s.Ack.Quantile(0.99)))
		}
		add(rate, 0, float64(s.Cnt.RecvC2A+s.Cnt.RecvA2C-p.RecvC2A-p.RecvA2C)/s.Dt)
		add(rate, 1, float64(s.Cnt.Acked-p.Acked)/s.Dt)
		add(rate, 2, float64(s.Cnt.Errors-p.Errors)/s.Dt)
		add(rate, 3, float64(s.Cnt.Positions-p.Positions)/s.Dt)
		add(res, 0, s.ServerCPU/s.Dt)
		add(res, 1, s.ClientCPU/s.Dt)
		if cfg.Setup == "cluster" {
			add(res, 2, s.StoreCPU/s.Dt)
		}
		add(conns, 0, float64(s.Up))
		add(conns, 1, float64(s.Pairs)/2)
	}
	fmt.Fprintln(w, "<h2>Message latency over time (per second)</h2>")
	svgchart.Line(w, lat, svgchart.LineOptions{XLabel: "seconds since start", YLabel: "milliseconds", Marks: marks, Thresholds: []svgchart.Threshold{{Y: 50, Label: "50 ms"}}})
	fmt.Fprintln(w, "<h2>Throughput and errors over time</h2><p>The chaos timeline: delivered messages and acks per second around the SIGKILL.</p>")
	svgchart.Line(w, rate, svgchart.LineOptions{XLabel: "seconds since start", YLabel: "per second", Marks: marks})
	fmt.Fprintln(w, "<h2>CPU over time</h2>")
	svgchart.Line(w, res, svgchart.LineOptions{XLabel: "seconds since start", YLabel: "cores", Marks: marks})
	fmt.Fprintln(w, "<h2>Connections and conversations over time</h2>")
	svgchart.Line(w, conns, svgchart.LineOptions{XLabel: "seconds since start", YLabel: "count", Marks: marks})

	// CDFs (latency by percentile) per measured phase.
	var cdf []svgchart.Series
	for _, r := range rs {
		if r.Phase == "summary" || r.Phase == "sweep" {
			continue
		}
		for _, h := range []struct {
			name string
			s    hist.Snapshot
		}{{r.Phase + " c→a", r.c2a}, {r.Phase + " a→c", r.a2c}, {r.Phase + " ack", r.ack}} {
			if h.s.Count == 0 {
				continue
			}
			ser := svgchart.Series{Name: h.name}
			for i, q := range percentileAxis {
				ser.Points = append(ser.Points, [2]float64{float64(i), ms(h.s.Quantile(q))})
			}
			cdf = append(cdf, ser)
		}
	}
	if len(cdf) > 0 {
		fmt.Fprintln(w, "<h2>Latency by percentile (send → receipt by the other side; ack)</h2>")
		svgchart.Line(w, cdf, svgchart.LineOptions{XLabel: "percentile", YLabel: "milliseconds", XTicks: percentileLabels})
	}
	for _, r := range rs {
		if r.Phase != "steady" {
			continue
		}
		var conv []svgchart.Series
		for i, t := range []string{"vip", "premium", "standard"} {
			for _, k := range []struct {
				name string
				v    []float64
			}{{t + " →offer", r.tto[i]}, {t + " →assigned", r.tta[i]}} {
				if len(k.v) == 0 {
					continue
				}
				s := append([]float64(nil), k.v...)
				sort.Float64s(s)
				ser := svgchart.Series{Name: k.name}
				for j, q := range percentileAxis {
					idx := min(int(math.Ceil(q*float64(len(s))))-1, len(s)-1)
					ser.Points = append(ser.Points, [2]float64{float64(j), s[max(idx, 0)]})
				}
				conv = append(conv, ser)
			}
		}
		if len(conv) > 0 {
			fmt.Fprintln(w, "<h2>Start → offer and → assigned, by tier (steady phase)</h2>")
			svgchart.Line(w, conv, svgchart.LineOptions{XLabel: "percentile", YLabel: "milliseconds", XTicks: percentileLabels, Thresholds: []svgchart.Threshold{{Y: 100, Label: "100 ms"}}})
		}
	}
	var sweep []svgchart.Series
	s99 := svgchart.Series{Name: "P99"}
	s50 := svgchart.Series{Name: "P50"}
	for _, r := range rs {
		if r.Phase == "sweep" {
			s99.Points = append(s99.Points, [2]float64{r.MsgsPerSec, r.MsgP99MS})
			s50.Points = append(s50.Points, [2]float64{r.MsgsPerSec, r.MsgP50MS})
		}
	}
	if len(s99.Points) > 0 {
		sweep = append(sweep, s50, s99)
		fmt.Fprintln(w, "<h2>Sweep: latency against delivered rate</h2>")
		svgchart.Line(w, sweep, svgchart.LineOptions{XLabel: "messages per second delivered", YLabel: "milliseconds", Thresholds: []svgchart.Threshold{{Y: 50, Label: "50 ms"}}})
	}
	if sum != nil && sum.EchoP99MS > 0 {
		var bars []svgchart.Bar
		for _, r := range rs {
			if r.Phase == "steady" {
				bars = append(bars, svgchart.Bar{Label: "desk P99 (one way)", Value: r.MsgP99MS, Text: fmt.Sprintf("%.2f ms", r.MsgP99MS)})
			}
		}
		bars = append(bars, svgchart.Bar{Label: "gateway echo P99 (round trip)", Value: sum.EchoP99MS, Text: fmt.Sprintf("%.2f ms", sum.EchoP99MS)})
		fmt.Fprintln(w, "<h2>Desk against the gateway's own echo (same connections, same rate)</h2>")
		svgchart.Bars(w, bars, "milliseconds")
	}

	fmt.Fprintln(w, "<h2>All figures</h2><table><tr>")
	cols := []string{"phase", "target_rate", "msgs_per_sec", "c2a_p50_ms", "c2a_p99_ms", "c2a_p999_ms", "a2c_p50_ms", "a2c_p99_ms", "a2c_p999_ms", "ack_p99_ms", "active_convs", "convs_per_sec", "positions_per_sec", "server_cpu_cores", "server_cpu_us_per_msg", "server_rss_bytes", "rss_per_conn_bytes", "errors", "run_lost", "run_duplicated"}
	for _, c := range cols {
		fmt.Fprintf(w, "<th>%s</th>", e(c))
	}
	fmt.Fprintln(w, "</tr>")
	for _, r := range rs {
		var m map[string]any
		raw, _ := json.Marshal(r)
		_ = json.Unmarshal(raw, &m)
		fmt.Fprint(w, "<tr>")
		for _, c := range cols {
			s := ""
			switch x := m[c].(type) {
			case float64:
				if x == math.Trunc(x) {
					s = fmt.Sprintf("%.0f", x)
				} else {
					s = fmt.Sprintf("%.2f", x)
				}
			case nil:
			default:
				s = fmt.Sprint(x)
			}
			fmt.Fprintf(w, "<td>%s</td>", e(s))
		}
		fmt.Fprintln(w, "</tr>")
	}
	fmt.Fprintln(w, "</table></body></html>")
}
