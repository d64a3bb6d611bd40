package pgstore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/switchboard-go/switchboard/session"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered SQL file.
type migration struct {
	version int
	name    string
	sql     string
}

// migrationLock is the advisory lock key held while migrating (the bytes of
// "sbschema").
const migrationLock int64 = 0x7362736368656d61

// migrations returns the embedded migrations in version order. Their names
// are NNNN_description.sql, numbered from 1 without gaps.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("pgstore: migration %q is not named NNNN_description.sql", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("pgstore: migration %q: expected version %d", m.name, i+1)
		}
	}
	return out, nil
}

// SchemaVersion returns the schema version this binary migrates to (its
// newest embedded migration).
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// migrate brings the schema to SchemaVersion under the advisory lock, each
// migration in its own transaction; it refuses a newer schema.
func (s *Store) migrate(ctx context.Context) (err error) {
	fail := func(err error) error {
		if _, ok := err.(*session.StoreError); ok {
			return err
		}
		return &session.StoreError{Op: "migrate", Path: s.addr, Err: err}
	}
	ms, err := migrations()
	if err != nil {
		return fail(err)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fail(s.classify(ctx, "migrate", err))
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fail(s.classify(ctx, "migrate", err))
	}
	defer func() {
		if _, uerr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLock); uerr != nil && err == nil {
			err = fail(s.classify(ctx, "migrate", uerr))
		}
	}()
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS switchboard_schema_migrations (
		version integer PRIMARY KEY,
		name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fail(s.classify(ctx, "migrate", err))
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT COALESCE(max(version), 0) FROM switchboard_schema_migrations").Scan(&current); err != nil {
		return fail(s.classify(ctx, "migrate", err))
	}
	latest := ms[len(ms)-1].version
	if current > latest {
		return fail(fmt.Errorf("%w: the database has schema version %d, this binary knows up to %d", session.ErrSchemaTooNew, current, latest))
	}
	for _, m := range ms[current:] {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return fail(s.classify(ctx, "migrate", err))
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return fail(fmt.Errorf("migration %s: %w", m.name, s.classify(ctx, "migrate", err)))
		}
		if _, err := tx.Exec(ctx, "INSERT INTO switchboard_schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			return fail(s.classify(ctx, "migrate", err))
		}
		if err := tx.Commit(ctx); err != nil {
			return fail(s.classify(ctx, "migrate", err))
		}
	}
	return nil
}
