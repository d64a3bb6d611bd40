//go:build linux

package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// burstResult is what the load-generator process reports.
type burstResult struct {
	Statuses map[int]int // HTTP status → connections
	Failures []string    // connections without a response (first few)
	Failed   int
	Slowest  time.Duration // request sent to response read
	Took     time.Duration
}

const (
	burstEnvAddr = "GATEWAY_BURST_ADDR"
	burstConns   = 3000
	burstWorkers = 16
	// burstAnswerWithin bounds the wait for each response.
	burstAnswerWithin = 5 * time.Second
)

// TestHelperBurstClient is the load generator of
// TestHandshakeBurstAllAnswered, run in a child process (it does nothing in
// a normal test run). It waits for a line on stdin, opens burstConns
// connections from burstWorkers goroutines as fast as it can, sends each an
// upgrade request, reports the responses on stdout and holds the
// connections until stdin closes.
func TestHelperBurstClient(t *testing.T) {
	addr := os.Getenv(burstEnvAddr)
	if addr == "" {
		t.Skip("load generator of TestHandshakeBurstAllAnswered")
	}
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	res := burstResult{Statuses: map[int]int{}}
	var mu sync.Mutex
	var conns []net.Conn
	var next atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	req := []byte("GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	for range burstWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= burstConns {
				conn, err := net.DialTimeout("tcp", addr, burstAnswerWithin)
				fail := func(err error) {
					mu.Lock()
					res.Failed++
					if len(res.Failures) < 5 {
						res.Failures = append(res.Failures, err.Error())
					}
					mu.Unlock()
				}
				if err != nil {
					fail(err)
					continue
				}
				sent := time.Now()
				_ = conn.SetDeadline(sent.Add(burstAnswerWithin))
				if _, err := conn.Write(req); err != nil {
					fail(err)
					_ = conn.Close()
					continue
				}
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				took := time.Since(sent)
				if err != nil {
					fail(fmt.Errorf("no response after %v: %w", took.Round(time.Millisecond), err))
					_ = conn.Close()
					continue
				}
				mu.Lock()
				res.Statuses[resp.StatusCode]++
				res.Slowest = max(res.Slowest, took)
				conns = append(conns, conn)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.Took = time.Since(began)
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("RESULT %s\n", b)
	_, _ = in.ReadString('\n') // until the parent closes stdin
	for _, c := range conns {
		_ = c.Close()
	}
}

// Every connection of a burst of burstConns opened as fast as possible gets
// an HTTP response within burstAnswerWithin: 101, or 503 when the process
// is out of file descriptors. Before, accept failing with EMFILE left
// connections unanswered in the kernel's queue (the accept loop backed off
// and retried), and a connection accepted with the last descriptor was
// closed without a response when nbio could not duplicate it.
func TestHandshakeBurstAllAnswered(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headway int // descriptors the gateway may still open; 0: no lowered limit
	}{
		{"plenty of descriptors", 0},
		{"beyond the descriptor limit", burstConns / 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := New(Config{Addrs: []string{"127.0.0.1:0"}, HandlerWorkers: 16})
			require.NoError(t, err)
			require.NoError(t, g.Start())
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				require.NoError(t, g.Shutdown(ctx))
			})
			addr := g.Addrs()[0].String()

			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperBurstClient$", "-test.count=1")
			cmd.Env = append(os.Environ(), burstEnvAddr+"="+addr)
			stdin, err := cmd.StdinPipe()
			require.NoError(t, err)
			stdout, err := cmd.StdoutPipe()
			require.NoError(t, err)
			cmd.Stderr = os.Stderr
			require.NoError(t, cmd.Start())
			defer func() {
				_ = stdin.Close()
				_ = cmd.Wait()
			}()

			if tc.headway > 0 {
				restore := limitFDs(t, tc.headway)
				defer restore()
			}
			_, err = stdin.Write([]byte("go\n"))
			require.NoError(t, err)
			var res burstResult
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if line, ok := strings.CutPrefix(sc.Text(), "RESULT "); ok {
					require.NoError(t, json.Unmarshal([]byte(line), &res))
					break
				}
			}
			require.NotNil(t, res.Statuses, "no result from the load generator: %v", sc.Err())
			t.Logf("%d connections in %v: statuses %v, slowest response %v", burstConns, res.Took, res.Statuses, res.Slowest)

			assert.Zero(t, res.Failed, "connections without an HTTP response: %v", res.Failures)
			answered := 0
			for status, n := range res.Statuses {
				assert.Contains(t, []int{http.StatusSwitchingProtocols, http.StatusServiceUnavailable}, status)
				answered += n
			}
			assert.Equal(t, burstConns, answered)
			if tc.headway == 0 {
				assert.Equal(t, burstConns, res.Statuses[http.StatusSwitchingProtocols])
			} else {
				assert.Positive(t, res.Statuses[http.StatusServiceUnavailable], "the limit was never reached: the test measured nothing")
			}
		})
	}
}

// limitFDs lowers the process's soft RLIMIT_NOFILE so that headway more
// descriptors can be opened, and returns the function restoring it.
func limitFDs(t *testing.T, headway int) (restore func()) {
	t.Helper()
	var orig syscall.Rlimit
	require.NoError(t, syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig))
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	highest := 0
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil {
			highest = max(highest, fd)
		}
	}
	// Descriptors are allocated lowest first: the limit counts from the
	// highest one in use.
	lim := orig
	lim.Cur = uint64(highest + 1 + headway)
	require.Less(t, lim.Cur, orig.Cur, "the limit is already lower")
	require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim))
	var once sync.Once
	restore = func() {
		once.Do(func() { require.NoError(t, syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig)) })
	}
	t.Cleanup(restore)
	return restore
}
