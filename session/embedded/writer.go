package embedded

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-go/switchboard/session"
)

// op is one write waiting for the writer. apply runs inside the batch's
// transaction: it checks first and writes only when its checks pass, so a
// failed check (returned as its error) leaves the transaction as it was. A
// *storageError from apply aborts the whole batch.
type op struct {
	ctx   context.Context
	name  string
	apply func(tx *bolt.Tx) error
	state atomic.Int32 // opQueued, then opTaken by the writer or opAbandoned by the caller
	err   error        // set by the writer before done is closed
	done  chan struct{}
}

const (
	opQueued int32 = iota
	opTaken
	opAbandoned
)

// write hands apply to the writer and waits for its commit. Until the writer
// takes it, the context or Close can cancel it; once taken, its outcome is
// awaited (it is bounded by one commit).
func (s *Store) write(ctx context.Context, name string, apply func(tx *bolt.Tx) error) error {
	if s.closed.Load() {
		return session.ErrRepositoryClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	o := &op{ctx: ctx, name: name, apply: apply, done: make(chan struct{})}
	select {
	case s.ops <- o:
	case <-s.quit:
		return session.ErrRepositoryClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-o.done:
		return o.err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			return ctx.Err()
		}
	case <-s.writerDone:
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			return session.ErrRepositoryClosed
		}
	}
	<-o.done
	return o.err
}

// run is the writer goroutine: it commits waiting writes in batches until
// Close.
func (s *Store) run() {
	defer close(s.writerDone)
	batch := make([]*op, 0, s.opts.MaxBatch)
	for {
		select {
		case o := <-s.ops:
			batch = append(batch, o)
		case <-s.quit:
			s.failQueued()
			return
		}
		batch = s.fill(batch)
		s.commit(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// maxYields bounds how many times fill lets other goroutines run while
// writes keep arriving.
const maxYields = 8

// fill adds the writes waiting to batch, up to MaxBatch. While they keep
// arriving it yields the processor and looks again: the callers answered
// by the previous commit are queueing their next writes, and one commit
// for all of them costs about what a commit for the first few does. A
// lone write waits one yield.
func (s *Store) fill(batch []*op) []*op {
	for yields := 0; len(batch) < s.opts.MaxBatch; yields++ {
		n := len(batch)
	drain:
		for len(batch) < s.opts.MaxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break drain
			}
		}
		if (yields > 0 && len(batch) == n) || yields == maxYields {
			break
		}
		runtime.Gosched()
	}
	return batch
}

// failQueued answers the writes left in the queue at Close.
func (s *Store) failQueued() {
	for {
		select {
		case o := <-s.ops:
			if o.state.CompareAndSwap(opQueued, opTaken) {
				o.err = session.ErrRepositoryClosed
				close(o.done)
			}
		default:
			return
		}
	}
}

// commit applies the batch in one transaction and commits it (one fsync).
func (s *Store) commit(batch []*op) {
	taken := batch[:0]
	for _, o := range batch {
		if o.state.CompareAndSwap(opQueued, opTaken) {
			taken = append(taken, o)
		}
	}
	if len(taken) == 0 {
		return
	}
	defer func() {
		for _, o := range taken {
			close(o.done)
		}
	}()
	if err := s.apply(taken); err != nil {
		for _, o := range taken {
			o.err = s.storeError(o.name, err)
		}
	}
}

// apply runs the batch's ops in one transaction, merges from the append
// log, and commits; a non-nil result is a failure of the whole batch
// (nothing was written). The append log's state follows the commit: its
// changes are published to readers after it, or reloaded from the file
// before the next transaction when it failed.
func (s *Store) apply(batch []*op) (err error) {
	tx, err := s.db.Begin(true)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if r := recover(); r != nil {
			_ = tx.Rollback()
			err = &session.StoreError{Op: "write", Path: s.path, Err: fmt.Errorf("%w: %v", ErrCorrupt, r)}
		}
		if !committed {
			s.log.stale = true
		}
	}()
	if s.log.stale {
		if err := s.log.load(tx); err != nil {
			_ = tx.Rollback()
			return err
		}
		s.log.stale = false
	}
	for _, o := range batch {
		if cerr := o.ctx.Err(); cerr != nil {
			o.err = cerr
			continue
		}
		oerr := o.apply(tx)
		var se *storageError
		if errors.As(oerr, &se) {
			_ = tx.Rollback()
			return se.err
		}
		o.err = oerr
	}
	if err := s.log.merge(tx, s.opts.MergeAfter); err != nil {
		_ = tx.Rollback()
		var se *storageError
		if errors.As(err, &se) {
			return se.err
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	committed = true
	s.log.publish(&s.tails)
	return nil
}
