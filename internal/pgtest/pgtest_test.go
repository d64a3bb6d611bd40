package pgtest_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/pgtest"
)

var shared pgtest.Shared

func TestMain(m *testing.M) {
	code := m.Run()
	if err := shared.Close(); err != nil && code == 0 {
		code = 1
	}
	if err := goleak.Find(); err != nil && code == 0 {
		os.Stderr.WriteString("goleak: " + err.Error() + "\n")
		code = 1
	}
	os.Exit(code)
}

func TestStopRestartKeepsData(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	dsn, err := srv.CreateDatabase(ctx, "keep")
	require.NoError(t, err)
	conn, err := pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
	require.NoError(t, err)
	var fsync string
	require.NoError(t, conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync))
	require.Equal(t, "on", fsync)
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, srv.Stop())
	_, err = pgx.Connect(ctx, dsn)
	require.Error(t, err, "a stopped server refuses connections")
	require.NoError(t, srv.Stop(), "stopping twice is a no-op")

	require.NoError(t, srv.Restart())
	again, err := srv.CreateDatabase(ctx, "keep")
	require.NoError(t, err, "CreateDatabase is idempotent")
	require.Equal(t, dsn, again)
	conn, err = pgx.Connect(ctx, dsn)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var v int
	require.NoError(t, conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v))
	require.Equal(t, 42, v)
}

func TestSharedDatabases(t *testing.T) {
	srv := shared.Server(t)
	require.Same(t, srv, shared.Server(t))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	for _, name := range []string{"a", "b"} {
		dsn, err := srv.CreateDatabase(ctx, name)
		require.NoError(t, err)
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		var db string
		require.NoError(t, conn.QueryRow(ctx, "SELECT current_database()").Scan(&db))
		require.Equal(t, name, db)
		require.NoError(t, conn.Close(ctx))
	}
}
