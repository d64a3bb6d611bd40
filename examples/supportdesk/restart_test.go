package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bytedance/sonic"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/examples/supportdesk/internal/protocol"
	"github.com/switchboard-go/switchboard/internal/pgtest"
)

// serveEnv makes the test binary run the server (main's run) instead of the
// tests, so fault tests can start and SIGKILL a real server process.
const serveEnv = "SUPPORTDESK_TEST_SERVE"

func TestMain(m *testing.M) {
	if args := os.Getenv(serveEnv); args != "" {
		if err := run(strings.Split(args, "\x1f")); err != nil {
			fmt.Fprintln(os.Stderr, "supportdesk:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m,
		// nbio starts a process-wide task pool when the gateway package loads.
		goleak.IgnoreTopFunction("github.com/lesismal/nbio/taskpool.New.func3"),
	)
}

const restartSecret = "restart-test-secret-0123456789"

// httpClient keeps no idle connections, so goleak finds none of its
// goroutines when the test ends.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// proc is a supportdesk server process started by a test.
type proc struct {
	t    *testing.T
	cmd  *exec.Cmd
	base string // http://127.0.0.1:port
	out  *lockedBuf
	done chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

var wsLine = regexp.MustCompile(`websocket:\s+(ws://\S+)`)

// startProc starts the server with args and waits until it prints its
// WebSocket URL.
func startProc(t *testing.T, addr string, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	all := append([]string{"-addr", addr, "-dev", "-log-level", "warn"}, args...) // a later -log-level wins
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+strings.Join(all, "\x1f"), "SUPPORTDESK_SECRET="+restartSecret)
	p := &proc{t: t, cmd: cmd, base: "http://" + addr, out: &lockedBuf{}, done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	require.NoError(t, cmd.Start())
	ready := make(chan struct{})
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		once := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.out, line)
			if !once && wsLine.MatchString(line) {
				once = true
				close(ready)
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-p.done:
		t.Fatalf("server exited before listening:\n%s", p.out.String())
	case <-time.After(60 * time.Second):
		p.kill()
		t.Fatalf("server did not start:\n%s", p.out.String())
	}
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("server %s output:\n%s", addr, p.out.String())
		}
	})
	return p
}

// kill sends SIGKILL (no graceful stop) and waits for the process to end.
func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

type devToken struct {
	Token string `json:"token"`
	User  string `json:"user"`
}

func (p *proc) token(body string) devToken {
	p.t.Helper()
	resp, err := httpClient.Post(p.base+"/api/dev/token", "application/json", strings.NewReader(body))
	require.NoError(p.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	require.Equal(p.t, http.StatusOK, resp.StatusCode, string(b))
	var tok devToken
	require.NoError(p.t, sonic.ConfigStd.Unmarshal(b, &tok))
	return tok
}

// wsClient is an independent client of the protocol over a real socket.
type wsClient struct {
	t     *testing.T
	name  string
	conn  *websocket.Conn
	in    chan protocol.Envelope
	done  chan struct{}
	seen  []protocol.Envelope
	hello protocol.Envelope
}

func (p *proc) dial(token, name string) *wsClient {
	p.t.Helper()
	url := "ws" + strings.TrimPrefix(p.base, "http") + "/ws?token=" + token
	conn, resp, err := websocket.DefaultDialer.Dial(url, nil)
	require.NoError(p.t, err)
	_ = resp.Body.Close()
	c := &wsClient{t: p.t, name: name, conn: conn, in: make(chan protocol.Envelope, 4096), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer close(c.in)
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var e protocol.Envelope
			if sonic.ConfigStd.Unmarshal(data, &e) == nil {
				c.in <- e
			}
		}
	}()
	p.t.Cleanup(c.close)
	c.hello = c.expect(protocol.TypeHello)
	return c
}

func (c *wsClient) close() {
	_ = c.conn.Close()
	<-c.done
}

func (c *wsClient) send(e protocol.Envelope) {
	c.t.Helper()
	b, err := sonic.ConfigStd.Marshal(e)
	require.NoError(c.t, err)
	require.NoError(c.t, c.conn.WriteMessage(websocket.TextMessage, b))
}

func (c *wsClient) expect(typ string, preds ...func(protocol.Envelope) bool) protocol.Envelope {
	c.t.Helper()
	match := func(e protocol.Envelope) bool {
		if e.Type != typ {
			return false
		}
		for _, p := range preds {
			if !p(e) {
				return false
			}
		}
		return true
	}
	for i, e := range c.seen {
		if match(e) {
			c.seen = append(c.seen[:i:i], c.seen[i+1:]...)
			return e
		}
	}
	deadline := time.After(15 * time.Second)
	for {
		select {
		case e, ok := <-c.in:
			if !ok {
				c.t.Fatalf("%s: connection closed while waiting for %s", c.name, typ)
			}
			if match(e) {
				return e
			}
			c.seen = append(c.seen, e)
		case <-deadline:
			c.t.Fatalf("%s: no %s within 15s (seen %+v)", c.name, typ, c.seen)
		}
	}
}

// TestKillAndRestartKeepsEverything runs the durability check of PROTOCOL.md
// against each backend: a chat and a waiting room, SIGKILL, restart, and
// everything acknowledged is back.
func TestKillAndRestartKeepsEverything(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		dir := t.TempDir()
		testKillRestart(t, "-data", dir)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.Start(t).DSN("postgres")
		testKillRestart(t, "-postgres", dsn)
	})
}

func testKillRestart(t *testing.T, storeArgs ...string) {
	addr := freeAddr(t)
	args := append([]string{"-agent-grace", "1m", "-offer-timeout", "1m", "-ops-addr", freeAddr(t)}, storeArgs...)
	p := startProc(t, addr, args...)

	agentTok := p.token(`{"name":"Ada","role":"agent","capacity":1}`)
	chatTok := p.token(`{"name":"Chat","role":"customer","tier":"premium"}`)
	ag := p.dial(agentTok.Token, "agent")
	cust := p.dial(chatTok.Token, "chat")

	// One conversation assigned and chatting.
	cust.send(protocol.Envelope{Type: protocol.TypeMessage, ID: "m1", Text: "hello"})
	conv := cust.expect(protocol.TypeQueued).Conv
	offer := ag.expect(protocol.TypeOffer)
	ag.send(protocol.Envelope{Type: protocol.TypeAccept, Conv: conv, Offer: offer.Offer})
	cust.expect(protocol.TypeAssigned)
	ag.expect(protocol.TypeAssigned)
	acked := map[uint64]string{}
	want := []string{"hello"}
	a := cust.expect(protocol.TypeAck, func(e protocol.Envelope) bool { return e.ID == "m1" })
	acked[a.Offset] = "hello"
	for i := 2; i <= 20; i++ {
		c, id, text := cust, fmt.Sprintf("m%d", i), fmt.Sprintf("customer %d", i)
		if i%2 == 0 {
			c, text = ag, fmt.Sprintf("agent %d", i)
		}
		c.send(protocol.Envelope{Type: protocol.TypeMessage, Conv: conv, ID: id, Text: text})
		a := c.expect(protocol.TypeAck, func(e protocol.Envelope) bool { return e.ID == id })
		acked[a.Offset] = text
		want = append(want, text)
	}
	require.Len(t, acked, 20, "20 distinct offsets")

	// The agent is full: five customers wait, in two tiers.
	var waiting []*wsClient
	var waitConvs []string
	for i, tier := range []string{"standard", "vip", "standard", "vip", "premium"} {
		tok := p.token(fmt.Sprintf(`{"name":"W%d","role":"customer","tier":%q}`, i, tier))
		w := p.dial(tok.Token, "w"+tier)
		w.send(protocol.Envelope{Type: protocol.TypeStart})
		waitConvs = append(waitConvs, w.expect(protocol.TypeQueued).Conv)
		waiting = append(waiting, w)
	}
	// Expected place within each tier: vip 1 then 3, premium 4, standard 0
	// then 2 (the order across tiers is the queue's weighted scheduling).
	inTier := map[int]int{1: 1, 3: 2, 4: 1, 0: 1, 2: 2}

	p.kill()
	for _, c := range append([]*wsClient{ag, cust}, waiting...) {
		c.close()
	}
	p = startProc(t, addr, args...)

	// The agent gets its conversation back in hello.
	ag = p.dial(agentTok.Token, "agent")
	require.Len(t, ag.hello.Convs, 1, "hello after restart: %+v", ag.hello)
	assert.Equal(t, conv, ag.hello.Convs[0].Conv)
	assert.Equal(t, "active", ag.hello.Convs[0].State)
	assert.Equal(t, uint64(20), ag.hello.Convs[0].Offset)

	// The customer resumes from 0: every acknowledged message, once, in order.
	cust = p.dial(chatTok.Token, "chat")
	require.Len(t, cust.hello.Convs, 1)
	cust.send(protocol.Envelope{Type: protocol.TypeResume, Conv: conv})
	var got []string
	for i := 0; i < 20; i++ {
		m := cust.expect(protocol.TypeMessage)
		assert.Equal(t, uint64(i+1), m.Offset, "offset order")
		assert.Equal(t, acked[m.Offset], m.Text)
		got = append(got, m.Text)
	}
	end := cust.expect(protocol.TypeResumed)
	assert.Equal(t, uint64(20), end.Offset)
	assert.Equal(t, want, got)

	// A retried send of an acknowledged message is not stored twice.
	cust.send(protocol.Envelope{Type: protocol.TypeMessage, Conv: conv, ID: "m3", Text: "customer 3"})
	a = cust.expect(protocol.TypeAck, func(e protocol.Envelope) bool { return e.ID == "m3" })
	assert.Equal(t, uint64(3), a.Offset, "the stored offset of m3")

	// The agent is still full (load rebuilt): nothing is offered. The waiting
	// customers are back, in the same order within each tier.
	overall := map[int]bool{}
	for i := range waiting {
		w := p.dial(p.token(fmt.Sprintf(`{"user":%q,"role":"customer"}`, waiting[i].hello.From)).Token, "again")
		require.Len(t, w.hello.Convs, 1)
		assert.Equal(t, waitConvs[i], w.hello.Convs[0].Conv)
		assert.Equal(t, "queued", w.hello.Convs[0].State)
		pos := w.expect(protocol.TypePosition)
		assert.Equal(t, inTier[i], pos.InTier, "customer %d (%s) place in its tier", i, pos.Tier)
		overall[pos.Position] = true
	}
	assert.Equal(t, map[int]bool{1: true, 2: true, 3: true, 4: true, 5: true}, overall, "five distinct places")

	// Resolving the chat frees the agent's one slot: the first VIP is offered.
	ag.send(protocol.Envelope{Type: protocol.TypeResolve, Conv: conv})
	cust.expect(protocol.TypeResolved)
	next := ag.expect(protocol.TypeOffer)
	assert.Equal(t, waitConvs[1], next.Conv, "the first VIP is offered first")
}
