package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchboard-go/switchboard/bench/internal/logw"
	"github.com/switchboard-go/switchboard/bench/internal/procstat"
	"github.com/switchboard-go/switchboard/internal/pgtest"
)

// supportdeskPkg is the reference server, built from the SDK module through
// the bench module's replace directive (go.mod lists it as a tool, so its
// dependencies stay in the bench module's graph).
const (
	supportdeskPkg = "github.com/switchboard-go/switchboard/examples/supportdesk"
	wsbenchPkg     = "github.com/switchboard-go/switchboard/bench/cmd/wsbench"
)

// goBuild builds pkg into dir/name with the go command of the PATH.
func goBuild(ctx context.Context, pkg, out string, log io.Writer) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s (run from the bench module, or pass a prebuilt binary): %w", pkg, err)
	}
	return nil
}

// child is a server process the harness started: its own process group,
// SIGKILLed by the kernel if the coordinator dies (Pdeathsig, held by a
// locked OS thread for as long as the child runs, since the signal follows
// the thread that started it).
type child struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startChild(name string, cmd *exec.Cmd) (*child, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	c := &child{name: name, cmd: cmd, exited: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			close(c.exited)
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(c.exited)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// kill SIGKILLs the child's process group and waits for it.
func (c *child) kill() {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	_ = c.cmd.Process.Kill()
	<-c.exited
}

func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// deskNode is one supportdesk process.
type deskNode struct {
	name string
	bin  string
	args []string // without -addr/-ops-addr
	env  []string
	log  io.Writer
	host string

	mu   sync.Mutex
	proc *child
	ws   string // WebSocket host:port (fixed after the first start)
	ops  string // ops base URL
	// base is the process's RSS before any connection.
	base int64
}

// start runs the node and waits until its banner names its listeners and
// /readyz answers 200. A restart reuses the first start's ports.
func (n *deskNode) start(ctx context.Context) error {
	n.mu.Lock()
	addr, ops := n.host+":0", n.host+":0"
	if n.ws != "" {
		addr = n.ws
		ops = strings.TrimPrefix(n.ops, "http://")
	}
	n.mu.Unlock()
	args := append([]string{"-addr", addr, "-ops-addr", ops}, n.args...)
	cmd := exec.Command(n.bin, args...)
	cmd.Env = append(os.Environ(), n.env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = logw.Prefix(n.log, "["+n.name+"] ")
	p, err := startChild(n.name, cmd)
	if err != nil {
		return err
	}
	type banner struct{ ws, ops string }
	got := make(chan banner, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var b banner
		sent := false
		pw := logw.Prefix(n.log, "["+n.name+"] ")
		for sc.Scan() {
			line := sc.Text()
			f := strings.Fields(line)
			switch {
			case len(f) >= 2 && f[0] == "websocket:":
				b.ws = strings.TrimSuffix(strings.TrimPrefix(f[1], "ws://"), "/ws")
			case len(f) >= 2 && f[0] == "metrics/health:":
				b.ops = strings.TrimSuffix(f[1], "/metrics")
			}
			if !sent && b.ws != "" && b.ops != "" {
				got <- b
				sent = true
			}
			if strings.HasPrefix(line, "supportdesk:") {
				fmt.Fprintln(pw, line)
			}
		}
	}()
	var b banner
	select {
	case b = <-got:
	case <-p.exited:
		return fmt.Errorf("%s exited during start (%v)", n.name, p.cmd.ProcessState)
	case <-time.After(60 * time.Second):
		p.kill()
		return fmt.Errorf("%s: no banner within 60s", n.name)
	case <-ctx.Done():
		p.kill()
		return ctx.Err()
	}
	n.mu.Lock()
	n.proc, n.ws, n.ops = p, b.ws, b.ops
	n.mu.Unlock()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := httpOK(ctx, b.ops+"/readyz"); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("%s not ready: %w", n.name, err)
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited while starting", n.name)
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func httpOK(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

func (n *deskNode) current() *child {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// kill SIGKILLs the node (chaos, and the end of a run).
func (n *deskNode) kill() {
	if p := n.current(); p != nil {
		p.kill()
	}
}

// sample reads the node's CPU and RSS from /proc.
func (n *deskNode) sample() (procstat.ProcSample, error) {
	p := n.current()
	if p == nil || !p.alive() {
		return procstat.ProcSample{}, errors.New(n.name + " is not running")
	}
	return procstat.Proc(p.pid())
}

// profile fetches a CPU profile of secs seconds from the node's ops
// listener (supportdesk has no profile flag; its ops listener serves
// /debug/pprof) into path.
func (n *deskNode) profile(ctx context.Context, secs int, path string) error {
	n.mu.Lock()
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", n.ops, secs)
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// --- the cluster's shared services ----------------------------------------

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRedis runs a throwaway redis-server (no persistence) on a free
// loopback port and waits until it answers PING.
func startRedis(ctx context.Context, dir string, log io.Writer) (*child, string, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, "", fmt.Errorf("the cluster setup needs redis-server on PATH: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--dir", dir, "--maxclients", "10000")
	cmd.Stdout = logw.Prefix(log, "[redis] ")
	cmd.Stderr = cmd.Stdout
	p, err := startChild("redis", cmd)
	if err != nil {
		return nil, "", err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if redisPing(addr) == nil {
			return p, addr, nil
		}
		if time.Now().After(deadline) || !p.alive() || ctx.Err() != nil {
			p.kill()
			return nil, "", fmt.Errorf("redis-server on %s did not answer PING", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	b := make([]byte, 7)
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	if string(b) != "+PONG\r\n" {
		return fmt.Errorf("redis answered %q", b)
	}
	return nil
}

// postgres is a throwaway PostgreSQL server (internal/pgtest: initdb into a
// temporary directory owned by the postgres user, postgres on a free
// loopback port with fsync on), with one database for the desk.
type postgres struct {
	srv *pgtest.Server
	dsn string
}

func startPostgres(ctx context.Context) (*postgres, error) {
	srv, err := pgtest.New()
	if err != nil {
		return nil, err
	}
	dsn, err := srv.CreateDatabase(ctx, "desk")
	if err != nil {
		_ = srv.Close()
		return nil, err
	}
	return &postgres{srv: srv, dsn: dsn}, nil
}

// sample sums the postmaster (our child named postgres) and its backends.
func (p *postgres) sample() (procstat.ProcSample, error) {
	var s procstat.ProcSample
	pids := procstat.ChildrenNamed(os.Getpid(), "postgres")
	if len(pids) == 0 {
		return s, errors.New("postgres: postmaster not found")
	}
	for _, pid := range pids {
		t, err := procstat.Tree(pid)
		if err != nil {
			return s, err
		}
		s.CPUSeconds += t.CPUSeconds
		s.RSSBytes += t.RSSBytes
	}
	return s, nil
}

func (p *postgres) close() error { return p.srv.Close() }

// tempDir makes the run's scratch directory (binaries, stores, profiles
// unless -server-profile says otherwise).
func tempDir() (string, error) {
	return os.MkdirTemp("", "deskbench-")
}

func joinPath(dir, name string) string { return filepath.Join(dir, name) }
