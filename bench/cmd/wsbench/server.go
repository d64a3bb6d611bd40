package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	"github.com/lesismal/nbio/logging"

	"github.com/switchboard-go/switchboard/bench/internal/ctl"
	"github.com/switchboard-go/switchboard/bench/internal/procstat"
)

// serverTarget is one WebSocket server implementation under test. Every
// target echoes text messages back to their sender and can broadcast one
// message to all its connections.
type serverTarget interface {
	// Start listens on addrs (host:port, port 0 allowed) and serves /ws.
	Start(addrs []string) error
	// Addrs returns the addresses actually listened on.
	Addrs() []string
	// Len returns the number of open WebSocket connections.
	Len() int
	// Broadcast writes payload as one text message to every connection and
	// returns how many writes were issued.
	Broadcast(payload []byte) (int, error)
	// Shutdown closes every connection and stops serving.
	Shutdown(ctx context.Context) error
}

// targetFactories maps a -target name to its constructor. Targets register
// themselves from their own files (server_baseline.go, server_switchboard.go).
var targetFactories = map[string]func() serverTarget{}

func targetNames() []string {
	names := make([]string, 0, len(targetFactories))
	for n := range targetFactories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

type statsArgs struct {
	// GC runs runtime.GC and debug.FreeOSMemory first, so RSS reflects live
	// memory rather than garbage and unscavenged pages.
	GC bool `json:"gc"`
}

type serverStats struct {
	procstat.Sample
	RawRSSBytes int64 `json:"raw_rss_bytes"` // RSS before the optional GC
	Conns       int   `json:"conns"`
}

type broadcastArgs struct {
	Seq  uint32 `json:"seq"`
	Size int    `json:"size"`
}

type broadcastReply struct {
	Sent   int   `json:"sent"`
	TookNS int64 `json:"took_ns"`
}

type readyEvent struct {
	Pid   int      `json:"pid"`
	Addrs []string `json:"addrs"`
}

// writeHeapProfile writes the server's heap profile to
// $WSBENCH_HEAPPROFILE/server-<pid>.heap.pprof when that variable names a
// directory. It runs after every measuring GC and overwrites the file, so
// what is left describes the last measurement (with -scenarios idle: the
// idle connections). Errors are ignored: profiling must not fail a run.
func writeHeapProfile() {
	dir := os.Getenv("WSBENCH_HEAPPROFILE")
	if dir == "" {
		return
	}
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("server-%d.heap.pprof", os.Getpid())))
	if err != nil {
		return
	}
	defer f.Close()
	_ = pprof.Lookup("heap").WriteTo(f, 0)
}

// runServer is the -role server entry point: it serves the target on addrs
// and answers the coordinator's commands on stdin/stdout until stdin closes.
func runServer(ctx context.Context, targetName, addrList string) error {
	factory, ok := targetFactories[targetName]
	if !ok {
		return fmt.Errorf("unknown target %q (built: %s)", targetName, strings.Join(targetNames(), ", "))
	}
	logging.SetLevel(logging.LevelError)
	t := factory()
	srv := ctl.NewServer(os.Stdout)
	if err := t.Start(strings.Split(addrList, ",")); err != nil {
		srv.EmitError("ready", err)
		return err
	}
	srv.Emit("ready", readyEvent{Pid: os.Getpid(), Addrs: t.Addrs()})
	err := srv.Serve(ctx, os.Stdin, func(ctx context.Context, cmd string, raw json.RawMessage) (any, error) {
		switch cmd {
		case "stats":
			var a statsArgs
			if len(raw) > 0 {
				if err := json.Unmarshal(raw, &a); err != nil {
					return nil, err
				}
			}
			var st serverStats
			if rss, err := procstat.RSS("/proc/self/statm"); err == nil {
				st.RawRSSBytes = rss
			}
			if a.GC {
				runtime.GC()
				debug.FreeOSMemory()
				writeHeapProfile()
			}
			s, err := procstat.Self()
			if err != nil {
				return nil, err
			}
			st.Sample = s
			st.Conns = t.Len()
			return st, nil
		case "broadcast":
			var a broadcastArgs
			if err := json.Unmarshal(raw, &a); err != nil {
				return nil, err
			}
			payload := make([]byte, max(a.Size, headerLen))
			start := time.Now()
			putPayload(payload, kindBroadcast, start.UnixNano(), a.Seq)
			n, err := t.Broadcast(payload)
			return broadcastReply{Sent: n, TookNS: int64(time.Since(start))}, err
		case "shutdown":
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return nil, t.Shutdown(sctx)
		default:
			return nil, fmt.Errorf("server: unknown command %q", cmd)
		}
	})
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = t.Shutdown(sctx)
	if ctx.Err() != nil {
		return nil
	}
	if err != nil && err.Error() != "EOF" {
		return err
	}
	return nil
}
