package gateway

import (
	"fmt"
	"sync"
)

// executor is a fixed pool of goroutines running handler jobs. nbio hands it
// one job per connection at a time (nbio.Conn.Execute keeps a per-connection
// job list), which is what preserves handler order per connection.
type executor struct {
	q    chan func()
	stop chan struct{}
	once sync.Once
	n    int // workers started
	wg   sync.WaitGroup
	// onPanic is called with the recovered value of a job that panicked
	// outside the gateway's own recovery (nbio's HTTP layer); may be nil.
	onPanic func(v any)
}

func newExecutor(queue int, onPanic func(any)) *executor {
	return &executor{q: make(chan func(), queue), stop: make(chan struct{}), onPanic: onPanic}
}

// start launches n workers.
func (e *executor) start(n int) {
	e.n += n
	e.wg.Add(n)
	for range n {
		go e.worker()
	}
}

// Go queues f, blocking while the queue is full; after shutdown f is
// dropped. f must not be nil (nil stops a worker).
func (e *executor) Go(f func()) {
	select {
	case e.q <- f:
	case <-e.stop:
	}
}

// worker runs jobs until it receives the nil job shutdown queues for
// each worker. It blocks on the queue alone: a select that also watched
// stop would enqueue every idle worker on two channels and take both
// channel locks on each park and wake-up, once per message.
func (e *executor) worker() {
	defer e.wg.Done()
	for f := range e.q {
		if f == nil {
			return
		}
		e.run(f)
	}
}

func (e *executor) run(f func()) {
	defer func() {
		if v := recover(); v != nil && e.onPanic != nil {
			e.onPanic(fmt.Sprint(v))
		}
	}()
	f()
}

// shutdown stops the workers after they drained the queue and waits for
// them. Closing stop makes Go drop new jobs (or race them into the queue
// behind the stop marks, where nobody runs them); one nil job per worker
// then goes in behind every job already queued, so each worker runs what
// was queued before it and exits on its mark.
func (e *executor) shutdown() {
	e.once.Do(func() {
		close(e.stop)
		for range e.n {
			e.q <- nil
		}
	})
	e.wg.Wait()
}

func (e *executor) queued() int { return len(e.q) }
