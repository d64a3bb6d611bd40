package pgstore

import (
	"context"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/switchboard-go/switchboard/session"
)

// appendReq is one Append waiting for the writer.
type appendReq struct {
	ctx   context.Context
	m     session.Message
	state atomic.Int32 // reqQueued, then reqTaken by the writer or reqAbandoned by the caller
	res   session.AppendResult
	err   error // res and err are set by the writer before done is closed
	done  chan struct{}
}

const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// writer is one append writer: a goroutine with its own queue and its own
// connection, committing the Appends of its share of the conversations.
type writer struct {
	s       *Store
	appends chan *appendReq
	conn    *pgxpool.Conn // nil after a failure until the next batch reconnects
}

// writerFor returns the writer of conv's Appends.
func (s *Store) writerFor(conv string) *writer {
	if len(s.writers) == 1 {
		return s.writers[0]
	}
	return s.writers[maphash.String(s.seed, conv)%uint64(len(s.writers))]
}

// enqueue hands m to its writer and waits for its batch's commit. Until the
// writer takes it, the context or Close can cancel it; once taken, its
// outcome is awaited (bounded by WriteTimeout).
func (s *Store) enqueue(ctx context.Context, m session.Message) (session.AppendResult, error) {
	if err := s.usable(ctx); err != nil {
		return session.AppendResult{}, err
	}
	w := s.writerFor(m.Conversation)
	r := &appendReq{ctx: ctx, m: m, done: make(chan struct{})}
	select {
	case w.appends <- r:
	case <-s.quit:
		return session.AppendResult{}, session.ErrRepositoryClosed
	case <-ctx.Done():
		return session.AppendResult{}, ctx.Err()
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return session.AppendResult{}, ctx.Err()
		}
	case <-s.writersEnd:
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return session.AppendResult{}, session.ErrRepositoryClosed
		}
	}
	<-r.done
	return r.res, r.err
}

// connect acquires the writer's connection and prepares its statements.
func (w *writer) connect(ctx context.Context) error {
	conn, err := w.s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	for _, sql := range []string{lockConversations, appendMessages} {
		if _, err := conn.Conn().Prepare(ctx, sql, sql); err != nil {
			conn.Release()
			return err
		}
	}
	w.conn = conn
	return nil
}

// release gives the writer's connection back to the pool (which closes it
// if it broke).
func (w *writer) release() {
	if w.conn != nil {
		w.conn.Release()
		w.conn = nil
	}
}

// run commits the writer's Appends, in batches, until Close.
func (w *writer) run() {
	defer w.release()
	s := w.s
	batch := make([]*appendReq, 0, s.opts.MaxBatch)
	for {
		select {
		case r := <-w.appends:
			batch = append(batch, r)
		case <-s.quit:
			for {
				select {
				case r := <-w.appends:
					if r.state.CompareAndSwap(reqQueued, reqTaken) {
						r.err = session.ErrRepositoryClosed
						close(r.done)
					}
				default:
					return
				}
			}
		}
		batch = w.fill(batch)
		w.commitBatch(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// maxYields bounds how many times fill lets other goroutines run while
// appends keep arriving.
const maxYields = 8

// fill adds the appends waiting to batch, up to MaxBatch. While they keep
// arriving it yields the processor and looks again: the callers answered
// by the previous commit are queueing their next appends, and one
// transaction for all of them costs about what one for the first few
// does. A lone append waits one yield.
func (w *writer) fill(batch []*appendReq) []*appendReq {
	for yields := 0; len(batch) < w.s.opts.MaxBatch; yields++ {
		n := len(batch)
	drain:
		for len(batch) < w.s.opts.MaxBatch {
			select {
			case r := <-w.appends:
				batch = append(batch, r)
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

// commitBatch stores the batch's messages in one transaction and answers
// every request.
func (w *writer) commitBatch(batch []*appendReq) {
	s := w.s
	live := make([]*appendReq, 0, len(batch))
	var taken []*appendReq
	for _, r := range batch {
		if !r.state.CompareAndSwap(reqQueued, reqTaken) {
			continue
		}
		taken = append(taken, r)
		if err := r.ctx.Err(); err != nil {
			r.err = err
			continue
		}
		live = append(live, r)
	}
	defer func() {
		for _, r := range taken {
			close(r.done)
		}
	}()
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(s.writerCtx, s.opts.WriteTimeout)
	defer cancel()
	err := w.storeBatch(ctx, live)
	if err != nil {
		err = s.classify(context.WithoutCancel(ctx), "append", err)
		for _, r := range live {
			r.res, r.err = session.AppendResult{}, err
		}
	}
}

type clientKey struct{ conv, sender, clientID string }

// lockConversations takes the transaction-scoped advisory lock of each
// conversation (keyed by conversationLockClass and a hash of its ID), in
// the order given: sorted, one lock order for every writer of the database.
// Advisory locks live in the server's memory: taking one writes nothing.
const lockConversations = `SELECT pg_advisory_xact_lock(` + conversationLockClass + `, k) FROM unnest($1::int4[]) AS k`

// conversationLockClass is the first key of the conversations' advisory
// locks (the bytes of "sbtr"); the migration lock uses the one-bigint form,
// a separate key space.
const conversationLockClass = "1935832178"

// conversationLock returns conv's advisory lock key. Two conversations may
// share one: their appends then wait for each other, nothing worse.
func conversationLock(conv string) int32 {
	h := fnv.New32a()
	h.Write([]byte(conv))
	return int32(h.Sum32())
}

// appendMessages stores a batch of messages in one statement: the ones
// whose (conv, sender, client_id) is already stored are answered with the
// stored row; the others are numbered in input order after their
// conversation's highest stored offset, and inserted. It runs after
// lockConversations, in the same transaction: its snapshot is taken once
// the conversations are locked, so it sees every message another writer
// committed before, and no other writer can number them meanwhile.
//
// Lookups are LATERAL subqueries with LIMIT 1, which the planner cannot
// turn into a hash join over the whole table: a prepared statement's
// generic plan, made while the table was small, would otherwise scan it
// at every batch once it has grown.
const appendMessages = `WITH input AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::text[])
		WITH ORDINALITY AS i(conv, sender, sender_name, sender_role, client_id, body, at, traceparent, tracestate, ord)
), looked AS (
	SELECT i.*, m.off AS stored_off, m.sender_name AS stored_name, m.sender_role AS stored_role, m.body AS stored_body,
		m.at AS stored_at, m.traceparent AS stored_traceparent, m.tracestate AS stored_tracestate
	FROM input AS i LEFT JOIN LATERAL (
		SELECT * FROM switchboard_messages AS m
		WHERE i.client_id <> '' AND m.conv = i.conv AND m.sender = i.sender AND m.client_id = i.client_id AND m.client_id <> ''
		LIMIT 1) AS m ON true
), fresh AS (
	SELECT l.*, COALESCE(t.off, 0) + row_number() OVER (PARTITION BY l.conv ORDER BY l.ord) AS off
	FROM looked AS l LEFT JOIN LATERAL (
		SELECT m.off FROM switchboard_messages AS m WHERE m.conv = l.conv ORDER BY m.off DESC LIMIT 1) AS t ON true
	WHERE l.stored_off IS NULL
), inserted AS (
	INSERT INTO switchboard_messages (` + messageColumns + `)
	SELECT ` + messageColumns + ` FROM fresh
)
SELECT ord, off, false, '', '', '', NULL::timestamptz, '', '' FROM fresh
UNION ALL
SELECT ord, stored_off, true, stored_name, stored_role, stored_body, stored_at, stored_traceparent, stored_tracestate
FROM looked WHERE stored_off IS NOT NULL`

// storeBatch stores the batch in one transaction of two statements sent
// together — lockConversations, then appendMessages — in one round trip:
// the server runs them as one implicit transaction, committed at the end
// of the pipeline. A client ID that occurs twice in the batch is sent once;
// the later requests get the first one's message as a duplicate. It sets
// each request's result; a returned error voids them all. As with any
// networked store (see session.Repository), an error after the pipeline
// was sent — the connection lost, results this code cannot read — leaves
// the outcome unknown: the server commits unless a statement failed.
// Retrying is safe.
func (w *writer) storeBatch(ctx context.Context, reqs []*appendReq) (err error) {
	if w.conn == nil {
		if err := w.connect(ctx); err != nil {
			return err
		}
	}
	defer func() {
		// A connection that broke (or whose state is unknown after a
		// timeout) is replaced at the next batch.
		if err != nil && (w.conn.Conn().IsClosed() || ctx.Err() != nil) {
			w.release()
		}
	}()
	var (
		locks                                              []int32
		cConv, cSender, cName, cRole, cID, cBody, cTP, cTS []string
		cAt                                                []time.Time
	)
	sent := make([]*appendReq, 0, len(reqs)) // sent[ord-1] is the request of input row ord
	first := map[clientKey]int{}             // client key → index in sent
	follow := make([]int, len(reqs))         // index in sent of the request whose result reqs[i] takes
	for i, r := range reqs {
		m := &r.m
		if m.ClientID != "" {
			k := clientKey{m.Conversation, m.Sender, m.ClientID}
			if j, ok := first[k]; ok {
				follow[i] = j
				continue
			}
			first[k] = len(sent)
		}
		follow[i] = len(sent)
		sent = append(sent, r)
		locks = append(locks, conversationLock(m.Conversation))
		cConv, cSender, cName, cRole = append(cConv, m.Conversation), append(cSender, m.Sender), append(cName, m.SenderName), append(cRole, m.SenderRole)
		cID, cBody, cAt, cTP, cTS = append(cID, m.ClientID), append(cBody, m.Body), append(cAt, m.At), append(cTP, m.Traceparent), append(cTS, m.Tracestate)
	}
	slices.Sort(locks)
	locks = slices.Compact(locks)

	b := &pgx.Batch{}
	b.Queue(lockConversations, locks)
	b.Queue(appendMessages, cConv, cSender, cName, cRole, cID, cBody, cAt, cTP, cTS)
	br := w.conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err := br.Exec(); err != nil {
		return err
	}
	rows, _ := br.Query()
	results := make([]session.AppendResult, len(sent))
	seen := 0
	for rows.Next() {
		var (
			ord, off int64
			dup      bool
			stored   session.Message
			at       *time.Time
		)
		if err := rows.Scan(&ord, &off, &dup, &stored.SenderName, &stored.SenderRole, &stored.Body, &at, &stored.Traceparent, &stored.Tracestate); err != nil {
			rows.Close()
			return err
		}
		if ord < 1 || int(ord) > len(sent) {
			rows.Close()
			return fmt.Errorf("pgstore: append: result for input row %d of %d", ord, len(sent))
		}
		m := sent[ord-1].m
		if dup {
			stored.Conversation, stored.Sender, stored.ClientID = m.Conversation, m.Sender, m.ClientID
			if at != nil {
				stored.At = *at
			}
			m = stored
		}
		m.Offset = uint64(off)
		results[ord-1] = session.AppendResult{Message: m, Duplicate: dup}
		seen++
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if seen != len(sent) {
		return fmt.Errorf("pgstore: append: %d results for %d messages", seen, len(sent))
	}
	// Close reads up to the end of the pipeline: the implicit transaction
	// has committed when it returns no error.
	if err := br.Close(); err != nil {
		return err
	}
	for i, r := range reqs {
		r.res = results[follow[i]]
		if sent[follow[i]] != r {
			r.res.Duplicate = true // a retry within the batch
		}
	}
	return nil
}
