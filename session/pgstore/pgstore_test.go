package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/pgtest"
	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/pgstore"
	"github.com/switchboard-go/switchboard/session/repotest"
)

// pg is the server the package's tests share; each test uses databases of
// its own.
var pg pgtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	if err := pg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		code = 1
	}
	if err := goleak.Find(); err != nil && code == 0 {
		fmt.Fprintln(os.Stderr, "goleak:", err)
		code = 1
	}
	os.Exit(code)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// runs numbers the databases of each test run, so that -count=N starts
// every run on empty ones.
var runs atomic.Int64

// database creates (or reuses) database name on the shared server.
func database(t *testing.T, name string) string {
	t.Helper()
	name = strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(name))
	dsn, err := pg.Server(t).CreateDatabase(testContext(t), name)
	require.NoError(t, err)
	return dsn
}

func open(t *testing.T, dsn string, opts pgstore.Options) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(testContext(t), dsn, opts)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, s.Close()) })
	return s
}

func TestRepository(t *testing.T) {
	for _, writers := range []int{0, 3} {
		t.Run(fmt.Sprint("Writers=", writers), func(t *testing.T) {
			prefix := fmt.Sprintf("repo%d_", runs.Add(1))
			repotest.Run(t, func(t *testing.T, name string) session.Repository {
				return open(t, database(t, prefix+name), pgstore.Options{Writers: writers})
			})
		})
	}
}

func exec(t *testing.T, dsn, sql string, args ...any) {
	t.Helper()
	ctx := testContext(t)
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	require.NoError(t, err)
}

func TestMigrationsIdempotent(t *testing.T) {
	dsn := database(t, fmt.Sprint(t.Name(), runs.Add(1)))
	ctx := testContext(t)
	// Hosts starting together: the advisory lock makes one migrate.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			s, err := pgstore.Open(ctx, dsn, pgstore.Options{})
			if err == nil {
				err = s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	s := open(t, dsn, pgstore.Options{}) // and again, one by one
	require.NoError(t, s.Ping(ctx))

	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var n, latest int
	require.NoError(t, conn.QueryRow(ctx, "SELECT count(*), max(version) FROM switchboard_schema_migrations").Scan(&n, &latest))
	require.Equal(t, pgstore.SchemaVersion(), n)
	require.Equal(t, pgstore.SchemaVersion(), latest)
}

func TestSchemaTooNew(t *testing.T) {
	dsn := database(t, fmt.Sprint(t.Name(), runs.Add(1)))
	s := open(t, dsn, pgstore.Options{})
	require.NoError(t, s.Close())
	exec(t, dsn, "INSERT INTO switchboard_schema_migrations (version, name) VALUES ($1, 'from_the_future.sql')", pgstore.SchemaVersion()+1)

	_, err := pgstore.Open(testContext(t), dsn, pgstore.Options{})
	require.ErrorIs(t, err, session.ErrSchemaTooNew)
	var se *session.StoreError
	require.ErrorAs(t, err, &se)
	require.Contains(t, se.Path, pg.Server(t).Addr())
	require.Contains(t, err.Error(), fmt.Sprintf("schema version %d", pgstore.SchemaVersion()+1))
}

// TestServerDownAndBack: with PostgreSQL stopped every operation fails
// with ErrUnavailable (and Ping fails); restarted, the same Store works
// again and nothing acknowledged was lost.
func TestServerDownAndBack(t *testing.T) {
	srv := pgtest.Start(t) // a server of its own: this test stops it
	ctx := testContext(t)
	dsn, err := srv.CreateDatabase(ctx, "faults")
	require.NoError(t, err)
	s := open(t, dsn, pgstore.Options{WriteTimeout: 5 * time.Second})
	rec := &session.Record{ID: "c1", Partition: "p", Customer: "ada", Conversation: *session.NewConversation("c1", time.Now())}
	require.NoError(t, s.Create(ctx, session.Fence{}, rec))
	_, err = s.Append(ctx, session.Message{Conversation: "c1", Sender: "ada", ClientID: "m1", Body: "before"})
	require.NoError(t, err)

	require.NoError(t, srv.Stop())
	requireUnavailable := func(name string, err error) {
		t.Helper()
		t.Logf("%s: %v", name, err)
		require.ErrorIs(t, err, session.ErrUnavailable, name)
		var se *session.StoreError
		require.ErrorAs(t, err, &se, name)
		require.Contains(t, se.Path, srv.Addr(), name)
	}
	requireUnavailable("Ping", s.Ping(ctx))
	_, err = s.Get(ctx, "c1")
	requireUnavailable("Get", err)
	_, err = s.Append(ctx, session.Message{Conversation: "c1", Sender: "ada", ClientID: "m2", Body: "while down"})
	requireUnavailable("Append", err)
	next := rec.Clone()
	next.Conversation.Version++
	requireUnavailable("Update", s.Update(ctx, session.Fence{}, 1, next))
	_, err = s.OpenConversations(ctx, "")
	requireUnavailable("OpenConversations", err)

	require.NoError(t, srv.Restart())
	require.Eventually(t, func() bool { return s.Ping(ctx) == nil }, 30*time.Second, 20*time.Millisecond)
	got, err := s.Get(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, uint64(1), got.Conversation.Version)
	require.NoError(t, s.Update(ctx, session.Fence{}, 1, next))
	res, err := s.Append(ctx, session.Message{Conversation: "c1", Sender: "ada", ClientID: "m2", Body: "after"})
	require.NoError(t, err)
	require.False(t, res.Duplicate)
	require.Equal(t, uint64(2), res.Message.Offset, "the failed append left no gap")
}

func TestOpenUnreachable(t *testing.T) {
	srv := pg.Server(t)
	dsn, err := srv.CreateDatabase(testContext(t), fmt.Sprint("unreachable", runs.Add(1)))
	require.NoError(t, err)
	s := open(t, dsn, pgstore.Options{})
	require.NoError(t, s.Close())
	// A port nobody listens on: the shared server's, minus one, is as good
	// as any (connections are refused at once).
	bad := strings.Replace(dsn, srv.Addr(), "127.0.0.1:1", 1)
	_, err = pgstore.Open(testContext(t), bad, pgstore.Options{})
	require.ErrorIs(t, err, session.ErrUnavailable)
	var se *session.StoreError
	require.ErrorAs(t, err, &se)
	require.True(t, strings.HasPrefix(se.Path, "127.0.0.1:1/unreachable"), se.Path)

	_, err = pgstore.Open(testContext(t), "postgres://%zz", pgstore.Options{})
	require.ErrorIs(t, err, pgstore.ErrInvalidOptions)
	_, err = pgstore.Open(testContext(t), dsn, pgstore.Options{MaxBatch: -1})
	require.ErrorIs(t, err, pgstore.ErrInvalidOptions)
}

// TestTwoHosts: two Stores on one database, as two hosts would be: a new
// owner's higher token fences the old one out, and concurrent appends to
// the same conversations from both still number without gaps.
func TestTwoHosts(t *testing.T) {
	dsn := database(t, fmt.Sprint(t.Name(), runs.Add(1)))
	ctx := testContext(t)
	a := open(t, dsn, pgstore.Options{})
	b := open(t, dsn, pgstore.Options{})

	rec := &session.Record{ID: "c1", Partition: "p", Customer: "ada", Conversation: *session.NewConversation("c1", time.Now())}
	require.NoError(t, a.Create(ctx, session.Fence{Partition: "p", Token: 1}, rec))
	v2 := rec.Clone()
	v2.Conversation.Version = 2
	require.NoError(t, b.Update(ctx, session.Fence{Partition: "p", Token: 2}, 1, v2))
	v3 := v2.Clone()
	v3.Conversation.Version = 3
	require.ErrorIs(t, a.Update(ctx, session.Fence{Partition: "p", Token: 1}, 2, v3), session.ErrFenced)
	got, err := b.Get(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, uint64(2), got.Conversation.Version)

	const perHost, convs = 200, 3
	var wg sync.WaitGroup
	errs := make(chan error, 2*perHost)
	for h, s := range []*pgstore.Store{a, b} {
		for i := range perHost {
			wg.Go(func() {
				_, err := s.Append(ctx, session.Message{Conversation: fmt.Sprint("conv", i%convs), Sender: fmt.Sprint("host", h), ClientID: fmt.Sprint(i)})
				if err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	total := 0
	for c := range convs {
		msgs, err := a.Messages(ctx, fmt.Sprint("conv", c), 0, 1000)
		require.NoError(t, err)
		for i, m := range msgs {
			require.Equal(t, uint64(i+1), m.Offset)
		}
		total += len(msgs)
	}
	require.Equal(t, 2*perHost, total)
}

func TestInvalidText(t *testing.T) {
	s := open(t, database(t, fmt.Sprint(t.Name(), runs.Add(1))), pgstore.Options{})
	ctx := testContext(t)
	_, err := s.Append(ctx, session.Message{Conversation: "c", Sender: "s", Body: "nul \x00 byte"})
	require.ErrorIs(t, err, pgstore.ErrInvalidText)
	_, err = s.Append(ctx, session.Message{Conversation: "c", Sender: "s", Body: "bad \xff utf-8"})
	require.ErrorIs(t, err, pgstore.ErrInvalidText)
	rec := &session.Record{ID: "c1", CustomerName: "nul\x00", Conversation: *session.NewConversation("c1", time.Now())}
	require.ErrorIs(t, s.Create(ctx, session.Fence{}, rec), pgstore.ErrInvalidText)
	// Nothing was written, and the writer carries on.
	res, err := s.Append(ctx, session.Message{Conversation: "c", Sender: "s", Body: "fine"})
	require.NoError(t, err)
	require.Equal(t, uint64(1), res.Message.Offset)
	_, err = s.Get(ctx, "c1")
	require.True(t, errors.Is(err, session.ErrRecordNotFound))
}

// TestMigrateFromVersion1: a database of schema 1 (offsets from a counter
// row per conversation) migrates; its messages, client IDs and numbering
// carry on from the messages themselves.
func TestMigrateFromVersion1(t *testing.T) {
	dsn := database(t, fmt.Sprint(t.Name(), runs.Add(1)))
	ctx := testContext(t)
	v1, err := os.ReadFile("migrations/0001_init.sql")
	require.NoError(t, err)
	exec(t, dsn, string(v1))
	exec(t, dsn, `CREATE TABLE switchboard_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
		INSERT INTO switchboard_schema_migrations (version, name) VALUES (1, '0001_init.sql');
		INSERT INTO switchboard_transcripts VALUES ('c', 2);
		INSERT INTO switchboard_messages VALUES ('c', 1, 'ada', '', '', 'm1', 'one', now(), '', ''), ('c', 2, 'ada', '', '', 'm2', 'two', now(), '', '')`)

	s := open(t, dsn, pgstore.Options{})
	last, err := s.LastOffset(ctx, "c")
	require.NoError(t, err)
	require.Equal(t, uint64(2), last)
	dup, err := s.Append(ctx, session.Message{Conversation: "c", Sender: "ada", ClientID: "m2", Body: "retry"})
	require.NoError(t, err)
	require.True(t, dup.Duplicate)
	require.Equal(t, "two", dup.Message.Body)
	res, err := s.Append(ctx, session.Message{Conversation: "c", Sender: "ada", ClientID: "m3", Body: "three"})
	require.NoError(t, err)
	require.Equal(t, uint64(3), res.Message.Offset)

	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var counters *string
	require.NoError(t, conn.QueryRow(ctx, "SELECT to_regclass('switchboard_transcripts')::text").Scan(&counters))
	require.Nil(t, counters, "the counters of schema 1 are dropped")
}

// TestWriters: appends spread over several writers (each its own
// connection and conversations) stay gap-free per conversation, and the
// pool must leave a connection beside them.
func TestWriters(t *testing.T) {
	s := open(t, database(t, fmt.Sprint(t.Name(), runs.Add(1))), pgstore.Options{Writers: 4, MaxConns: 5})
	ctx := testContext(t)
	const convs, per = 12, 20
	var wg sync.WaitGroup
	for c := range convs {
		for i := range per {
			wg.Go(func() {
				_, err := s.Append(ctx, session.Message{Conversation: fmt.Sprint("c", c), Sender: "s", ClientID: fmt.Sprint(i)})
				assert.NoError(t, err)
			})
		}
	}
	wg.Wait()
	for c := range convs {
		msgs, err := s.Messages(ctx, fmt.Sprint("c", c), 0, 100)
		require.NoError(t, err)
		require.Len(t, msgs, per)
		for i, m := range msgs {
			require.Equal(t, uint64(i+1), m.Offset)
		}
	}
	for _, opts := range []pgstore.Options{{Writers: -1}, {Writers: 4, MaxConns: 4}} {
		_, err := pgstore.Open(ctx, "postgres://127.0.0.1:1/x", opts)
		require.ErrorIs(t, err, pgstore.ErrInvalidOptions, "%+v", opts)
	}
}
