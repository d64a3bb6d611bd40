// Package pgstore is a session.Repository on PostgreSQL (through pgx and
// its connection pool), for deployments that already run a database or need
// several hosts to share the store.
//
// # Model
//
// Records are rows of switchboard_records holding the record as JSONB next
// to the columns the queries use; Update is a compare-and-set (UPDATE … WHERE
// id = $1 AND version = $2). Fencing tokens live in switchboard_fences, raised
// in the same transaction as the write they guard (INSERT … ON CONFLICT DO
// UPDATE … WHERE token <= new), so a stale owner's write fails with
// session.ErrFenced and changes nothing. A transcript offset is its
// conversation's highest stored offset plus one, read in the transaction
// that inserts the message while it holds the conversation's
// transaction-scoped advisory lock, so offsets have no gaps even with
// several hosts appending; (conversation, sender, client ID) is a unique key.
//
// Appends are group-committed: writer goroutines owned by the Store
// (Options.Writers, one by default), each with its own connection and its
// share of the conversations, collect the Appends waiting (up to
// Options.MaxBatch) and store each batch in one transaction of two
// statements sent in one round trip — lock the batch's conversations, then
// one INSERT … SELECT FROM unnest(…) that skips the client IDs already
// stored and numbers the rest — whatever the batch's size. Each Append
// returns when that transaction has committed (synchronous_commit as
// configured on the server: on by default, i.e. fsync'd). Create, Update
// and SetRead are transactions of their own.
//
// # Schema
//
// The schema is versioned: numbered SQL files embedded in the binary
// (migrations/0001_init.sql, …) are applied by Open, in order and each in
// its own transaction, under a PostgreSQL advisory lock so that hosts
// starting together migrate once; applied versions are recorded in
// switchboard_schema_migrations. A database whose schema is newer than the
// binary's is refused with session.ErrSchemaTooNew. Version 2 changed how
// offsets are assigned and dropped version 1's counter table: upgrade every
// host at once (a host of the old release still running fails its appends
// once the new one has migrated — it never misnumbers them).
//
// # Errors
//
//   - *session.StoreError wrapping session.ErrUnavailable (naming the
//     server's host:port/database): the server cannot be reached, the
//     connection broke, or it refused for a reason that may pass (shutting
//     down, out of disk or connections, serialization failure). Retry.
//   - *session.StoreError wrapping session.ErrSchemaTooNew: from Open.
//   - ErrInvalidText: a string with a NUL byte or invalid UTF-8, which
//     PostgreSQL's text cannot hold; nothing was sent.
//   - The other session errors as the session.Repository contract says.
package pgstore
