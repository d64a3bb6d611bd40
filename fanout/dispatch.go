package fanout

import "sync"

// worker is one of the bus's delivery goroutines. Each topic is served by
// one worker (chosen by the hash of its name), which applies the topic's
// queued ops in order; a worker serves its ready topics in turn, one batch
// of ops each, so a busy topic does not starve the others.
type worker struct {
	mu    sync.Mutex
	ready []*topic      // topics with queued ops, each at most once
	wake  chan struct{} // capacity 1: something was added to ready
}

// enqueueLocked appends o to t's ops and, if t is not queued yet, queues it
// on its worker. Called with t.mu held; returns with it released. Once
// Shutdown has shut t, only removals and the final close are accepted: it
// returns false for anything else.
func (b *Bus) enqueueLocked(t *topic, o op) bool {
	if t.shut && o.kind != opRemove && o.kind != opCloseAll {
		t.mu.Unlock()
		return false
	}
	t.ops = append(t.ops, o)
	if t.queued {
		t.mu.Unlock()
		return true
	}
	t.queued = true
	t.mu.Unlock()
	w := t.w
	w.mu.Lock()
	w.ready = append(w.ready, t)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return true
}

// work is a delivery goroutine. It exits once Shutdown has closed quit and
// nothing is left to apply.
func (b *Bus) work(w *worker) {
	defer func() {
		if b.running.Add(-1) == 0 {
			close(b.workersDone)
		}
	}()
	var batch []*topic
	for {
		w.mu.Lock()
		batch, w.ready = w.ready, batch[:0]
		w.mu.Unlock()
		if len(batch) == 0 {
			select {
			case <-w.wake:
			case <-b.quit:
				w.mu.Lock()
				idle := len(w.ready) == 0
				w.mu.Unlock()
				if idle {
					return
				}
			}
			continue
		}
		for i, t := range batch {
			b.drain(t)
			batch[i] = nil
		}
	}
}

// drain applies the ops t has queued now, outside any lock, and puts t back
// at the end of its worker's queue if more arrived meanwhile.
func (b *Bus) drain(t *topic) {
	t.mu.Lock()
	batch := t.ops
	t.ops = t.spare[:0]
	t.mu.Unlock()
	for i := range batch {
		b.apply(t, &batch[i])
		batch[i] = op{}
	}
	t.mu.Lock()
	t.spare = batch[:0]
	more := len(t.ops) > 0
	if !more {
		t.queued = false
	}
	t.mu.Unlock()
	if more {
		w := t.w
		w.mu.Lock()
		w.ready = append(w.ready, t)
		w.mu.Unlock()
	}
}
