// Package embedded is the default session.Repository: an on-disk store in
// one directory, in pure Go (go.etcd.io/bbolt, a copy-on-write B+tree in a
// single memory-mapped file), with no cgo and no service to run.
//
// # Model
//
// Open takes a directory and keeps everything in one file in it,
// sessions.db: conversation records (as JSON, with small indexes for the
// open conversations of each partition and each customer's conversations by
// creation time), audit trails, fencing tokens, transcripts, client-ID
// deduplication keys and read markers. Reads run concurrently in read-only
// transactions and never wait for writes.
//
// Every write (Create, Update, Append, SetRead, Ping) goes to one writer
// goroutine owned by the Store. It takes whatever writes are waiting — up to
// Options.MaxBatch, yielding the processor while more keep arriving —
// applies them in one transaction and commits it (group commit: bbolt
// writes the changed pages, fdatasync, the meta page, fdatasync), then
// answers each caller. A write that fails its own checks
// (ErrVersionConflict, ErrFenced, …) changes nothing and does not affect
// the others in its batch. Close stops the writer: writes still queued fail
// with session.ErrRepositoryClosed.
//
// Appended messages first go to an append log: a bucket keyed by a global
// sequence number, so that a commit of many messages to many conversations
// writes a few consecutive pages instead of one page per conversation.
// When more than Options.MergeAfter messages wait there, each write
// transaction moves whole conversations — the one holding the oldest
// waiting message first — into the per-conversation transcripts, many
// messages per page rewritten. The writer keeps an index of the log in
// memory (each conversation's waiting offsets, their client IDs), rebuilt
// by Open; readers combine a conversation's transcript with its waiting
// messages, so an Append that returned is visible to every later read, and
// a read during a merge sees each message once. Each transaction is
// self-contained, so a crash loses nothing that was acknowledged.
//
// The file is locked (flock) while open, so a second Store — in this process
// or another — fails to open it with ErrLocked instead of corrupting it. A
// file that is not a valid store (damaged pages, failed consistency check,
// another program's file) fails Open with ErrCorrupt; nothing is ever
// silently started empty on top of it. The store records its schema version;
// a file written by a newer release fails Open with session.ErrSchemaTooNew.
//
// # Errors
//
// Failures tied to the file are *session.StoreError values naming the path,
// wrapping one of:
//
//   - ErrLocked: another Store holds the directory's lock.
//   - ErrCorrupt: the file is damaged or not a store of this package.
//   - session.ErrSchemaTooNew: the file was written by a newer release.
//   - session.ErrUnavailable: a write or read failed (disk full, I/O
//     error); nothing was written, and the caller may retry.
//
// The other session errors (ErrRecordNotFound, ErrRecordExists,
// ErrVersionConflict, ErrFenced, ErrRepositoryClosed) are returned as the
// session.Repository contract describes, wrapped with the ID concerned.
package embedded
