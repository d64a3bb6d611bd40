package pgstore

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/session"
)

var (
	// ErrInvalidOptions is wrapped by Open's error for a bad DSN or Options
	// field (the message names it).
	ErrInvalidOptions = errors.New("pgstore: invalid options")
	// ErrInvalidText is returned for a string holding a NUL byte or invalid
	// UTF-8, which PostgreSQL cannot store; nothing was written.
	ErrInvalidText = errors.New("pgstore: text with a NUL byte or invalid UTF-8")
)

// Options configures a Store. The zero value is a usable default.
type Options struct {
	// MaxConns is the connection pool's size, the append writers'
	// connections included. Default 8, and at least Writers+1.
	MaxConns int32
	// MaxBatch is the most Appends committed in one transaction. Default
	// 1024.
	MaxBatch int
	// Writers is the number of append writers: each owns one connection
	// for as long as the Store is open and commits the Appends of its share
	// of the conversations (by a hash of the conversation ID), so their
	// transactions run side by side and never wait for each other's locks.
	// More than one pays when the server has cores to spare and fsyncs are
	// cheap; otherwise one writer's larger batches share each fsync better
	// (on the two-core development machine, 2 writers were 10–20 % faster
	// with 256 concurrent appenders and up to 2.7 times slower with 64).
	// Default 1.
	Writers int
	// WriteTimeout bounds a commit once it has started, and each batch of
	// appends: the caller's context can cancel a write only before it
	// reaches the database (see session.Repository). Default 10s.
	WriteTimeout time.Duration
}

func (o *Options) fill() error {
	switch {
	case o.MaxConns < 0:
		return fmt.Errorf("%w: MaxConns %d is negative", ErrInvalidOptions, o.MaxConns)
	case o.MaxBatch < 0:
		return fmt.Errorf("%w: MaxBatch %d is negative", ErrInvalidOptions, o.MaxBatch)
	case o.Writers < 0:
		return fmt.Errorf("%w: Writers %d is negative", ErrInvalidOptions, o.Writers)
	case o.WriteTimeout < 0:
		return fmt.Errorf("%w: WriteTimeout %v is negative", ErrInvalidOptions, o.WriteTimeout)
	}
	if o.Writers == 0 {
		o.Writers = 1
	}
	if o.MaxConns == 0 {
		o.MaxConns = max(8, int32(o.Writers)+1)
	}
	if int(o.MaxConns) <= o.Writers {
		return fmt.Errorf("%w: MaxConns %d leaves no connection beside the %d Writers", ErrInvalidOptions, o.MaxConns, o.Writers)
	}
	if o.MaxBatch == 0 {
		o.MaxBatch = 1024
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 10 * time.Second
	}
	return nil
}

// Store is a session.Repository on PostgreSQL. It is safe for concurrent
// use; it owns a connection pool and Options.Writers append writer
// goroutines, all stopped by Close.
type Store struct {
	pool *pgxpool.Pool
	opts Options
	addr string // host:port/database, for errors

	writers    []*writer
	seed       maphash.Seed // picks a conversation's writer
	quit       chan struct{}
	writersRun sync.WaitGroup
	writersEnd chan struct{}   // closed when every writer has exited
	writerCtx  context.Context // the writers' lifetime, canceled by Close
	stopWriter context.CancelFunc
	closed     atomic.Bool
	closeOnce  sync.Once
}

var _ session.Repository = (*Store)(nil)

// Open connects to the database named by dsn (a URL or key=value string as
// libpq takes), applies the missing schema migrations under an advisory
// lock and starts the append writer. It fails with a *session.StoreError
// wrapping session.ErrUnavailable when the server cannot be reached, or
// session.ErrSchemaTooNew when the schema is newer than this binary's.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: DSN: %w", ErrInvalidOptions, err)
	}
	cfg.MaxConns = opts.MaxConns
	addr := net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))) + "/" + cfg.ConnConfig.Database
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, &session.StoreError{Op: "open", Path: addr, Err: fmt.Errorf("%w: %w", session.ErrUnavailable, err)}
	}
	s := &Store{
		pool: pool, opts: opts, addr: addr,
		seed:       maphash.MakeSeed(),
		quit:       make(chan struct{}),
		writersEnd: make(chan struct{}),
	}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	// The writers outlive Open's call: their context keeps ctx's values but
	// not its cancellation, and ends with Close.
	s.writerCtx, s.stopWriter = context.WithCancel(context.WithoutCancel(ctx))
	for range opts.Writers {
		w := &writer{s: s, appends: make(chan *appendReq, opts.MaxBatch)}
		// Connected and prepared now, so that the first appends do not pay
		// for it (and a broken schema fails Open).
		if err := w.connect(ctx); err != nil {
			s.stopWriter()
			for _, w := range s.writers {
				w.release()
			}
			pool.Close()
			return nil, s.classify(ctx, "open", err)
		}
		s.writers = append(s.writers, w)
	}
	for _, w := range s.writers {
		s.writersRun.Go(w.run)
	}
	go func() {
		s.writersRun.Wait()
		close(s.writersEnd)
	}()
	return s, nil
}

// Close stops the append writer (appends still queued fail with
// session.ErrRepositoryClosed), waits for the batch in progress and closes
// the pool. Calling it again returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		<-s.writersEnd
		s.stopWriter()
		s.pool.Close()
	})
	return nil
}

// Ping checks that the server answers and accepts writes (it is not a
// read-only standby).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	var standby bool
	if err := s.pool.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil {
		return s.classify(ctx, "ping", err)
	}
	if standby {
		return &session.StoreError{Op: "ping", Path: s.addr, Err: fmt.Errorf("%w: server is a read-only standby", session.ErrUnavailable)}
	}
	return nil
}

// usable returns the error a call must fail with before touching the
// database: closed, or its context done.
func (s *Store) usable(ctx context.Context) error {
	if s.closed.Load() {
		return session.ErrRepositoryClosed
	}
	return ctx.Err()
}

// classify turns a pgx error into the repository's: the context's error
// when ctx ended, ErrUnavailable for connection trouble and server states
// that may pass, the error itself (wrapped) for anything else.
func (s *Store) classify(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("pgstore: %s: %w", op, cerr)
	}
	if s.closed.Load() {
		return session.ErrRepositoryClosed
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && !transient(pgErr.Code) {
		return fmt.Errorf("pgstore: %s: %w", op, err)
	}
	return &session.StoreError{Op: op, Path: s.addr, Err: fmt.Errorf("%w: %w", session.ErrUnavailable, err)}
}

// transient reports SQLSTATEs that may pass: connection exceptions (08),
// transaction rollbacks (40: serialization failure, deadlock), insufficient
// resources (53: disk full, out of memory, too many connections), operator
// intervention (57: shutdown, cancel) and system errors (58: I/O).
func transient(code string) bool {
	if len(code) < 2 {
		return false
	}
	switch code[:2] {
	case "08", "40", "53", "57", "58":
		return true
	}
	return false
}

// inTx runs fn in a transaction and commits it. fn returns final errors
// (it classifies its own database errors). The commit is not canceled by
// ctx: once it has started it is awaited, bounded by WriteTimeout.
func (s *Store) inTx(ctx context.Context, op string, fn func(tx pgx.Tx) error) error {
	if err := s.usable(ctx); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return s.classify(ctx, op, err)
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.WriteTimeout)
	defer cancel()
	if err := fn(tx); err != nil {
		_ = tx.Rollback(wctx)
		return err
	}
	if err := tx.Commit(wctx); err != nil {
		// Not the caller's context error: the commit was not its to cancel.
		return s.classify(context.WithoutCancel(ctx), op, err)
	}
	return nil
}

// checkText rejects strings PostgreSQL's text type cannot hold.
func checkText(what string, values ...string) error {
	for _, v := range values {
		if !utf8.ValidString(v) || containsNUL(v) {
			return fmt.Errorf("%w: %s %q", ErrInvalidText, what, v)
		}
	}
	return nil
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// encodeToken maps an unsigned token to a bigint of the same order.
func encodeToken(t uint64) int64 { return int64(t ^ (1 << 63)) }
