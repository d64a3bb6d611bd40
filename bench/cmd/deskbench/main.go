// Command deskbench drives the supportdesk reference server end to end, with
// its real wire protocol, from several load-generator processes, and
// reports what a support desk's users feel: time from start to an agent's
// offer and to assignment by tier, chat message latency each way, ack
// latency, and whether every acknowledged message reached the other side
// exactly once.
//
//	cd bench && go run ./cmd/deskbench -smoke                  # CI: 1 node, 200 customers, 10 agents (~1 min)
//	go run ./cmd/deskbench -customers 18000 -agents 400 -rate 10000 -conv-rate 40 -duration 60s -html desk.html
//	go run ./cmd/deskbench -sweep -sweep-rates 2000:20000:2000
//	go run ./cmd/deskbench -isolation -chaos
//	go run ./cmd/deskbench -setup cluster -nodes 3 -customers 30000
//
// One binary, two roles. The coordinator (what you run) builds supportdesk
// from this module (go build …/examples/supportdesk) and starts it — one
// node on its embedded store (-data in a temporary directory), or a cluster
// of -nodes with a real redis-server and a real PostgreSQL it starts
// itself — then re-executes itself as load generators (-role client), each
// below RLIMIT_NOFILE, and talks to them in JSON lines over stdin/stdout.
// See bench/README.md for the workload, the figures and the output.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("deskbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	role := fs.String("role", "coordinator", "process role: coordinator or client (clients are started by the coordinator)")
	procs := fs.Int("procs", 0, "client role: GOMAXPROCS, with one nbio event loop fewer (0: all CPUs)")
	fs.StringVar(&cfg.Setup, "setup", "single", "single (one node, embedded store) or cluster (-nodes nodes, redis-server and PostgreSQL started by the harness)")
	fs.IntVar(&cfg.Nodes, "nodes", 0, "supportdesk processes (single: 1; cluster: default 3)")
	fs.StringVar(&cfg.Supportdesk, "supportdesk", "", "prebuilt supportdesk binary (default: go build it from this module)")
	fs.StringVar(&cfg.Wsbench, "wsbench", "", "prebuilt wsbench binary for the echo reference (default: go build ./cmd/wsbench)")
	fs.StringVar(&cfg.ServerLog, "server-log-level", "warn", "supportdesk -log-level (info logs two lines per conversation)")
	serverArgs := fs.String("server-args", "", "extra supportdesk flags, space-separated (e.g. \"-offer-timeout 10s\")")
	fs.IntVar(&cfg.Customers, "customers", 10_000, "customer connections (most idle, some chatting, -waiting parked in the queue)")
	fs.IntVar(&cfg.Agents, "agents", 200, "agent connections")
	fs.IntVar(&cfg.AgentCap, "agent-capacity", 4, "concurrent conversations per agent (token claim cap)")
	skills := fs.String("agent-skills", "", "comma-separated skills of every agent (token claim skills)")
	tiers := fs.String("tiers", "10,30,60", "vip,premium,standard shares of customers and of new conversations")
	fs.Float64Var(&cfg.ConvRate, "conv-rate", 20, "new conversations per second")
	fs.DurationVar(&cfg.ConvDuration, "conv-duration", 30*time.Second, "how long a conversation lasts after assignment before its agent resolves it")
	fs.Float64Var(&cfg.Rate, "rate", 2000, "chat messages per second, customers and agents together, spread over the active conversations (conv-rate × conv-duration)")
	fs.Float64Var(&cfg.TypingFrac, "typing", 0.2, "fraction of chat messages preceded by a typing event")
	fs.IntVar(&cfg.MsgSize, "size", 120, "chat text size in bytes")
	fs.IntVar(&cfg.Waiting, "waiting", 0, "customers parked in the queue for the whole run (their entry skill no agent has): position updates")
	fs.StringVar(&cfg.WaitingEntry, "waiting-entry", "callback", "the entry (skill) of the parked customers' conversations")
	fs.DurationVar(&cfg.Warmup, "warmup", 15*time.Second, "warm-up: fills the steady number of conversations, with end times spread over -conv-duration")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 2*time.Minute, "finish: wait this long for every acknowledgement and live delivery before the audit")
	fs.BoolVar(&cfg.WarmupChat, "warmup-chat", true, "chat during the warm-up; false fills the conversations first, without the messages' load on the server")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "the measured steady phase")
	fs.BoolVar(&cfg.Sweep, "sweep", false, "after the steady phase, raise the message rate step by step until P99 exceeds -sweep-p99")
	sweepRates := fs.String("sweep-rates", "", "sweep steps: a,b,c or from:to:step (msgs/s)")
	fs.DurationVar(&cfg.SweepStep, "sweep-step", 15*time.Second, "measured time per sweep step")
	fs.DurationVar(&cfg.SweepP99, "sweep-p99", 50*time.Millisecond, "the P99 a sweep step must stay under")
	fs.BoolVar(&cfg.Isolation, "isolation", false, "isolation check: measure, then again with one conversation flooded by its customer at PROTOCOL.md's limits")
	fs.DurationVar(&cfg.IsolationDur, "isolation-duration", 20*time.Second, "each half of the isolation check")
	fs.Float64Var(&cfg.FloodRate, "flood-rate", 9, "flood: messages per second after the burst (limit 10; 9 keeps arrival jitter from tripping the limiter)")
	fs.IntVar(&cfg.FloodBurst, "flood-burst", 20, "flood: messages sent at once at the start (limit 20)")
	fs.Float64Var(&cfg.FloodTyping, "flood-typing", 35, "flood: typing frames per second (with the messages, under 50 frames/s per connection)")
	fs.IntVar(&cfg.FloodSize, "flood-size", 8000, "flood: text size (limit 8 KiB)")
	fs.BoolVar(&cfg.Chaos, "chaos", false, "chaos: SIGKILL a node a third into the chaos phase; report takeover and losses")
	fs.IntVar(&cfg.ChaosNode, "chaos-node", 0, "the node to kill (node0 is the oldest: it runs the core)")
	fs.DurationVar(&cfg.ChaosDown, "chaos-down", time.Second, "how long the killed node stays down before it is restarted")
	fs.BoolVar(&cfg.ChaosRestart, "chaos-restart", true, "restart the killed node (same ports and store); a single node always needs it")
	fs.DurationVar(&cfg.ChaosDuration, "chaos-duration", 30*time.Second, "the chaos phase")
	fs.BoolVar(&cfg.EchoRef, "echo-ref", true, "same-run reference: wsbench's gateway echo at the same connections and rate, after the desk run")
	fs.DurationVar(&cfg.EchoDuration, "echo-duration", 0, "echo reference duration (default -duration)")
	fs.IntVar(&cfg.Clients, "clients", 0, "load-generator processes (0: as few as RLIMIT_NOFILE allows)")
	fs.IntVar(&cfg.ClientProcs, "client-procs", 0, "GOMAXPROCS of each load generator (0: the CPUs divided among them, at least 2)")
	fs.IntVar(&cfg.Headroom, "headroom", 1000, "file descriptors each process keeps free below RLIMIT_NOFILE")
	fs.IntVar(&cfg.SrcAddrs, "src-addrs", 0, "127.0.0.x source addresses for the load generators (0: enough for the port range)")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", 64, "concurrent dials per load generator")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 15*time.Second, "timeout of one dial + handshake + hello")
	fs.StringVar(&cfg.ProfileDir, "server-profile", "", "fetch a CPU profile of every node during the steady phase into this directory (from the ops listener's /debug/pprof)")
	fs.IntVar(&cfg.ProfileSecs, "profile-seconds", 20, "length of the server CPU profiles")
	fs.BoolVar(&cfg.JSON, "json", false, "print one JSON object per phase per line, then the summary, instead of the table")
	fs.StringVar(&cfg.HTML, "html", "", "also write a self-contained HTML report to this file")
	fs.BoolVar(&cfg.Strict, "strict", false, "exit non-zero on any lost, duplicated or unanswered message, or a connection that did not establish")
	smoke := fs.Bool("smoke", false, "small run for CI: 1 node, 200 customers, 10 agents, short phases with the isolation check, -strict (explicit flags still apply)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch *role {
	case "client":
		if err := runClient(ctx, *procs); err != nil {
			fmt.Fprintln(stderr, "deskbench client:", err)
			return 1
		}
		return 0
	case "coordinator":
	default:
		fmt.Fprintf(stderr, "deskbench: unknown -role %q\n", *role)
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
		def("customers", func() { cfg.Customers = 200 })
		def("agents", func() { cfg.Agents = 10 })
		def("agent-capacity", func() { cfg.AgentCap = 3 })
		def("conv-rate", func() { cfg.ConvRate = 2 })
		def("conv-duration", func() { cfg.ConvDuration = 10 * time.Second })
		def("rate", func() { cfg.Rate = 200 })
		def("waiting", func() { cfg.Waiting = 20 })
		def("warmup", func() { cfg.Warmup = 4 * time.Second })
		def("duration", func() { cfg.Duration = 8 * time.Second })
		def("isolation", func() { cfg.Isolation = true })
		def("isolation-duration", func() { cfg.IsolationDur = 4 * time.Second })
		def("echo-duration", func() { cfg.EchoDuration = 4 * time.Second })
		def("chaos-duration", func() { cfg.ChaosDuration = 10 * time.Second })
		def("strict", func() { cfg.Strict = true })
	}
	var err error
	if cfg.TierMix, err = parseMix(*tiers); err == nil {
		cfg.SweepRates, err = parseRates(*sweepRates)
	}
	if err != nil {
		fmt.Fprintln(stderr, "deskbench:", err)
		return 2
	}
	if *skills != "" {
		cfg.AgentSkills = splitList(*skills)
	}
	cfg.ServerArgs = strings.Fields(*serverArgs)
	if cfg.EchoDuration <= 0 {
		cfg.EchoDuration = cfg.Duration
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(stderr, "deskbench:", err)
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(stderr, "deskbench:", err)
		return 1
	}
	if cfg.Self == "" {
		cfg.Self = self
	}
	return report(ctx, cfg, stdout, stderr)
}

// report runs the coordinator and prints its rows.
func report(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	rows, err := coordinate(ctx, cfg, stderr)
	if len(rows) > 0 {
		if cfg.JSON {
			if werr := writeJSONLines(stdout, rows); werr != nil && err == nil {
				err = werr
			}
		} else {
			writeTable(stdout, rows)
		}
		if cfg.HTML != "" {
			if werr := writeHTMLFile(cfg.HTML, cfg, rows); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "deskbench:", err)
		if errors.Is(err, context.Canceled) {
			return 130
		}
		return 1
	}
	if cfg.Strict {
		if problems := checkStrict(rows, cfg.Chaos); len(problems) > 0 {
			for _, p := range problems {
				fmt.Fprintln(stderr, "deskbench: FAIL:", p)
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
