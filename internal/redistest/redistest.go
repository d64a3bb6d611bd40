// Package redistest starts a throwaway redis-server for integration tests:
// on a free loopback port, without persistence, in a temporary directory,
// stopped when the test ends.
//
// When redis-server is not on PATH the test is skipped with a message,
// unless SWITCHBOARD_REQUIRE_REDIS=1 (set by CI), in which case it fails:
// CI must never pass by skipping the Redis tests.
package redistest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RequireEnv is the environment variable that turns a missing redis-server
// into a test failure instead of a skip.
const RequireEnv = "SWITCHBOARD_REQUIRE_REDIS"

// Server is a redis-server process owned by a test.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	opts Options

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Start starts a redis-server and returns its address and a stop function
// (also registered with tb.Cleanup, so calling it is optional). It skips or
// fails tb when redis-server is unavailable (see the package doc).
func Start(tb testing.TB) (addr string, stop func()) {
	s := StartServer(tb)
	return s.Addr(), s.Stop
}

// Options configure StartServerWith.
type Options struct {
	// AppendOnly turns persistence on (appendonly yes, appendfsync always),
	// so data survives Kill and Restart.
	AppendOnly bool
}

// StartServer is Start returning the *Server, for tests that kill and
// restart Redis.
func StartServer(tb testing.TB) *Server {
	tb.Helper()
	return StartServerWith(tb, Options{})
}

// StartServerWith is StartServer with options.
func StartServerWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			tb.Fatalf("redistest: redis-server not found on PATH and %s=1: %v", RequireEnv, err)
		}
		tb.Skipf("redistest: redis-server not found on PATH; install it (apt-get install redis-server) or set %s=1 to fail instead", RequireEnv)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), port: freePort(tb), opts: opts}
	s.start()
	tb.Cleanup(s.Stop)
	return s
}

// Addr returns "127.0.0.1:port"; it stays the same across Restart.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *Server) start() {
	s.tb.Helper()
	aof := []string{"--appendonly", "no"}
	if s.opts.AppendOnly {
		aof = []string{"--appendonly", "yes", "--appendfsync", "always"}
	}
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--dir", s.dir,
		"--protected-mode", "no", "--loglevel", "warning"}, aof...)
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	log, err := os.Create(s.dir + "/redis.log")
	if err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("redistest: start redis-server: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if ping(s.Addr()) == nil {
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(s.dir + "/redis.log")
			s.Kill()
			s.tb.Fatalf("redistest: redis-server on %s not ready after 10s; log:\n%s", s.Addr(), out)
		}
		<-tick.C
	}
}

// Kill stops the server abruptly (SIGKILL), losing all its data unless it
// runs with AppendOnly, and waits
// for the process to exit. Killing a stopped server is a no-op.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Restart kills the server if it runs and starts it again on the same port
// (empty, unless AppendOnly), and waits until it answers PING.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	s.start()
}

// Stop kills the server; safe to call more than once.
func (s *Server) Stop() { s.Kill() }

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected reply %q", line)
	}
	return nil
}

func freePort(tb testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
