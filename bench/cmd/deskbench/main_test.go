package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/bench/internal/logw"
)

// The test binary doubles as the load generators: the coordinator under
// test re-executes it with DESKBENCH_TEST_CHILD=1 and -role client.
func TestMain(m *testing.M) {
	if os.Getenv("DESKBENCH_TEST_CHILD") == "1" {
		os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	goleak.VerifyTestMain(m,
		// nbio's package-level default engine starts a task pool at init.
		goleak.IgnoreTopFunction("github.com/lesismal/nbio/taskpool.New.func3"),
		// net/http's idle keep-alive connections to the nodes' ops listeners.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

func TestScanFrame(t *testing.T) {
	var f frame
	require.NoError(t, scanFrame([]byte(`{"type":"message","conv":"c5f0","id":"17","offset":12,"epoch":"t1","ts":1795656801002,"text":"0000000000000000042 xx","from":"a-bob","name":"Bob \"B\" {x}","role":"agent"}`), &f))
	assert.Equal(t, "message", string(f.typ))
	assert.Equal(t, "c5f0", string(f.conv))
	assert.Equal(t, "17", string(f.id))
	assert.EqualValues(t, 12, f.offset)
	assert.EqualValues(t, 1795656801002, f.ts)
	assert.Equal(t, "a-bob", string(f.from))
	assert.Equal(t, "t1", string(f.epoch))
	ts, ok := textSentNS(f.text)
	require.True(t, ok)
	assert.EqualValues(t, 42, ts)

	// Nested members are skipped, strings with escapes and brackets too.
	require.NoError(t, scanFrame([]byte(` { "type" : "hello", "convs":[{"conv":"x","state":"active","offset":3}], "from":"c1",
		"tiers":[{"tier":"vip","depth":1}], "message":"a ] } \\\" ,", "state":"online" } `), &f))
	assert.Equal(t, "hello", string(f.typ))
	assert.Empty(t, f.conv, "the nested conv is not the frame's")
	assert.Equal(t, "c1", string(f.from))
	assert.Equal(t, "online", string(f.state))

	require.NoError(t, scanFrame([]byte(`{"type":"error","code":"rate_limited","ref":"message:9","conv":"c1","message":"slow down","ts":1}`), &f))
	assert.Equal(t, "rate_limited", string(f.code))
	assert.Equal(t, "message:9", string(f.ref))

	for _, bad := range []string{``, `[]`, `{"type":`, `{"type":"x"`, `{"offset":1x}`, `{"a":[1,2}`, `{"a" 1}`} {
		assert.Error(t, scanFrame([]byte(bad), &f), bad)
	}
	frameBytes := []byte(`{"type":"ack","conv":"c1","id":"5","offset":7,"epoch":"t1","ts":12}`)
	assert.Zero(t, testing.AllocsPerRun(100, func() { _ = scanFrame(frameBytes, &f) }))
}

func FuzzScanFrame(f *testing.F) {
	f.Add([]byte(`{"type":"ack","conv":"c1","id":"5","offset":7,"ts":12}`))
	f.Add([]byte(`{"type":"hello","convs":[{"conv":"x"}],"from":"c"}`))
	f.Add([]byte(`{"a":"\"","type":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr frame
		if scanFrame(b, &fr) != nil {
			return
		}
		// Whatever the scanner accepts as a plain object with a plain
		// string type, encoding/json reads the same type from.
		var m map[string]any
		if json.Unmarshal(b, &m) != nil || bytes.ContainsAny(fr.typ, "\\") {
			return
		}
		if typ, ok := m["type"].(string); ok {
			assert.Equal(t, typ, string(fr.typ))
		}
	})
}

func TestMessagesAreValidJSON(t *testing.T) {
	msg := appendMessage(nil, "c1", 42, 1795656801002000000, 60)
	var e map[string]any
	require.NoError(t, json.Unmarshal(msg, &e), string(msg))
	assert.Equal(t, "message", e["type"])
	assert.Equal(t, "42", e["id"])
	assert.Len(t, e["text"], 60)
	ts, ok := textSentNS([]byte(e["text"].(string)))
	require.True(t, ok)
	assert.EqualValues(t, 1795656801002000000, ts)
	for _, b := range [][]byte{typingMsg("c1", "on"), acceptMsg("c1", "7f-1"), resolveMsg("c\"1"), cancelMsg("c1"),
		resumeMsg("c1", 9, "t1"), resumeMsg("c1", 0, ""), startMsg(""), startMsg("billing")} {
		assert.True(t, json.Valid(b), string(b))
	}
	buf := make([]byte, 0, 256)
	assert.Zero(t, testing.AllocsPerRun(100, func() { buf = appendMessage(buf[:0], "c1", 1, 1, 120) }))
}

func TestSignToken(t *testing.T) {
	secret := []byte("bench-secret-0123456789")
	tok, err := signToken(secret, tokenClaims{Sub: "c1", Name: "c1", Role: "customer", Tier: "vip", Exp: 1800000000})
	require.NoError(t, err)
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 3)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	assert.Equal(t, base64.RawURLEncoding.EncodeToString(m.Sum(nil)), parts[2])
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	require.NoError(t, err)
	var c map[string]any
	require.NoError(t, json.Unmarshal(payload, &c))
	assert.Equal(t, map[string]any{"sub": "c1", "name": "c1", "role": "customer", "tier": "vip", "exp": float64(1800000000)}, c)
	head, _ := base64.RawURLEncoding.DecodeString(parts[0])
	assert.JSONEq(t, `{"alg":"HS256","typ":"JWT"}`, string(head))
}

func TestOffsetSet(t *testing.T) {
	var s offsetSet
	assert.False(t, s.add(0))
	for _, o := range []uint64{1, 2, 3, 9, 64} {
		assert.True(t, s.add(o))
	}
	assert.False(t, s.add(3))
	assert.True(t, s.has(9))
	assert.False(t, s.has(10))
	assert.False(t, s.has(1000))
	assert.Equal(t, 5, s.count())
	assert.EqualValues(t, 64, s.maxOffset())
	var t2 offsetSet
	t2.add(1)
	t2.add(9)
	n, sample := s.minus(t2)
	assert.Equal(t, 3, n)
	assert.Equal(t, []uint64{2, 3, 64}, sample)
	b, err := json.Marshal(s.trim())
	require.NoError(t, err)
	var back offsetSet
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, 5, back.count())
	assert.True(t, back.has(64))
}

func set(offs ...uint64) offsetSet {
	var s offsetSet
	for _, o := range offs {
		s.add(o)
	}
	return s
}

func TestJoinCountsLossesAndDuplicates(t *testing.T) {
	reports := []reportReply{
		{Convs: []convReport{
			// Clean: customer sent 1, 3; agent 2, 4; both got everything.
			{Conv: "ok", Role: "c", Tier: 0, Start: 100, Assigned: 300, Resolved: 900, Acked: set(1, 3), Recv: set(1, 2, 3, 4), Live: set(1, 2, 3, 4)},
			// Lossy: the agent never got 3; the customer got 2 twice live.
			{Conv: "bad", Role: "c", Tier: 2, Start: 100, Assigned: 400, Resolved: 900, Acked: set(1, 3), Recv: set(1, 2, 3), Live: set(1, 2, 3), DupLive: 1},
			// Customer messages acknowledged, no agent record at all.
			{Conv: "orphan", Role: "c", Start: 100, Acked: set(1), Recv: set(1), Live: set(1)},
		}},
		{Convs: []convReport{
			{Conv: "ok", Role: "a", Offer: 150, Assigned: 290, Resolved: 900, Acked: set(2, 4), Recv: set(1, 2, 3, 4), Live: set(1, 2, 3, 4)},
			// An expired offer to another agent first.
			{Conv: "bad", Role: "a", Offer: 120},
			{Conv: "bad", Role: "a", Offer: 200, Assigned: 390, Resolved: 900, Acked: set(2), Recv: set(1, 2), Live: set(1)},
		}},
	}
	jr := join(reports)
	assert.EqualValues(t, 8, jr.acked)
	assert.EqualValues(t, 2, jr.lostC2A, "offset 3 of bad, offset 1 of orphan")
	assert.EqualValues(t, 0, jr.lostA2C)
	assert.EqualValues(t, 1, jr.dupLive)
	assert.EqualValues(t, 1, jr.missedLive, "bad's 3 never reached the agent (live or not)")
	assert.Equal(t, 1, jr.noAgentRecord)
	require.Len(t, jr.convs, 3)
	byID := map[string]joinedConv{}
	for _, c := range jr.convs {
		byID[c.conv] = c
	}
	assert.EqualValues(t, 120, byID["bad"].offer, "the first offer counts")
	assert.EqualValues(t, 150, byID["ok"].offer)

	st := &runState{phases: []span{{name: "steady", start: 0, end: 1000}}}
	r := Result{phaseKey: "steady"}
	st.fillConvTimes(&r, jr)
	assert.Equal(t, 2, r.TimeToOffer["all"].N)
	assert.Equal(t, 1, r.TimeToOffer["vip"].N)
	assert.InDelta(t, 50e-6, r.TimeToOffer["vip"].P50, 1e-9, "150-100 ns in ms")
	assert.Equal(t, 2, r.TimeToAssign["all"].N)

	setRunTotals(&r, jr)
	assert.False(t, r.LossOK)
	problems := checkStrict([]Result{func() Result { r.Phase = "summary"; return r }()}, false)
	assert.NotEmpty(t, problems)
}

func TestConfigValidate(t *testing.T) {
	good := func() config {
		return config{Setup: "single", Customers: 200, Agents: 10, AgentCap: 3, TierMix: [3]float64{0.1, 0.3, 0.6},
			ConvRate: 2, ConvDuration: 10 * time.Second, Rate: 200, MsgSize: 120, TypingFrac: 0.2, Duration: time.Second,
			ConnectConcurrency: 1}
	}
	c := good()
	require.NoError(t, c.validate())
	assert.Equal(t, 1, c.Nodes)
	for name, mut := range map[string]func(*config){
		"setup":          func(c *config) { c.Setup = "mesh" },
		"cluster nodes":  func(c *config) { c.Setup, c.Nodes = "cluster", 2 },
		"single nodes":   func(c *config) { c.Nodes = 2 },
		"agents":         func(c *config) { c.Agents = 0 },
		"capacity":       func(c *config) { c.AgentCap = 0 },
		"tiers":          func(c *config) { c.TierMix = [3]float64{0.5, 0.5, 0.5} },
		"size":           func(c *config) { c.MsgSize = 9000 },
		"too few slots":  func(c *config) { c.Agents = 5 },
		"pair rate":      func(c *config) { c.Rate = 1000 },
		"agent frames":   func(c *config) { c.AgentCap, c.Agents, c.Rate = 30, 10, 300 },
		"waiting":        func(c *config) { c.Waiting = 150 },
		"sweep":          func(c *config) { c.Sweep = true },
		"sweep too high": func(c *config) { c.Sweep, c.SweepRates = true, []float64{100, 5000} },
		"flood":          func(c *config) { c.Isolation, c.FloodRate = true, 50 },
		"chaos node":     func(c *config) { c.Chaos, c.ChaosNode, c.ChaosRestart = true, 3, true },
		"chaos restart":  func(c *config) { c.Chaos = true },
	} {
		c := good()
		mut(&c)
		assert.Error(t, c.validate(), name)
	}
	var errBuf bytes.Buffer
	assert.Equal(t, 2, realMain([]string{"-setup", "mesh"}, &bytes.Buffer{}, &errBuf))
	assert.Equal(t, 2, realMain([]string{"-role", "janitor"}, &bytes.Buffer{}, &errBuf))
	assert.Equal(t, 2, realMain([]string{"-tiers", "1,2"}, &bytes.Buffer{}, &errBuf))
}

func TestParseRatesAndMix(t *testing.T) {
	r, err := parseRates("2000:8000:2000")
	require.NoError(t, err)
	assert.Equal(t, []float64{2000, 4000, 6000, 8000}, r)
	r, err = parseRates("100, 300")
	require.NoError(t, err)
	assert.Equal(t, []float64{100, 300}, r)
	for _, bad := range []string{"a", "1:2", "5:1:1", "0,1", "1:3:0"} {
		_, err := parseRates(bad)
		assert.Error(t, err, bad)
	}
	m, err := parseMix("10,30,60")
	require.NoError(t, err)
	assert.InDeltaSlice(t, []float64{0.1, 0.3, 0.6}, m[:], 1e-9)
	_, err = parseMix("0,0,0")
	assert.Error(t, err)
	assert.Equal(t, quant{N: 3, P50: 2, P99: 3, Max: 3}, quantOf([]float64{3, 1, 2}))
	assert.Equal(t, quant{}, quantOf(nil))
}

func TestTiersFollowTheMix(t *testing.T) {
	mix := [3]float64{0.1, 0.3, 0.6}
	var n [3]int
	for i := range 10000 {
		n[tierOf(i, mix)]++
	}
	assert.InDelta(t, 1000, n[0], 100)
	assert.InDelta(t, 3000, n[1], 150)
	assert.InDelta(t, 6000, n[2], 150)
}

// requiredKeys are the JSON keys promised by the output format (README).
var requiredKeys = []string{"setup", "phase", "nodes", "customers", "agents", "conns", "established", "duration_seconds",
	"target_rate", "msgs_per_sec", "c2a_p50_ms", "c2a_p99_ms", "c2a_p999_ms", "a2c_p50_ms", "a2c_p99_ms", "a2c_p999_ms",
	"ack_p50_ms", "ack_p99_ms", "time_to_offer_ms", "time_to_assign_ms", "position_updates", "server_cpu_seconds",
	"server_rss_bytes", "rss_per_conn_bytes", "sweep_max_rate", "isolation_rise_pct", "takeover_seconds", "echo_p99_ms",
	"desk_vs_echo_p99", "run_lost", "run_duplicated", "loss_ok", "targets"}

func TestOutputs(t *testing.T) {
	st := &runState{cfg: config{Setup: "single", Nodes: 1}}
	rows := []Result{st.baseRow("steady", 100), st.baseRow("summary", 100)}
	rows[0].MsgP99MS, rows[0].MsgsPerSec = 12, 100
	rows[0].TimeToOffer["all"] = quant{N: 1, P99: 20}
	applyEcho(rows, echoResult{Conns: 10, Rate: 100, P99MS: 4})
	finishSummary(&rows[1], rows, config{Setup: "single", Isolation: true})
	var buf bytes.Buffer
	require.NoError(t, writeJSONLines(&buf, rows))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		for _, k := range requiredKeys {
			assert.Contains(t, m, k, "line %s", l)
		}
	}
	assert.InDelta(t, 3, rows[0].DeskVsEchoP99, 1e-9)
	names := map[string]bool{}
	for _, tc := range rows[1].Targets {
		names[tc.Name] = tc.Met
	}
	assert.True(t, names["desk_vs_echo_p99"], "12 ms against 4 ms is 3×: met")
	assert.True(t, names["time_to_offer_p99_ms"])
	buf.Reset()
	writeTable(&buf, rows)
	assert.Contains(t, buf.String(), "desk_vs_echo_p99")
	buf.Reset()
	writeHTML(&buf, config{Setup: "single"}, rows, time.Unix(0, 0))
	out := buf.String()
	assert.Contains(t, out, "<svg")
	assert.NotContains(t, out, "<script")
	assert.NotContains(t, out, "src=")
}

// TestSmokeEndToEnd runs a tiny deskbench against a real supportdesk
// process (built here), with real load-generator children, a steady phase,
// the isolation check and a SIGKILL + restart of the node, and requires
// zero lost or duplicated messages.
func TestSmokeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds supportdesk and starts processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "supportdesk")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, supportdeskPkg)
	out, err := build.CombinedOutput()
	require.NoError(t, err, string(out))

	cfg := config{
		Self: os.Args[0], ChildEnv: []string{"DESKBENCH_TEST_CHILD=1"}, Supportdesk: bin,
		Setup: "single", ServerLog: "warn", Customers: 40, Agents: 4, AgentCap: 3, TierMix: [3]float64{0.2, 0.3, 0.5},
		ConvRate: 1, ConvDuration: 4 * time.Second, Rate: 40, TypingFrac: 0.2, MsgSize: 80, Waiting: 4, WaitingEntry: "callback",
		Warmup: 2 * time.Second, WarmupChat: true, Duration: 3 * time.Second, DrainTimeout: 30 * time.Second,
		Isolation: true, IsolationDur: 2 * time.Second, FloodRate: 9, FloodBurst: 20, FloodTyping: 20, FloodSize: 4000,
		Chaos: true, ChaosDown: 200 * time.Millisecond, ChaosRestart: true, ChaosDuration: 6 * time.Second,
		Headroom: 1000, ConnectConcurrency: 8, ConnectTimeout: 10 * time.Second, Strict: true,
	}
	require.NoError(t, cfg.validate())
	var log bytes.Buffer
	rows, err := coordinate(ctx, cfg, logw.Locked(&log))
	require.NoError(t, err, log.String())
	assert.NotContains(t, log.String(), "DATA RACE", "a load generator raced")
	require.NotEmpty(t, rows)
	sum := rows[len(rows)-1]
	require.Equal(t, "summary", sum.Phase)
	assert.Equal(t, sum.Conns, sum.Established)
	assert.Positive(t, sum.RunAcked, log.String())
	assert.True(t, sum.LossOK, "lost %d (self %d), missed live %d, duplicated %d, unanswered %d\n%s",
		sum.RunLost, sum.RunLostSelf, sum.RunMissedLive, sum.RunDuplicated, sum.RunUnanswered, log.String())
	assert.Empty(t, checkStrict(rows, true), log.String())
	phases := map[string]Result{}
	for _, r := range rows {
		phases[r.Phase] = r
	}
	require.Contains(t, phases, "steady")
	assert.Positive(t, phases["steady"].MsgsPerSec)
	assert.Positive(t, phases["steady"].TimeToAssign["all"].N+phases["isolation-base"].TimeToAssign["all"].N, "conversations were assigned")
	assert.Positive(t, phases["isolation-flood"].FloodSent)
	assert.Equal(t, "node0", sum.ChaosNode)
	assert.Positive(t, sum.TakeoverSeconds, "every connection came back after the restart")
}
