package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/switchboard-go/switchboard/bench/internal/ctl"
	"github.com/switchboard-go/switchboard/bench/internal/hist"
	"github.com/switchboard-go/switchboard/bench/internal/nbclient"
	"github.com/switchboard-go/switchboard/bench/internal/procstat"
)

type dialTarget struct {
	Addrs []string `json:"addrs"` // server listen addresses, used round-robin
	Count int      `json:"count"` // connections to open to this server
}

type connectArgs struct {
	Targets     []dialTarget `json:"targets"`
	Src         []string     `json:"src"` // source IPs, used round-robin
	Path        string       `json:"path"`
	Proto       string       `json:"proto,omitempty"` // wire protocol (proto.go); "" is raw
	Concurrency int          `json:"concurrency"`
	TimeoutMS   int          `json:"timeout_ms"`
}

type connectReply struct {
	Established int      `json:"established"`
	Failed      int      `json:"failed"`
	Seconds     float64  `json:"seconds"`
	Errors      []string `json:"errors,omitempty"`
}

type progressEvent struct {
	Established int64 `json:"established"`
	Failed      int64 `json:"failed"`
}

type echoArgs struct {
	Rate       float64 `json:"rate"` // messages per second from this client
	DurationMS int     `json:"duration_ms"`
	Size       int     `json:"size"`
	DrainMS    int     `json:"drain_ms"` // wait this long for outstanding replies
}

type echoReply struct {
	Sent     int64         `json:"sent"`
	Received int64         `json:"received"`
	Errors   int64         `json:"errors"`
	RTT      hist.Snapshot `json:"rtt"`
	Seconds  float64       `json:"seconds"`
}

type bcastArmArgs struct {
	Seq uint32 `json:"seq"`
}

type bcastWaitArgs struct {
	Seq       uint32 `json:"seq"`
	TimeoutMS int    `json:"timeout_ms"`
}

type bcastWaitReply struct {
	Expected int64         `json:"expected"`
	Received int64         `json:"received"`
	Latency  hist.Snapshot `json:"latency"`
}

type churnArgs struct {
	Rate        float64 `json:"rate"` // close+reopen cycles per second in this client
	DurationMS  int     `json:"duration_ms"`
	Concurrency int     `json:"concurrency"`
}

type churnReply struct {
	Closed int64 `json:"closed"`
	Opened int64 `json:"opened"`
	Failed int64 `json:"failed"`
}

type clientStats struct {
	procstat.Sample
	Established int64          `json:"established"`
	Dropped     int64          `json:"dropped"` // closed by the server or network, not by the harness
	DropErrors  map[string]int `json:"drop_errors,omitempty"`
	BadMessages int64          `json:"bad_messages"`
}

// connInfo is stored as each connection's session: where it was dialled.
type connInfo struct {
	dst, src string
	proto    string        // wire protocol (proto.go)
	idx      int           // position in loadClient.conns, -1 when removed; guarded by loadClient.mu
	closing  atomic.Bool   // closed on purpose by churn or close_all
	closed   chan struct{} // closed by onClose
	ready    chan struct{} // protoCentrifuge: closed when the connect reply arrived
	readyOne sync.Once
}

type bcastRound struct {
	seq   uint32
	count atomic.Int64
	lat   hist.Histogram
}

type loadClient struct {
	srv  *ctl.Server
	nb   *nbclient.Client
	path string

	mu    sync.Mutex
	proto string // wire protocol of every connection (proto.go), set by connect
	conns []*websocket.Conn

	established atomic.Int64
	failed      atomic.Int64

	echoRTT  hist.Histogram
	echoRecv atomic.Int64
	round    atomic.Pointer[bcastRound]
	errCount atomic.Int64

	dropped    atomic.Int64 // connections closed by the server or the network
	dropMu     sync.Mutex
	dropErrors map[string]int
}

func runClient(ctx context.Context, procs int) error {
	if procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	cl := &loadClient{srv: ctl.NewServer(os.Stdout), path: "/ws"}
	nb, err := nbclient.New(nbclient.Config{Name: "wsbench-client", OnMessage: cl.onMessage, OnClose: cl.onClose})
	if err != nil {
		return err
	}
	defer nb.Close()
	cl.nb = nb
	cl.srv.Emit("ready", readyEvent{Pid: os.Getpid()})
	err = cl.srv.Serve(ctx, os.Stdin, cl.handle)
	cl.closeAll(2 * time.Second)
	if ctx.Err() != nil || err == nil || err.Error() == "EOF" {
		return nil
	}
	return err
}

func (cl *loadClient) handle(ctx context.Context, cmd string, raw json.RawMessage) (any, error) {
	switch cmd {
	case "connect":
		var a connectArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		return cl.connect(ctx, a), nil
	case "echo":
		var a echoArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		return cl.echo(ctx, a), nil
	case "bcast_arm":
		var a bcastArmArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		cl.round.Store(&bcastRound{seq: a.Seq})
		return nil, nil
	case "bcast_wait":
		var a bcastWaitArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		return cl.bcastWait(ctx, a)
	case "churn":
		var a churnArgs
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, err
		}
		return cl.churn(ctx, a), nil
	case "close_all":
		return cl.closeAll(10 * time.Second), nil
	case "stats":
		s, err := procstat.Self()
		cs := clientStats{Sample: s, Established: cl.established.Load(), Dropped: cl.dropped.Load(), BadMessages: cl.errCount.Load()}
		cl.dropMu.Lock()
		cs.DropErrors = maps.Clone(cl.dropErrors)
		cl.dropMu.Unlock()
		return cs, err
	default:
		return nil, fmt.Errorf("client: unknown command %q", cmd)
	}
}

func (cl *loadClient) onMessage(ws *websocket.Conn, _ websocket.MessageType, data []byte) {
	now := time.Now().UnixNano()
	info, _ := ws.Session().(*connInfo)
	if info == nil || info.proto != protoCentrifuge {
		cl.onPayload(data, now)
		return
	}
	splitCentrifuge(data, func(kind centrifugeFrame, payload []byte) {
		switch kind {
		case cfPayload:
			cl.onPayload(payload, now)
		case cfPing:
			_ = ws.WriteMessage(websocket.TextMessage, centrifugePing)
		case cfConnect:
			info.readyOne.Do(func() { close(info.ready) })
		default:
			cl.errCount.Add(1)
		}
	})
}

// onPayload records one benchmark payload received at now.
func (cl *loadClient) onPayload(data []byte, now int64) {
	kind, ts, seq, err := parsePayload(data)
	if err != nil {
		cl.errCount.Add(1)
		return
	}
	switch kind {
	case kindEcho:
		cl.echoRTT.Record(now - ts)
		cl.echoRecv.Add(1)
	case kindBroadcast:
		if r := cl.round.Load(); r != nil && r.seq == seq {
			r.lat.Record(now - ts)
			r.count.Add(1)
		}
	}
}

func (cl *loadClient) add(ws *websocket.Conn, info *connInfo) {
	cl.mu.Lock()
	info.idx = len(cl.conns)
	cl.conns = append(cl.conns, ws)
	cl.mu.Unlock()
	cl.established.Add(1)
}

func (cl *loadClient) onClose(ws *websocket.Conn, err error) {
	info, _ := ws.Session().(*connInfo)
	if info == nil {
		return
	}
	if !info.closing.Load() {
		cl.dropped.Add(1)
		msg := "closed without error"
		if err != nil {
			msg = err.Error()
		}
		cl.dropMu.Lock()
		if cl.dropErrors == nil {
			cl.dropErrors = map[string]int{}
		}
		if len(cl.dropErrors) < 8 {
			cl.dropErrors[msg]++
		}
		cl.dropMu.Unlock()
	}
	cl.mu.Lock()
	removed := false
	if i := info.idx; i >= 0 && i < len(cl.conns) && cl.conns[i] == ws {
		last := len(cl.conns) - 1
		cl.conns[i] = cl.conns[last]
		if moved, ok := cl.conns[i].Session().(*connInfo); ok {
			moved.idx = i
		}
		cl.conns[last] = nil
		cl.conns = cl.conns[:last]
		info.idx = -1
		removed = true
	}
	cl.mu.Unlock()
	if removed {
		cl.established.Add(-1)
		close(info.closed)
	}
}

// closeGracefully sends a close frame and waits for the server to end the
// connection, so the socket is closed by nbio's own event loop. Closing it
// from another goroutine races with events already harvested by that loop:
// the descriptor number can be reused by the next dial and a stale hang-up
// event would then close the new connection. After timeout the connection
// is closed locally.
func closeGracefully(ws *websocket.Conn, info *connInfo, timeout time.Duration) {
	_ = ws.WriteClose(1000, "bye")
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-info.closed:
	case <-t.C:
		_ = ws.Close()
		<-info.closed
	}
}

// dial opens one WebSocket connection from src to dst and hands it to nbio;
// with protoCentrifuge it also sends the connect command and waits for
// its reply.
func (cl *loadClient) dial(ctx context.Context, dst, src string, timeout time.Duration) error {
	cl.mu.Lock()
	proto := cl.proto
	cl.mu.Unlock()
	info := &connInfo{dst: dst, src: src, proto: proto, idx: -1, closed: make(chan struct{}), ready: make(chan struct{})}
	ws, err := cl.nb.Dial(ctx, nbclient.Dial{
		Dst: dst, Src: src, Path: cl.path, Timeout: timeout, Session: info,
		Attached: func(ws *websocket.Conn) { cl.add(ws, info) },
	})
	if err != nil {
		return handshakeError(err)
	}
	if proto == protoCentrifuge {
		return awaitCentrifugeConnect(ctx, ws, info, timeout)
	}
	return nil
}

// handshakeError words a refused upgrade as wsbench always has, so that
// connect errors read "handshake: status N".
func handshakeError(err error) error {
	var he *nbclient.HandshakeError
	switch {
	case errors.As(err, &he):
		return fmt.Errorf("handshake: status %d", he.Status)
	case errors.Is(err, nbclient.ErrBadAccept):
		return fmt.Errorf("handshake: status %d", http.StatusSwitchingProtocols)
	}
	return err
}

// awaitCentrifugeConnect sends Centrifuge's connect command on a fresh
// connection and waits for the reply; on failure the connection is closed.
func awaitCentrifugeConnect(ctx context.Context, ws *websocket.Conn, info *connInfo, timeout time.Duration) error {
	if err := ws.WriteMessage(websocket.TextMessage, centrifugeConnectCmd); err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-info.ready:
		return nil
	case <-info.closed:
		return errors.New("centrifuge: connection closed before the connect reply")
	case <-t.C:
	case <-ctx.Done():
	}
	info.closing.Store(true)
	closeGracefully(ws, info, time.Second)
	return errors.New("centrifuge: no connect reply")
}

func (cl *loadClient) connect(ctx context.Context, a connectArgs) connectReply {
	if a.Path != "" {
		cl.path = a.Path
	}
	cl.mu.Lock()
	cl.proto = a.Proto
	cl.mu.Unlock()
	conc := max(a.Concurrency, 1)
	timeout := time.Duration(a.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	type job struct{ dst, src string }
	jobs := make(chan job)
	go func() {
		defer close(jobs)
		n := 0
		// Interleave servers so that every server fills at the same pace.
		left := make([]int, len(a.Targets))
		for i, t := range a.Targets {
			left[i] = t.Count
		}
		for more := true; more; {
			more = false
			for i, t := range a.Targets {
				if left[i] == 0 || len(t.Addrs) == 0 {
					continue
				}
				more = true
				left[i]--
				j := job{dst: t.Addrs[(t.Count-left[i]-1)%len(t.Addrs)]}
				if len(a.Src) > 0 {
					j.src = a.Src[n%len(a.Src)]
				}
				n++
				select {
				case jobs <- j:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	start := time.Now()
	var est, failed atomic.Int64
	var emu sync.Mutex
	errs := map[string]int{}
	stopProgress := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() {
		defer pwg.Done()
		tk := time.NewTicker(250 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-tk.C:
				cl.srv.Emit("progress", progressEvent{Established: est.Load(), Failed: failed.Load()})
			case <-stopProgress:
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := cl.dial(ctx, j.dst, j.src, timeout); err != nil {
					failed.Add(1)
					cl.failed.Add(1)
					emu.Lock()
					if len(errs) < 8 {
						errs[err.Error()]++
					}
					emu.Unlock()
					continue
				}
				est.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stopProgress)
	pwg.Wait()
	cl.srv.Emit("progress", progressEvent{Established: est.Load(), Failed: failed.Load()})
	r := connectReply{Established: int(est.Load()), Failed: int(failed.Load()), Seconds: time.Since(start).Seconds()}
	for e, n := range errs {
		r.Errors = append(r.Errors, fmt.Sprintf("%s (×%d)", e, n))
	}
	return r
}

func (cl *loadClient) snapshotConns() []*websocket.Conn {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]*websocket.Conn(nil), cl.conns...)
}

// echo sends a.Rate messages per second for the duration, spread
// round-robin over all connections and paced every millisecond, then waits
// up to a.DrainMS for the replies.
func (cl *loadClient) echo(ctx context.Context, a echoArgs) echoReply {
	conns := cl.snapshotConns()
	cl.mu.Lock()
	proto := cl.proto
	cl.mu.Unlock()
	cl.echoRTT.Reset()
	cl.echoRecv.Store(0)
	var r echoReply
	if len(conns) == 0 || a.Rate <= 0 {
		return r
	}
	size := max(a.Size, headerLen)
	buf := appendEchoMessage(nil, proto, size, 0, 0) // sized for the largest message
	dur := time.Duration(a.DurationMS) * time.Millisecond
	start := time.Now()
	tk := time.NewTicker(time.Millisecond)
	next := mrand.IntN(len(conns))
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-tk.C:
			el := now.Sub(start)
			if el >= dur {
				el = dur
			}
			due := int64(math.Floor(a.Rate * el.Seconds()))
			for r.Sent < due {
				c := conns[next]
				next = (next + 1) % len(conns)
				buf = appendEchoMessage(buf[:0], proto, size, time.Now().UnixNano(), uint32(r.Sent))
				if err := c.WriteMessage(websocket.TextMessage, buf); err != nil {
					r.Errors++
				}
				r.Sent++
			}
			if el >= dur {
				break loop
			}
		}
	}
	tk.Stop()
	r.Seconds = time.Since(start).Seconds()
	drain := time.Duration(a.DrainMS) * time.Millisecond
	deadline := time.Now().Add(drain)
	for cl.echoRecv.Load() < r.Sent-r.Errors && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	r.Received = cl.echoRecv.Load()
	r.RTT = cl.echoRTT.Snapshot()
	return r
}

func (cl *loadClient) bcastWait(ctx context.Context, a bcastWaitArgs) (bcastWaitReply, error) {
	r := cl.round.Load()
	if r == nil || r.seq != a.Seq {
		return bcastWaitReply{}, fmt.Errorf("client: broadcast %d not armed", a.Seq)
	}
	expect := cl.established.Load()
	deadline := time.Now().Add(time.Duration(a.TimeoutMS) * time.Millisecond)
	for r.count.Load() < expect && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	return bcastWaitReply{Expected: expect, Received: r.count.Load(), Latency: r.lat.Snapshot()}, nil
}

// churn replaces connections continuously for the duration: every wave
// (250 ms) it closes rate×wave random connections gracefully, waits until
// they are gone, then dials as many replacements to the same servers.
//
// Closes and dials alternate instead of overlapping because nbio (on both
// ends) can apply a hang-up event harvested for a socket that was just
// closed to a new socket that the kernel gave the same descriptor number;
// overlapping closes and dials would then break connections the harness did
// not mean to close and blame the server for it.
func (cl *loadClient) churn(ctx context.Context, a churnArgs) churnReply {
	var r churnReply
	if a.Rate <= 0 {
		return r
	}
	const wave = 250 * time.Millisecond
	const quiet = 50 * time.Millisecond
	conc := max(a.Concurrency, 1)
	dur := time.Duration(a.DurationMS) * time.Millisecond
	start := time.Now()
	var due float64
	for time.Since(start) < dur && ctx.Err() == nil {
		waveStart := time.Now()
		due += a.Rate * wave.Seconds()
		n := int(due)
		due -= float64(n)
		victims := cl.pickVictims(n)
		var wg sync.WaitGroup
		for _, ws := range victims {
			wg.Add(1)
			go func() {
				defer wg.Done()
				closeGracefully(ws, ws.Session().(*connInfo), 5*time.Second)
			}()
		}
		wg.Wait()
		r.Closed += int64(len(victims))
		if ctl.Sleep(ctx, quiet) != nil {
			break
		}
		jobs := make(chan *connInfo, len(victims))
		for _, ws := range victims {
			jobs <- ws.Session().(*connInfo)
		}
		close(jobs)
		var opened, failed atomic.Int64
		for range min(conc, len(victims)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for info := range jobs {
					dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					err := cl.dial(dctx, info.dst, info.src, 10*time.Second)
					cancel()
					if err != nil {
						failed.Add(1)
						continue
					}
					opened.Add(1)
				}
			}()
		}
		wg.Wait()
		r.Opened += opened.Load()
		r.Failed += failed.Load()
		if rest := wave - time.Since(waveStart); rest > quiet {
			_ = ctl.Sleep(ctx, rest)
		} else {
			_ = ctl.Sleep(ctx, quiet)
		}
	}
	return r
}

// pickVictims marks up to n distinct random open connections as closing.
func (cl *loadClient) pickVictims(n int) []*websocket.Conn {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	out := make([]*websocket.Conn, 0, n)
	for tries := 0; len(out) < n && tries < 4*n && len(cl.conns) > 0; tries++ {
		ws := cl.conns[mrand.IntN(len(cl.conns))]
		info, ok := ws.Session().(*connInfo)
		if !ok || info.closing.Swap(true) {
			continue
		}
		out = append(out, ws)
	}
	return out
}

type closeAllReply struct {
	Remaining int64 `json:"remaining"`
}

// closeAll sends a normal close to every connection and waits up to
// timeout for the servers to end them; what is left is closed locally.
func (cl *loadClient) closeAll(timeout time.Duration) closeAllReply {
	conns := cl.snapshotConns()
	for _, ws := range conns {
		if info, ok := ws.Session().(*connInfo); ok {
			info.closing.Store(true)
		}
		_ = ws.WriteClose(1000, "bye")
	}
	deadline := time.Now().Add(timeout)
	for cl.established.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	for _, ws := range cl.snapshotConns() {
		_ = ws.Close()
	}
	deadline = time.Now().Add(2 * time.Second)
	for cl.established.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return closeAllReply{Remaining: cl.established.Load()}
}
