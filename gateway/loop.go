package gateway

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// loopYieldEvery is how much activity an nbio event loop may have between
// two passes through the Go scheduler; see loopYield.
const loopYieldEvery = 2 * time.Millisecond

// loopYield makes every nbio event loop pass through the Go scheduler at
// least every loopYieldEvery while it is busy.
//
// An event loop never parks the way other goroutines do: it blocks in
// epoll_wait inside a system call and runs its callbacks between system
// calls, so its P never schedules another goroutine and keeps the same
// scheduling tick. Go's sysmon takes that for a goroutine hogging its P:
// every 10ms it preempts the loop and, because the loop is usually inside
// epoll_wait, takes the P away from the system call. Each such retake costs
// a thread hand-off and, worse, puts sysmon back into waking every 20µs for
// the next millisecond or so — across the processes of the 100k-connection
// benchmark, sysmon's wake-ups were a quarter of all CPU time. A
// runtime.Gosched after a read, at most every loopYieldEvery, bumps the
// tick, and sysmon leaves the loop alone (bench/RESULTS.md, 2026-11-26).
//
// The hook runs on the event loop after each read (nbio's read-buffer
// release callback); loops are told apart by nbio's own assignment of a
// connection to loop Hash() modulo the loop count. Slots are atomics so
// that a different assignment would only make the yield less regular.
type loopYield struct {
	last  []paddedInt64 // per event loop: monotonic nanos of the last yield
	every int64
	now   func() int64 // monotonic nanos
	yield func()       // runtime.Gosched; replaced in tests
}

type paddedInt64 struct {
	v atomic.Int64
	_ [56]byte // one cache line per event loop
}

var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) }

func newLoopYield(loops int) *loopYield {
	return &loopYield{
		last:  make([]paddedInt64, max(loops, 1)),
		every: int64(loopYieldEvery),
		now:   monoNow,
		yield: runtime.Gosched,
	}
}

// afterRead is installed as nbio's OnReadBufferFree: it keeps nbio's
// default (a no-op: reads use the loop's own buffer) and yields when due.
func (y *loopYield) afterRead(c *nbio.Conn, _ *[]byte) {
	s := &y.last[c.Hash()%len(y.last)].v
	now := y.now()
	if last := s.Load(); now-last >= y.every && s.CompareAndSwap(last, now) {
		y.yield()
	}
}

// setExecute installs the connection's job runner. nbio reads
// websocket.Conn.Execute on the event loop without synchronisation (its
// frame parser is built with go:norace), and a frame may be parsed while
// the upgrade is still running; both runners are correct at any moment
// (inlineExec hands jobs to nbio's queue until the connection is open),
// so the word-sized write needs no ordering either.
//
//go:norace
func setExecute(ws *websocket.Conn, f func(func()) bool) { ws.Execute = f }

// inlineExec is the job runner of an inline connection (see
// Config.InlineHandlers). setExecute publishes it to the event loop
// without synchronisation, so it reaches the Conn through an atomic
// pointer stored once the Conn is built: loading it orders every read of
// the Conn on the event loop after serveWS's writes.
type inlineExec struct{ c atomic.Pointer[Conn] }

func newInlineExec(c *Conn) *inlineExec {
	x := &inlineExec{}
	x.c.Store(c)
	return x
}

// execute runs a message job of an inline connection on the event loop
// that parsed the frame. Until serveWS has finished OnOpen, and while
// earlier jobs are still queued on the executor (nbio's per-connection job
// list, which also holds the job running now), jobs join that queue so
// they keep their order; only the event loop adds message jobs, so once
// the queue is seen empty it stays free of them. A close job may still be
// queued by another goroutine at any time: finalize and onMessage exclude
// each other with hmu.
func (x *inlineExec) execute(job func()) bool {
	c := x.c.Load()
	if !c.onLoop {
		if !c.opened.Load() || c.nbc.ExecuteLen() > 0 {
			return c.nbc.Execute(job)
		}
		c.onLoop = true // from now on no per-message lock of nbio's queue
	}
	defer func() {
		if v := recover(); v != nil {
			c.g.cfg.Observer.Logger().Error("gateway: inline job panicked", "conn", c.id, "panic", v)
		}
	}()
	job()
	return true
}

// markClosed switches c to closed and returns its previous state. For an
// inline connection it first waits for a running OnMessage, so that
// OnClose never overlaps one and none starts after it.
func (c *Conn) markClosed() int32 {
	if c.inline {
		c.hmu.Lock()
		defer c.hmu.Unlock()
	}
	return c.state.Swap(stateClosed)
}
