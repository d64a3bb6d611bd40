package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// nbio's package-level task pool lives for the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/lesismal/nbio/taskpool.New.func3"))
}

// server runs the example on free loopback ports until the test ends.
type server struct{ ws, ops string }

func start(t *testing.T, o Options) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	o.Addr, o.OpsAddr = "127.0.0.1:0", "127.0.0.1:0"
	up := make(chan *server, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, o, func(ws, ops string) { up <- &server{ws, ops} }) }()
	select {
	case s := <-up:
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err, "shutdown")
			case <-time.After(15 * time.Second):
				t.Error("run did not return after cancel")
			}
		})
		return s
	case err := <-done:
		cancel()
		t.Fatalf("run: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("server did not start")
	}
	return nil
}

// client is a real WebSocket client; a goroutine reads its frames.
type client struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan string
}

func (s *server) dial(t *testing.T, q url.Values) *client {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+s.ws+"/ws?"+q.Encode(), nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	c := &client{t, ws, make(chan string, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				close(c.frames)
				return
			}
			c.frames <- string(data)
		}
	}()
	t.Cleanup(func() { _ = ws.Close(); <-done })
	return c
}

func customer(s *server, t *testing.T, id, tier, skills string) *client {
	return s.dial(t, url.Values{"user": {id}, "role": {"customer"}, "tier": {tier}, "skills": {skills}})
}

func agent(s *server, t *testing.T, id, skills, capacity string) *client {
	return s.dial(t, url.Values{"user": {id}, "role": {"agent"}, "skills": {skills}, "capacity": {capacity}})
}

func (c *client) send(text string) {
	c.t.Helper()
	require.NoError(c.t, c.ws.WriteMessage(websocket.TextMessage, []byte(text)))
}

// expect waits for a frame equal to want, skipping queue position updates;
// any other frame fails the test.
func (c *client) expect(want string) {
	c.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case got, ok := <-c.frames:
			require.True(c.t, ok, "connection closed waiting for %q", want)
			if got == want {
				return
			}
			require.True(c.t, strings.HasPrefix(got, "queued "), "got %q, want %q", got, want)
		case <-timeout:
			c.t.Fatalf("no %q within 5 s", want)
		}
	}
}

// quiet checks that nothing but position updates arrives for d.
func (c *client) quiet(d time.Duration) {
	c.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case got, ok := <-c.frames:
			require.True(c.t, ok, "connection closed")
			require.True(c.t, strings.HasPrefix(got, "queued "), "unexpected %q", got)
		case <-timeout:
			return
		}
	}
}

func TestSkillMatchingDoesNotBlockOnTheHead(t *testing.T) {
	s := start(t, Options{})
	// A VIP needing French waits at the head; nobody speaks French.
	vip := customer(s, t, "vip1", "0", "french")
	vip.expect("queued 1")
	bob := agent(s, t, "bob", "billing", "1")
	std := customer(s, t, "std1", "2", "billing")
	std.expect("assigned std1 bob")
	bob.expect("assigned std1 bob")
	vip.quiet(300 * time.Millisecond)

	// Messages both ways, each seen by both participants.
	std.send("my invoice is wrong")
	bob.expect("std1 std1: my invoice is wrong")
	std.expect("std1 std1: my invoice is wrong")
	bob.send("std1 let me check")
	std.expect("std1 bob: let me check")
	bob.expect("std1 bob: let me check")
	bob.send("vip1 hello")
	bob.expect("error not your conversation vip1")

	// A French agent takes the VIP.
	ann := agent(s, t, "ann", "french,billing", "1")
	vip.expect("assigned vip1 ann")
	ann.expect("assigned vip1 ann")
}

func TestTiersAndResolveFreesTheAgent(t *testing.T) {
	s := start(t, Options{})
	std := customer(s, t, "std", "2", "")
	vip := customer(s, t, "vip", "0", "")
	std.expect("queued 2") // the VIP is ahead
	vip.expect("queued 1")
	bob := agent(s, t, "bob", "", "1")
	vip.expect("assigned vip bob") // VIP first, though it came second
	bob.expect("assigned vip bob")
	std.quiet(300 * time.Millisecond)
	bob.send("vip /resolve")
	vip.expect("resolved vip")
	bob.expect("resolved vip")
	std.expect("assigned std bob") // the freed slot goes to the next one
	bob.expect("assigned std bob")
	// The resolved conversation no longer reaches bob.
	vip.send("still there?")
	vip.expect("vip vip: still there?")
	bob.send("std hi")
	bob.expect("std bob: hi")
}

func TestAgentLossRequeuesInPlace(t *testing.T) {
	s := start(t, Options{OfflineGrace: 100 * time.Millisecond})
	bob := agent(s, t, "bob", "billing", "1")
	first := customer(s, t, "first", "2", "billing")
	first.expect("assigned first bob")
	bob.expect("assigned first bob")
	second := customer(s, t, "second", "2", "billing") // arrives later, same tier
	second.expect("queued 1")
	require.NoError(t, bob.ws.Close()) // bob's connection drops
	first.expect("requeued first")
	// first keeps the place it had: ahead of second.
	dave := agent(s, t, "dave", "billing", "1")
	first.expect("assigned first dave")
	dave.expect("assigned first dave")
	second.quiet(300 * time.Millisecond)
	first.send("hello again")
	dave.expect("first first: hello again")
}

func TestCustomerLeavingFreesTheAgent(t *testing.T) {
	s := start(t, Options{})
	bob := agent(s, t, "bob", "", "1")
	a := customer(s, t, "a", "1", "")
	a.expect("assigned a bob")
	bob.expect("assigned a bob")
	b := customer(s, t, "b", "1", "")
	b.expect("queued 1")
	require.NoError(t, a.ws.Close())
	b.expect("assigned b bob")
}

func TestAuthMetricsAndHealth(t *testing.T) {
	s := start(t, Options{Token: "s3cret"})
	_, resp, err := websocket.DefaultDialer.Dial("ws://"+s.ws+"/ws?user=x&token=wrong", nil)
	require.Error(t, err)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	_ = resp.Body.Close()
	for _, bad := range []url.Values{
		{"user": {"x"}, "role": {"customer"}, "tier": {"7"}, "token": {"s3cret"}},
		{"user": {"x"}, "role": {"agent"}, "capacity": {"0"}, "token": {"s3cret"}},
		{"user": {"x"}, "role": {"boss"}, "token": {"s3cret"}},
		{"role": {"customer"}, "token": {"s3cret"}},
	} {
		_, resp, err := websocket.DefaultDialer.Dial("ws://"+s.ws+"/ws?"+bad.Encode(), nil)
		require.Error(t, err, "%v", bad)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%v", bad)
		_ = resp.Body.Close()
	}
	c := s.dial(t, url.Values{"user": {"x"}, "role": {"customer"}, "tier": {"2"}, "token": {"s3cret"}})
	c.expect("queued 1")
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.ops + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	code, _ := get("/readyz")
	require.Equal(t, http.StatusOK, code)
	code, body := get("/metrics")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `minimal_queue_depth{queue="waiting_room",tier="P2"} 1`)
	require.Contains(t, body, "minimal_gateway_connections")
}

// TestGlueUnder100Lines keeps the promise of doc.go: the code connecting
// the packages (glue.go, without blank lines, comments and imports) stays
// under 100 lines.
func TestGlueUnder100Lines(t *testing.T) {
	src, err := os.ReadFile("glue.go")
	require.NoError(t, err)
	n, imports := 0, false
	for line := range strings.Lines(string(src)) {
		line = strings.TrimSpace(line)
		switch {
		case line == "import (":
			imports = true
		case imports:
			imports = line != ")"
		case line == "", strings.HasPrefix(line, "//"):
		default:
			n++
		}
	}
	t.Logf("glue.go: %d lines of code", n)
	require.Less(t, n, 100)
}
