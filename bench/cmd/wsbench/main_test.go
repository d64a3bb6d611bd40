package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/bench/internal/ctl"
	"github.com/switchboard-go/switchboard/bench/internal/hist"
	"github.com/switchboard-go/switchboard/bench/internal/logw"
	"github.com/switchboard-go/switchboard/bench/internal/nbclient"
)

// The test binary doubles as the wsbench children: the coordinator under
// test re-executes it with WSBENCH_TEST_CHILD=1 and -role server|client.
func TestMain(m *testing.M) {
	if os.Getenv("WSBENCH_TEST_CHILD") == "1" {
		os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
	}
	// nbio's package-level default engine starts a task pool at init.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/lesismal/nbio/taskpool.New.func3"))
}

func TestPayloadRoundTrip(t *testing.T) {
	buf := make([]byte, 200)
	putPayload(buf, kindBroadcast, 1764110000123456789, 4242)
	assert.Equal(t, "B 1764110000123456789 0000004242 ", string(buf[:headerLen]))
	assert.Equal(t, strings.Repeat("x", 200-headerLen), string(buf[headerLen:]))
	kind, ts, seq, err := parsePayload(buf)
	require.NoError(t, err)
	assert.Equal(t, byte(kindBroadcast), kind)
	assert.EqualValues(t, 1764110000123456789, ts)
	assert.EqualValues(t, 4242, seq)

	_, _, _, err = parsePayload([]byte("E 123"))
	assert.ErrorIs(t, err, errShortPayload)
	bad := append([]byte(nil), buf...)
	bad[5] = 'z'
	_, _, _, err = parsePayload(bad)
	assert.Error(t, err)
	assert.Zero(t, testing.AllocsPerRun(100, func() { _, _, _, _ = parsePayload(buf) }))
}

func FuzzParsePayload(f *testing.F) {
	buf := make([]byte, 64)
	putPayload(buf, kindEcho, 42, 7)
	f.Add(buf)
	f.Add([]byte("E 1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kind, ts, seq, err := parsePayload(b)
		if err != nil {
			return
		}
		out := make([]byte, max(len(b), headerLen))
		putPayload(out, kind, ts, seq)
		k2, ts2, seq2, err := parsePayload(out)
		require.NoError(t, err)
		assert.Equal(t, kind, k2)
		assert.Equal(t, ts, ts2)
		assert.Equal(t, seq, seq2)
	})
}

// requiredKeys are the JSON keys promised by the harness's output format.
var requiredKeys = []string{"target", "scenario", "conns", "established", "server_rss_bytes", "rss_per_conn_bytes",
	"connect_seconds", "p50_ms", "p99_ms", "p999_ms", "msgs_per_sec", "broadcast_p99_ms", "server_cpu_seconds",
	"client_cpu_seconds", "server_goroutines", "server_heap_inuse_bytes", "gc_pause_p99_ms", "broadcast_p50_ms", "failed"}

func TestJSONLinesHaveEveryKey(t *testing.T) {
	ok := true
	rs := []Result{
		{Target: "switchboard", Scenario: "idle", Conns: 10, Established: 10},
		{Target: "baseline", Scenario: "churn", Conns: 10, LeakOK: &ok},
	}
	var buf bytes.Buffer
	require.NoError(t, writeJSONLines(&buf, rs))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2, "exactly one object per target per scenario")
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		for _, k := range requiredKeys {
			assert.Contains(t, m, k, "line %s", l)
		}
	}
}

func TestTableAndRatios(t *testing.T) {
	rs := []Result{
		{Target: "switchboard", Scenario: "idle", Conns: 100, Established: 100, RSSPerConnBytes: 2000, ServerRSSBytes: 1 << 20},
		{Target: "baseline", Scenario: "idle", Conns: 100, Established: 100, RSSPerConnBytes: 16000},
		{Target: "switchboard", Scenario: "broadcast", BroadcastP50: 10, BroadcastP99: 20},
		{Target: "baseline", Scenario: "broadcast", BroadcastP50: 30, BroadcastP99: 40},
	}
	var buf bytes.Buffer
	writeTable(&buf, rs)
	out := buf.String()
	assert.Contains(t, out, "RSS per connection 8.00× lower (better)")
	assert.Contains(t, out, "completion p50 3.00× lower (better)")
	assert.Contains(t, out, "1.0 MiB")
	assert.Equal(t, "2.00× higher (worse)", compare(2, 1))
	assert.Equal(t, "n/a", compare(0, 1))
}

func TestHTMLIsSelfContained(t *testing.T) {
	var h hist.Histogram
	for i := range 1000 {
		h.Record(int64(i) * 1000)
	}
	rs := []Result{
		{Target: "switchboard", Scenario: "idle", RSSPerConnBytes: 2000, connectCurve: []curvePoint{{0, 0}, {1, 50}, {2, 100}}},
		{Target: "baseline", Scenario: "idle", RSSPerConnBytes: 16000, connectCurve: []curvePoint{{0, 0}, {3, 100}}},
		{Target: "switchboard", Scenario: "echo", latency: h.Snapshot()},
		{Target: "baseline", Scenario: "echo", latency: h.Snapshot()},
		{Target: "baseline", Scenario: "broadcast", latency: h.Snapshot(), BroadcastP50: 3, BroadcastP99: 4},
		{Target: "<script>", Scenario: "error", Error: "x < y"},
	}
	var buf bytes.Buffer
	writeHTML(&buf, config{Conns: 100, Scenarios: []string{"idle", "echo"}}, rs, time.Unix(0, 0))
	out := buf.String()
	assert.Contains(t, out, "<svg")
	assert.GreaterOrEqual(t, strings.Count(out, "<svg"), 4, "RSS, connect curve, echo and broadcast charts")
	assert.Contains(t, out, "Server RSS per idle connection")
	assert.Contains(t, out, "Connect curve")
	assert.Contains(t, out, "Echo round-trip latency")
	assert.NotContains(t, out, "<script")
	assert.NotContains(t, out, "<link")
	assert.NotContains(t, out, "src=")
	assert.Contains(t, out, "&lt;script&gt;")
}

func TestCheckStrict(t *testing.T) {
	ok, bad := true, false
	assert.Empty(t, checkStrict([]Result{
		{Target: "a", Scenario: "idle", Conns: 5, Established: 5},
		{Target: "a", Scenario: "echo", Conns: 5, Established: 5, Sent: 10, Received: 10},
		{Target: "a", Scenario: "churn", Conns: 5, Established: 5, LeakOK: &ok, ChurnOpened: 3},
	}))
	problems := checkStrict([]Result{
		{Target: "a", Scenario: "idle", Conns: 5, Established: 4},
		{Target: "a", Scenario: "broadcast", Conns: 5, Established: 5, Sent: 10, Received: 9},
		{Target: "a", Scenario: "churn", Conns: 5, Established: 5, LeakOK: &bad, ChurnOpened: 1},
		{Target: "a", Scenario: "error", Error: "boom"},
	})
	assert.Len(t, problems, 4)
}

func TestExactQuantile(t *testing.T) {
	assert.Zero(t, exactQuantile(nil, 0.5))
	v := []int64{5, 1, 4, 2, 3}
	assert.EqualValues(t, 3, exactQuantile(v, 0.5))
	assert.EqualValues(t, 5, exactQuantile(v, 0.99))
	assert.EqualValues(t, 1, exactQuantile(v, 0))
	assert.Equal(t, []int64{5, 1, 4, 2, 3}, v, "input untouched")
}

func TestConfigValidate(t *testing.T) {
	good := config{Conns: 1, Targets: []string{"baseline"}, Scenarios: []string{"idle"}, Size: 200, Repeats: 1, ConnectConcurrency: 1}
	require.NoError(t, good.validate())
	for name, mut := range map[string]func(*config){
		"conns":    func(c *config) { c.Conns = 0 },
		"target":   func(c *config) { c.Targets = []string{"nginx"} },
		"scenario": func(c *config) { c.Scenarios = []string{"nap"} },
		"size":     func(c *config) { c.Size = 10 },
		"repeats":  func(c *config) { c.Repeats = 0 },
		"conc":     func(c *config) { c.ConnectConcurrency = 0 },
		"none":     func(c *config) { c.Targets = nil },
	} {
		c := good
		mut(&c)
		assert.Error(t, c.validate(), name)
	}
	var errBuf bytes.Buffer
	assert.Equal(t, 2, realMain([]string{"-targets", "nginx"}, &bytes.Buffer{}, &errBuf))
	assert.Contains(t, errBuf.String(), "unknown target")
	assert.Equal(t, 2, realMain([]string{"-role", "janitor"}, &bytes.Buffer{}, &errBuf))
}

// TestEndToEnd runs every scenario against every target with a few
// connections, through real child processes and real sockets.
func TestEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	cfg := config{
		Self: os.Args[0], ChildEnv: []string{"WSBENCH_TEST_CHILD=1"},
		Targets: targetNames(), Scenarios: knownScenarios,
		Conns: 40, Headroom: 1000, ConnectConcurrency: 8, ConnectTimeout: 10 * time.Second,
		Settle: 200 * time.Millisecond, Rate: 200, Duration: 500 * time.Millisecond, Size: 200,
		Repeats: 2, BroadcastTimeout: 10 * time.Second, ChurnRate: 20, ChurnDuration: 500 * time.Millisecond,
		LeakRSSTolerance: 0.5, LeakGoroutineTolerance: 10,
	}
	require.NoError(t, cfg.validate())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var log bytes.Buffer
	rs, err := coordinate(ctx, cfg, &log)
	require.NoError(t, err, log.String())
	require.Len(t, rs, len(cfg.Targets)*len(cfg.Scenarios), log.String())
	for _, r := range rs {
		id := r.Target + "/" + r.Scenario
		assert.Empty(t, r.Error, id)
		assert.Equal(t, 40, r.Established, id)
		assert.Positive(t, r.ServerRSSBytes, id)
		assert.Positive(t, r.ServerGoroutines, id)
		switch r.Scenario {
		case "echo":
			assert.Positive(t, r.Sent, id)
			assert.Equal(t, r.Sent, r.Received, id)
			assert.Positive(t, r.P50MS, id)
			assert.GreaterOrEqual(t, r.P99MS, r.P50MS, id)
		case "broadcast":
			assert.EqualValues(t, 80, r.Sent, id)
			assert.Equal(t, r.Sent, r.Received, id)
			assert.Positive(t, r.BroadcastP99, id)
		case "churn":
			assert.Positive(t, r.ChurnOpened, id)
			require.NotNil(t, r.LeakOK, id)
		}
	}
	assert.Empty(t, checkStrict(rs), log.String())
}

// TestCancelKillsChildren cancels a run in the middle of a long scenario
// (what Ctrl-C does through signal.NotifyContext) and checks that no child
// process survives.
func TestCancelKillsChildren(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	cfg := config{
		Self: os.Args[0], ChildEnv: []string{"WSBENCH_TEST_CHILD=1"},
		Targets: []string{"baseline"}, Scenarios: []string{"idle"},
		Conns: 20, Headroom: 1000, ConnectConcurrency: 4, ConnectTimeout: 10 * time.Second,
		Settle: time.Minute, Size: 200, Repeats: 1,
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log bytes.Buffer
	lw := logw.Locked(&log)
	done := make(chan error, 1)
	go func() {
		_, err := coordinate(ctx, cfg, lw)
		done <- err
	}()
	require.Eventually(t, func() bool {
		lw.Lock()
		defer lw.Unlock()
		return strings.Contains(log.String(), "scenario idle")
	}, 60*time.Second, 20*time.Millisecond)
	require.Len(t, childPids(), 2, "one server and one client running")
	cancel()
	select {
	case err := <-done:
		require.ErrorIs(t, err, context.Canceled)
	case <-time.After(30 * time.Second):
		t.Fatal("coordinate did not return after cancel")
	}
	assert.Empty(t, childPids(), "children left behind")
}

// childPids lists the live (non-zombie) children of this process.
func childPids() []int {
	var out []int
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/children")
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && ctl.Alive(pid) && !ctl.WaitGone(pid, 0) {
				out = append(out, pid)
			}
		}
	}
	return out
}

func TestClientProcs(t *testing.T) {
	for _, tc := range []struct{ cpus, clients, want int }{
		{2, 1, 2}, {2, 2, 2}, {2, 6, 2}, {16, 2, 8}, {16, 6, 2}, {24, 6, 4}, {1, 0, 2},
	} {
		assert.Equal(t, tc.want, clientProcs(tc.cpus, tc.clients), "cpus=%d clients=%d", tc.cpus, tc.clients)
	}
	for procs, want := range map[int]int{1: 1, 2: 1, 3: 2, 8: 7} {
		assert.Equal(t, want, nbclient.Pollers(procs), "procs=%d", procs)
	}
}

func TestRatioLinesComparePeersWithSwitchboard(t *testing.T) {
	rs := []Result{
		{Target: "switchboard", Scenario: "echo", P99MS: 4, ServerCPUSeconds: 10},
		{Target: "baseline", Scenario: "echo", P99MS: 40, ServerCPUSeconds: 20},
		{Target: "gws", Scenario: "echo", P99MS: 2, ServerCPUSeconds: 15},
	}
	lines := ratioLines(rs)
	require.Len(t, lines, 2, "switchboard vs baseline, gws vs switchboard; baseline is not compared twice")
	assert.Contains(t, lines[0], "switchboard vs baseline, echo: round-trip p99 10.00× lower (better)")
	assert.Contains(t, lines[1], "gws vs switchboard, echo: round-trip p99 2.00× lower (better)")
	assert.Contains(t, lines[1], "server CPU 1.50× higher (worse)")
}

func TestCentrifugeFraming(t *testing.T) {
	msg := appendEchoMessage(nil, protoCentrifuge, 200, 1764110000123456789, 41)
	var cmd struct {
		ID  uint32 `json:"id"`
		RPC struct {
			Data json.RawMessage `json:"data"`
		} `json:"rpc"`
	}
	require.NoError(t, json.Unmarshal(msg, &cmd), string(msg))
	assert.EqualValues(t, 43, cmd.ID)
	var data string
	require.NoError(t, json.Unmarshal(cmd.RPC.Data, &data))
	assert.Len(t, data, 200)
	raw := appendEchoMessage(nil, protoRaw, 200, 1764110000123456789, 41)
	assert.Equal(t, data, string(raw), "the RPC carries the raw payload as a JSON string")
	buf := make([]byte, 0, 512)
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		buf = appendEchoMessage(buf[:0], protoCentrifuge, 200, 1, 2)
	}))

	frame := []byte(`{"id":1,"connect":{"client":"x","subs":{"bench":{}},"ping":25,"pong":true}}` + "\n" +
		`{}` + "\n" +
		`{"id":43,"rpc":{"data":"` + data + `"}}` + "\n" +
		`{"push":{"channel":"bench","pub":{"data":"B 1764110000123456789 0000000007 xx"}}}` + "\n" +
		`{"id":44,"error":{"code":108,"message":"not available"}}`)
	var kinds []centrifugeFrame
	var seqs []uint32
	splitCentrifuge(frame, func(k centrifugeFrame, p []byte) {
		kinds = append(kinds, k)
		if k == cfPayload {
			_, _, seq, err := parsePayload(p)
			require.NoError(t, err)
			seqs = append(seqs, seq)
		}
	})
	assert.Equal(t, []centrifugeFrame{cfConnect, cfPing, cfPayload, cfPayload, cfOther}, kinds)
	assert.Equal(t, []uint32{41, 7}, seqs)
}

// discardConn is a net.Conn whose writes go to w; the gobwas target only
// writes and closes through it (reads use the raw descriptor).
type discardConn struct {
	net.Conn
	w bytes.Buffer
}

func (d *discardConn) Write(p []byte) (int, error)      { return d.w.Write(p) }
func (d *discardConn) SetWriteDeadline(time.Time) error { return nil }
func (d *discardConn) Close() error                     { return nil }

func maskedFrame(t testing.TB, op ws.OpCode, fin bool, payload []byte) []byte {
	f := ws.MaskFrame(ws.NewFrame(op, fin, payload))
	b, err := ws.CompileFrame(f)
	require.NoError(t, err)
	return b
}

func TestGobwasFrames(t *testing.T) {
	s := &gobwasServer{conns: map[int32]*gobwasConn{}}
	w := &gobwasWorker{buf: make([]byte, ws.MaxHeaderSize+gobwasMaxMessage)}
	payload := bytes.Repeat([]byte("y"), 300) // 16-bit length
	one := maskedFrame(t, ws.OpText, true, payload)
	two := append(append([]byte(nil), one...), maskedFrame(t, ws.OpText, true, []byte("hi"))...)
	echo := ws.MustCompileFrame(ws.NewTextFrame(payload))

	for cut := range len(two) {
		dc := &discardConn{}
		c := &gobwasConn{nc: dc}
		buf := append([]byte(nil), two...)
		used, keep := s.frames(w, c, buf[:cut])
		require.True(t, keep)
		rest := append(append([]byte(nil), buf[used:cut]...), two[cut:]...)
		used2, keep := s.frames(w, c, rest)
		require.True(t, keep)
		require.Equal(t, len(rest), used2, "cut at %d", cut)
		want := append(append([]byte(nil), echo...), ws.MustCompileFrame(ws.NewTextFrame([]byte("hi")))...)
		require.Equal(t, want, dc.w.Bytes(), "cut at %d", cut)
	}

	// Fragments are joined; a ping is answered; a close is echoed and ends.
	dc := &discardConn{}
	c := &gobwasConn{nc: dc}
	in := append(maskedFrame(t, ws.OpText, false, []byte("ab")), maskedFrame(t, ws.OpContinuation, true, []byte("cd"))...)
	in = append(in, maskedFrame(t, ws.OpPing, true, []byte("p"))...)
	in = append(in, maskedFrame(t, ws.OpClose, true, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))...)
	_, keep := s.frames(w, c, in)
	assert.False(t, keep)
	want := append(ws.MustCompileFrame(ws.NewTextFrame([]byte("abcd"))), ws.MustCompileFrame(ws.NewPongFrame([]byte("p")))...)
	want = append(want, ws.MustCompileFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "")))...)
	assert.Equal(t, want, dc.w.Bytes())

	// Unmasked frames and messages over 64 KiB close the connection.
	for name, in := range map[string][]byte{
		"unmasked": ws.MustCompileFrame(ws.NewTextFrame([]byte("x"))),
		"too big":  maskedFrame(t, ws.OpBinary, true, make([]byte, gobwasMaxMessage+1)),
	} {
		_, keep := s.frames(w, &gobwasConn{nc: &discardConn{}}, in)
		assert.False(t, keep, name)
	}
}

func FuzzGobwasFrames(f *testing.F) {
	f.Add(maskedFrame(f, ws.OpText, true, []byte("hello")))
	f.Add(maskedFrame(f, ws.OpText, false, []byte("he")))
	f.Add([]byte{0x81, 0xfe, 0xff})
	s := &gobwasServer{conns: map[int32]*gobwasConn{}}
	w := &gobwasWorker{buf: make([]byte, ws.MaxHeaderSize+gobwasMaxMessage)}
	f.Fuzz(func(t *testing.T, b []byte) {
		used, _ := s.frames(w, &gobwasConn{nc: &discardConn{}}, b)
		assert.LessOrEqual(t, used, len(b))
	})
}
