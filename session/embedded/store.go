package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/switchboard-go/switchboard/session"
)

var (
	// ErrLocked is wrapped in the *session.StoreError returned by Open when
	// another Store, in this process or another one, has the directory open.
	ErrLocked = errors.New("embedded: data directory is locked by another store")
	// ErrCorrupt is wrapped in the *session.StoreError returned when the data
	// file is damaged or is not a store of this package.
	ErrCorrupt = errors.New("embedded: data file is corrupt or not a session store")
	// ErrInvalidOptions is wrapped by Open's error for a bad Options field
	// (the message names it).
	ErrInvalidOptions = errors.New("embedded: invalid options")
)

// FileName is the name of the data file Open keeps in its directory.
const FileName = "sessions.db"

// Options configures a Store. The zero value is a usable default.
type Options struct {
	// MaxBatch is the most writes committed in one transaction. Default
	// 1024.
	MaxBatch int
	// MergeAfter is how many appended messages may wait in the append log
	// before write transactions move the oldest conversations' messages
	// into their transcripts (see the package documentation). More makes
	// appends cheaper — a conversation's transcript pages are rewritten
	// once for all the messages it gathered meanwhile — and costs memory
	// (an index of the waiting messages — offsets, log keys, client IDs —
	// about 250 bytes each with UUID-sized client IDs) and Open time (which
	// reads the log: 20–45 ms for 16,384 messages on the development
	// machine). Default 16384.
	MergeAfter int
	// LockTimeout is how long Open waits for another Store to release the
	// directory before failing with ErrLocked. Default 1s.
	LockTimeout time.Duration
	// SkipCheck skips the consistency check of every page that Open runs.
	// The check reads the whole file (about 50–100 ms for 60,000 records
	// on the development machine, when it is not loaded) and turns damage
	// into ErrCorrupt at Open instead of a failure at first use. Default
	// false: check.
	SkipCheck bool
}

func (o *Options) fill() error {
	switch {
	case o.MaxBatch < 0:
		return fmt.Errorf("%w: MaxBatch %d is negative", ErrInvalidOptions, o.MaxBatch)
	case o.MergeAfter < 0:
		return fmt.Errorf("%w: MergeAfter %d is negative", ErrInvalidOptions, o.MergeAfter)
	case o.LockTimeout < 0:
		return fmt.Errorf("%w: LockTimeout %v is negative", ErrInvalidOptions, o.LockTimeout)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 1024
	}
	if o.MergeAfter == 0 {
		o.MergeAfter = 16384
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = time.Second
	}
	return nil
}

// Store is a session.Repository kept in one directory. It is safe for
// concurrent use; it owns one writer goroutine, stopped by Close.
type Store struct {
	path string
	opts Options
	db   *bolt.DB

	// log is the writer's state of the append log; tails is what readers
	// see of it.
	log   *appendLog
	tails tails

	ops        chan *op
	quit       chan struct{} // closed by Close: stop intake
	writerDone chan struct{} // closed when the writer has exited
	closed     atomic.Bool
	closeOnce  sync.Once
	closeErr   error
}

var _ session.Repository = (*Store)(nil)

// Open opens (creating it if needed) the store kept in dir. It fails with a
// *session.StoreError naming the path when the directory cannot be created
// or read, when the file is locked by another Store (ErrLocked), damaged
// (ErrCorrupt) or written by a newer release (session.ErrSchemaTooNew).
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("%w: empty directory", ErrInvalidOptions)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, &session.StoreError{Op: "open", Path: dir, Err: err}
	}
	if fi, err := os.Stat(dir); err != nil {
		return nil, &session.StoreError{Op: "open", Path: dir, Err: err}
	} else if !fi.IsDir() {
		return nil, &session.StoreError{Op: "open", Path: dir, Err: errors.New("not a directory")}
	}
	path := filepath.Join(dir, FileName)
	if fi, err := os.Lstat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, &session.StoreError{Op: "open", Path: path, Err: fmt.Errorf("%w: not a regular file (%v)", ErrCorrupt, fi.Mode().Type())}
	}
	db, err := openBolt(path, opts)
	if err != nil {
		return nil, err
	}
	s := &Store{
		path: path, opts: opts, db: db, log: newAppendLog(),
		ops:        make(chan *op, opts.MaxBatch),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	if !opts.SkipCheck {
		if err := s.check(); err != nil {
			_ = db.Close()
			return nil, err
		}
	}
	if err := s.migrate(); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.view(s.log.load); err != nil {
		_ = db.Close()
		if _, ok := err.(*session.StoreError); !ok {
			err = &session.StoreError{Op: "open", Path: path, Err: err}
		}
		return nil, err
	}
	s.log.publish(&s.tails)
	go s.run()
	return s, nil
}

func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	defer func() {
		// bbolt panics on some kinds of damage instead of returning an error.
		if r := recover(); r != nil {
			db, err = nil, &session.StoreError{Op: "open", Path: path, Err: fmt.Errorf("%w: %v", ErrCorrupt, r)}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.LockTimeout,
		// The freelist is written at every commit (NoFreelistSync false):
		// rebuilding it at open instead scans the file in a goroutine of
		// bbolt's that panics, unrecoverably, on a damaged page.
		FreelistType: bolt.FreelistMapType,
	})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		err = fmt.Errorf("%w (waited %v)", ErrLocked, opts.LockTimeout)
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrChecksum), errors.Is(err, berrors.ErrVersionMismatch),
		errors.Is(err, berrors.ErrInvalidMapping):
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	case errors.Is(err, syscall.ENOSPC):
		err = fmt.Errorf("%w: disk full: %w", session.ErrUnavailable, err)
	}
	return nil, &session.StoreError{Op: "open", Path: path, Err: err}
}

// check runs bbolt's consistency check over every page.
func (s *Store) check() error {
	var problems []error
	err := s.view(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			if len(problems) < 5 {
				problems = append(problems, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return &session.StoreError{Op: "check", Path: s.path, Err: fmt.Errorf("%w: %w", ErrCorrupt, errors.Join(problems...))}
	}
	return nil
}

// Path returns the data file's path.
func (s *Store) Path() string { return s.path }

// Close stops the writer (writes still queued fail with
// session.ErrRepositoryClosed), waits for the transaction in progress and
// closes the file. Calling it again returns nil.
func (s *Store) Close() error {
	err := errAlreadyClosed
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		<-s.writerDone
		if cerr := s.db.Close(); cerr != nil {
			s.closeErr = &session.StoreError{Op: "close", Path: s.path, Err: cerr}
		}
		err = s.closeErr
	})
	if err == errAlreadyClosed {
		return nil
	}
	return err
}

var errAlreadyClosed = errors.New("already closed")

// Ping commits an empty write transaction (with its fsync) through the
// writer: it fails when the file cannot be written.
func (s *Store) Ping(ctx context.Context) error {
	return s.write(ctx, "ping", func(*bolt.Tx) error { return nil })
}

// view runs fn in a read transaction, mapping bbolt's errors and panics.
func (s *Store) view(fn func(tx *bolt.Tx) error) (err error) {
	if s.closed.Load() {
		return session.ErrRepositoryClosed
	}
	defer func() {
		if r := recover(); r != nil {
			err = &session.StoreError{Op: "read", Path: s.path, Err: fmt.Errorf("%w: %v", ErrCorrupt, r)}
		}
	}()
	err = s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return session.ErrRepositoryClosed
	}
	return err
}

// storageError marks an error from the file (as opposed to a failed check
// of one write): it aborts the whole batch.
type storageError struct{ err error }

func (e *storageError) Error() string { return e.err.Error() }
func (e *storageError) Unwrap() error { return e.err }

func (s *Store) storeError(op string, err error) error {
	var se *session.StoreError
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return session.ErrRepositoryClosed
	}
	cause := err
	if errors.Is(err, syscall.ENOSPC) {
		cause = fmt.Errorf("disk full: %w", err)
	}
	return &session.StoreError{Op: op, Path: s.path, Err: fmt.Errorf("%w: %w", session.ErrUnavailable, cause)}
}

func put(b *bolt.Bucket, k, v []byte) error {
	if err := b.Put(k, v); err != nil {
		return &storageError{err}
	}
	return nil
}

func del(b *bolt.Bucket, k []byte) error {
	if err := b.Delete(k); err != nil {
		return &storageError{err}
	}
	return nil
}
