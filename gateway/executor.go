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
	e.wg.Add(n)
	for range n {
		go e.worker()
	}
}

// Go queues f, blocking while the queue is full; after shutdown f is dropped.
func (e *executor) Go(f func()) {
	select {
	case e.q <- f:
	case <-e.stop:
	}
}

func (e *executor) worker() {
	defer e.wg.Done()
	for {
		select {
		case f := <-e.q:
			e.run(f)
		case <-e.stop:
			for {
				select {
				case f := <-e.q:
					e.run(f)
				default:
					return
				}
			}
		}
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

// shutdown stops the workers after they drained the queue and waits for them.
func (e *executor) shutdown() {
	e.once.Do(func() { close(e.stop) })
	e.wg.Wait()
}

func (e *executor) queued() int { return len(e.q) }
