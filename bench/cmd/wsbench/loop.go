package main

import (
	"runtime"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio"
)

// loopYield makes every nbio event loop of a load generator pass through
// the Go scheduler at least every 2ms while it is busy, as the gateway's
// event loops do (see gateway/loop.go for why): an event loop that only
// ever blocks in epoll_wait keeps the same scheduling tick, and Go's sysmon
// then preempts it every 10ms and takes its P back from the system call,
// which keeps sysmon waking every 20µs.
type loopYield struct {
	last []atomic.Int64 // per event loop (connection Hash modulo loops)
}

const loopYieldEvery = int64(2 * time.Millisecond)

var monoBase = time.Now()

func newLoopYield(loops int) *loopYield {
	return &loopYield{last: make([]atomic.Int64, max(loops, 1))}
}

// afterRead is installed as nbio's OnReadBufferFree, which runs on the
// event loop after each read.
func (y *loopYield) afterRead(c *nbio.Conn, _ *[]byte) {
	s := &y.last[c.Hash()%len(y.last)]
	now := int64(time.Since(monoBase))
	if last := s.Load(); now-last >= loopYieldEvery && s.CompareAndSwap(last, now) {
		runtime.Gosched()
	}
}
