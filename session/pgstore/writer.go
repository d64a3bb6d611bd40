package pgstore

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

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

// enqueue hands m to the writer and waits for its batch's commit. Until the
// writer takes it, the context or Close can cancel it; once taken, its
// outcome is awaited (bounded by WriteTimeout).
func (s *Store) enqueue(ctx context.Context, m session.Message) (session.AppendResult, error) {
	if err := s.usable(ctx); err != nil {
		return session.AppendResult{}, err
	}
	r := &appendReq{ctx: ctx, m: m, done: make(chan struct{})}
	select {
	case s.appends <- r:
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
	case <-s.writerDone:
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return session.AppendResult{}, session.ErrRepositoryClosed
		}
	}
	<-r.done
	return r.res, r.err
}

// run is the append writer: it commits the Appends waiting, in batches,
// until Close.
func (s *Store) run() {
	defer close(s.writerDone)
	batch := make([]*appendReq, 0, s.opts.MaxBatch)
	for {
		select {
		case r := <-s.appends:
			batch = append(batch, r)
		case <-s.quit:
			for {
				select {
				case r := <-s.appends:
					if r.state.CompareAndSwap(reqQueued, reqTaken) {
						r.err = session.ErrRepositoryClosed
						close(r.done)
					}
				default:
					return
				}
			}
		}
	fill:
		for len(batch) < s.opts.MaxBatch {
			select {
			case r := <-s.appends:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		s.commitBatch(batch)
		clear(batch)
		batch = batch[:0]
	}
}

// commitBatch stores the batch's messages in one transaction and answers
// every request.
func (s *Store) commitBatch(batch []*appendReq) {
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
	if err := s.storeBatch(ctx, live); err != nil {
		err = s.classify(context.WithoutCancel(ctx), "append", err)
		for _, r := range live {
			r.res, r.err = session.AppendResult{}, err
		}
	}
}

type clientKey struct{ conv, sender, clientID string }

// storeBatch runs the batch's transaction: lock (creating them if needed)
// the conversations' offset counters, look up the client IDs already
// stored, number the new messages, insert them and advance the counters.
// It sets each request's result; a returned error voids them all.
func (s *Store) storeBatch(ctx context.Context, reqs []*appendReq) error {
	var convs []string
	var kConv, kSender, kID []string
	for _, r := range reqs {
		convs = append(convs, r.m.Conversation)
		if r.m.ClientID != "" {
			kConv = append(kConv, r.m.Conversation)
			kSender = append(kSender, r.m.Sender)
			kID = append(kID, r.m.ClientID)
		}
	}
	slices.Sort(convs) // one lock order for every writer of the database
	convs = slices.Compact(convs)

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }() // no-op after Commit

	b := &pgx.Batch{}
	b.Queue(`INSERT INTO switchboard_transcripts (conv, last_offset) SELECT c, 0 FROM unnest($1::text[]) AS c
		ON CONFLICT (conv) DO NOTHING`, convs)
	b.Queue(`SELECT conv, last_offset FROM switchboard_transcripts WHERE conv = ANY($1::text[]) ORDER BY conv FOR UPDATE`, convs)
	if len(kConv) > 0 {
		b.Queue(`SELECT m.conv, m.off, m.sender, m.sender_name, m.sender_role, m.client_id, m.body, m.at, m.traceparent, m.tracestate
			FROM switchboard_messages m
			JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(conv, sender, client_id)
			  ON m.conv = k.conv AND m.sender = k.sender AND m.client_id = k.client_id
			WHERE m.client_id <> ''`, kConv, kSender, kID)
	}
	last := make(map[string]int64, len(convs))
	stored := map[clientKey]session.Message{}
	br := tx.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		br.Close()
		return err
	}
	rows, _ := br.Query()
	for rows.Next() {
		var conv string
		var off int64
		if err := rows.Scan(&conv, &off); err != nil {
			rows.Close()
			br.Close()
			return err
		}
		last[conv] = off
	}
	if err := rows.Err(); err != nil {
		br.Close()
		return err
	}
	if len(kConv) > 0 {
		rows, _ := br.Query()
		for rows.Next() {
			m, err := scanMessage(rows)
			if err != nil {
				rows.Close()
				br.Close()
				return err
			}
			stored[clientKey{m.Conversation, m.Sender, m.ClientID}] = m
		}
		if err := rows.Err(); err != nil {
			br.Close()
			return err
		}
	}
	if err := br.Close(); err != nil {
		return err
	}

	var (
		cConv, cSender, cName, cRole, cID, cBody, cTP, cTS []string
		cOff                                               []int64
		cAt                                                []time.Time
	)
	for _, r := range reqs {
		m := r.m
		k := clientKey{m.Conversation, m.Sender, m.ClientID}
		if m.ClientID != "" {
			if prev, ok := stored[k]; ok {
				r.res = session.AppendResult{Message: prev, Duplicate: true}
				continue
			}
		}
		last[m.Conversation]++
		m.Offset = uint64(last[m.Conversation])
		r.res = session.AppendResult{Message: m}
		if m.ClientID != "" {
			stored[k] = m
		}
		cConv, cOff, cSender, cName, cRole = append(cConv, m.Conversation), append(cOff, int64(m.Offset)), append(cSender, m.Sender), append(cName, m.SenderName), append(cRole, m.SenderRole)
		cID, cBody, cAt, cTP, cTS = append(cID, m.ClientID), append(cBody, m.Body), append(cAt, m.At), append(cTP, m.Traceparent), append(cTS, m.Tracestate)
	}
	if len(cConv) == 0 {
		return nil // only duplicates: nothing to write
	}
	var uConv []string
	var uOff []int64
	for _, c := range convs {
		uConv, uOff = append(uConv, c), append(uOff, last[c])
	}
	b = &pgx.Batch{}
	b.Queue(`INSERT INTO switchboard_messages (`+messageColumns+`)
		SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::text[])`,
		cConv, cOff, cSender, cName, cRole, cID, cBody, cAt, cTP, cTS)
	b.Queue(`UPDATE switchboard_transcripts AS t SET last_offset = k.off
		FROM unnest($1::text[], $2::bigint[]) AS k(conv, off) WHERE t.conv = k.conv AND t.last_offset <> k.off`, uConv, uOff)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	return tx.Commit(ctx)
}
