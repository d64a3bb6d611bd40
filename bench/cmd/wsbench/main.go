// Command wsbench is Switchboard's multi-process WebSocket connection
// harness. One binary plays three roles: the coordinator (default) starts K
// server processes (-role server) and M load-generator processes
// (-role client) on loopback, each below the per-process open-files limit,
// spreads the connections over them, drives the scenarios and reports.
//
//	cd bench && go run ./cmd/wsbench -conns 15000 -scenarios idle,broadcast
//	go run ./cmd/wsbench -conns 100000 -targets switchboard -scenarios idle,echo -rate 10000
//	go run ./cmd/wsbench -smoke                     # 2,000 conns, every scenario, switchboard and baseline
//
// Targets: switchboard (the gateway package on nbio, handlers inline on its
// event loops), switchboard-pool (the same with every default: handlers on
// its executor), baseline (the whitepaper's goroutine-per-connection
// gorilla/websocket server) and the peers, each set up as its own
// documentation recommends for many connections: centrifuge (a Centrifuge
// Node; the load generators speak its JSON client protocol), gws (lxzan/gws
// event handler), gobwas (gobwas/ws on an epoll loop and a worker pool) and
// coder (coder/websocket, goroutine per connection). Scenarios:
// idle, echo, broadcast, churn. Output: a table on stdout, -json for one JSON
// object per target and scenario per line, -html FILE for a self-contained
// report with charts. Progress goes to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	role := fs.String("role", "coordinator", "process role: coordinator, server or client (server and client are started by the coordinator)")
	target := fs.String("target", "", "server role: target to serve (one of -targets' names)")
	addrs := fs.String("addrs", "", "server role: comma-separated listen addresses")
	procs := fs.Int("procs", 0, "client role: GOMAXPROCS, with one nbio event loop fewer (0: all CPUs)")
	var targets, scenarios string
	fs.StringVar(&targets, "targets", "switchboard,baseline", "comma-separated targets to compare: "+strings.Join(targetNames(), ", "))
	fs.StringVar(&scenarios, "scenarios", "idle,echo,broadcast,churn", "comma-separated scenarios, run in this order on the same connections")
	fs.IntVar(&cfg.Conns, "conns", 10000, "connections per target")
	fs.IntVar(&cfg.Servers, "servers", 0, "server processes per target (0: as few as RLIMIT_NOFILE allows)")
	fs.IntVar(&cfg.Clients, "clients", 0, "load-generator processes (0: as few as RLIMIT_NOFILE allows)")
	fs.IntVar(&cfg.ClientProcs, "client-procs", 0, "GOMAXPROCS of each load generator, which runs one nbio event loop fewer (0: the CPUs divided among the load generators, at least 2)")
	fs.IntVar(&cfg.Headroom, "headroom", 1000, "file descriptors each process keeps free below RLIMIT_NOFILE")
	fs.IntVar(&cfg.SrcAddrs, "src-addrs", 0, "127.0.0.x source addresses for clients (0: enough for the port range)")
	fs.IntVar(&cfg.DstAddrs, "dst-addrs", 0, "127.0.0.x listen addresses per server (0: enough for the port range)")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", 64, "concurrent dials per load generator")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 10*time.Second, "timeout of one dial + handshake")
	fs.DurationVar(&cfg.Settle, "settle", 3*time.Second, "wait after connecting (and after churn) before measuring")
	fs.Float64Var(&cfg.Rate, "rate", 1000, "echo: total messages per second over all connections")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "echo: how long to send")
	fs.IntVar(&cfg.Size, "size", 200, "echo and broadcast: message size in bytes")
	fs.IntVar(&cfg.Repeats, "repeats", 10, "broadcast: publishes per target")
	fs.DurationVar(&cfg.BroadcastTimeout, "broadcast-timeout", 30*time.Second, "broadcast: wait this long for the last delivery")
	fs.Float64Var(&cfg.ChurnRate, "churn-rate", 200, "churn: close+reopen cycles per second over all connections")
	fs.DurationVar(&cfg.ChurnDuration, "churn-duration", 30*time.Second, "churn: how long to churn")
	fs.Float64Var(&cfg.LeakRSSTolerance, "leak-rss-tolerance", 0.25, "churn: allowed relative RSS growth (plus 8 MiB) before it counts as a leak")
	fs.IntVar(&cfg.LeakGoroutineTolerance, "leak-goroutine-tolerance", 10, "churn: allowed goroutine growth over the baseline")
	fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object per target per scenario per line instead of the table")
	fs.StringVar(&cfg.HTML, "html", "", "also write a self-contained HTML report to this file")
	fs.BoolVar(&cfg.Strict, "strict", false, "exit non-zero when a target fails to establish every connection, loses broadcast or echo messages, or leaks in churn")
	smoke := fs.Bool("smoke", false, "small run for CI: 2,000 conns, short echo/broadcast/churn, -strict (flags given explicitly still apply)")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *role == "server" || *role == "client" {
		if stopProf := startChildProfile(*role); stopProf != nil {
			defer stopProf()
		}
	}

	switch *role {
	case "server":
		if err := runServer(ctx, *target, *addrs); err != nil {
			fmt.Fprintln(stderr, "wsbench server:", err)
			return 1
		}
		return 0
	case "client":
		if err := runClient(ctx, *procs); err != nil {
			fmt.Fprintln(stderr, "wsbench client:", err)
			return 1
		}
		return 0
	case "coordinator":
	default:
		fmt.Fprintf(stderr, "wsbench: unknown -role %q\n", *role)
		return 2
	}

	if *smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("conns", func() { cfg.Conns = 2000 })
		def("settle", func() { cfg.Settle = time.Second })
		def("rate", func() { cfg.Rate = 2000 })
		def("duration", func() { cfg.Duration = 3 * time.Second })
		def("repeats", func() { cfg.Repeats = 5 })
		def("churn-rate", func() { cfg.ChurnRate = 200 })
		def("churn-duration", func() { cfg.ChurnDuration = 3 * time.Second })
		def("strict", func() { cfg.Strict = true })
	}
	cfg.Targets = splitList(targets)
	cfg.Scenarios = splitList(scenarios)
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, "wsbench:", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "wsbench:", err)
		return 1
	}
	cfg.Self = self
	results, err := coordinate(ctx, cfg, stderr)
	if len(results) > 0 {
		if cfg.JSON {
			if werr := writeJSONLines(stdout, results); werr != nil && err == nil {
				err = werr
			}
		} else {
			writeTable(stdout, results)
		}
		if cfg.HTML != "" {
			if werr := writeHTMLFile(cfg.HTML, cfg, results); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "wsbench:", err)
		if errors.Is(err, context.Canceled) {
			return 130
		}
		return 1
	}
	if cfg.Strict {
		if problems := checkStrict(results); len(problems) > 0 {
			for _, p := range problems {
				fmt.Fprintln(stderr, "wsbench: FAIL:", p)
			}
			return 1
		}
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// startChildProfile writes a CPU profile of a server or client child to
// $WSBENCH_CPUPROFILE/<role>-<pid>.pprof when that variable names a
// directory (children inherit the coordinator's environment). Children are
// usually killed rather than left to exit, so the profile covers a window:
// it starts $WSBENCH_CPUPROFILE_DELAY after the child starts (a duration,
// default 0) and is flushed after $WSBENCH_CPUPROFILE_FOR (default 30s) or
// when the child returns, whichever comes first. The returned function
// stops it; it is nil when no profile was started.
func startChildProfile(role string) func() {
	dir := os.Getenv("WSBENCH_CPUPROFILE")
	if dir == "" {
		return nil
	}
	delay, _ := time.ParseDuration(os.Getenv("WSBENCH_CPUPROFILE_DELAY"))
	span, err := time.ParseDuration(os.Getenv("WSBENCH_CPUPROFILE_FOR"))
	if err != nil || span <= 0 {
		span = 30 * time.Second
	}
	var once sync.Once
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-time.After(delay):
		case <-stop:
			return
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", role, os.Getpid())))
		if err != nil {
			return
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return
		}
		defer pprof.StopCPUProfile()
		select {
		case <-time.After(span):
		case <-stop:
		}
	}()
	return func() {
		once.Do(func() { close(stop) })
		<-done
	}
}
