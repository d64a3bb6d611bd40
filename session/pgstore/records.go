package pgstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/session"
)

// encodedRecord is a record ready for the INSERT or UPDATE.
type encodedRecord struct {
	id, partition, customer string
	created                 time.Time
	open                    bool
	version                 int64
	data                    string
}

func encodeRecord(r *session.Record) (encodedRecord, error) {
	switch {
	case r == nil:
		return encodedRecord{}, errors.New("pgstore: nil record")
	case r.ID == "":
		return encodedRecord{}, errors.New("pgstore: record without ID")
	case r.Conversation.Version < 1:
		return encodedRecord{}, fmt.Errorf("pgstore: record %q: Version must be at least 1, not %d", r.ID, r.Conversation.Version)
	case r.Conversation.Version > 1<<63-1:
		return encodedRecord{}, fmt.Errorf("pgstore: record %q: Version %d too large", r.ID, r.Conversation.Version)
	}
	if err := checkText("record key", r.ID, r.Partition, r.Customer); err != nil {
		return encodedRecord{}, err
	}
	js, err := json.Marshal(r.Clone()) // Clone drops History: the audit trail is kept apart
	if err != nil {
		return encodedRecord{}, fmt.Errorf("pgstore: encode record %q: %w", r.ID, err)
	}
	if bytes.Contains(js, []byte(`\u0000`)) {
		return encodedRecord{}, fmt.Errorf("%w: in record %q", ErrInvalidText, r.ID)
	}
	return encodedRecord{
		id: r.ID, partition: r.Partition, customer: r.Customer, created: r.Conversation.Created,
		open: r.Open(), version: int64(r.Conversation.Version), data: string(js),
	}, nil
}

// auditColumns holds audit entries as the arrays that insertAudit unnests.
type auditColumns struct {
	at                     []time.Time
	actor, reason, agent   []string
	event, fromState, toSt []int16
	version                []int64
}

func encodeAudit(id string, audit []session.AuditEntry) (auditColumns, error) {
	var c auditColumns
	for _, e := range audit {
		if err := checkText("audit entry of "+id, e.Actor, e.Reason, e.Agent); err != nil {
			return c, err
		}
		c.at = append(c.at, e.At)
		c.actor = append(c.actor, e.Actor)
		c.reason = append(c.reason, e.Reason)
		c.agent = append(c.agent, e.Agent)
		c.event = append(c.event, int16(e.Event))
		c.fromState = append(c.fromState, int16(e.From))
		c.toSt = append(c.toSt, int16(e.To))
		c.version = append(c.version, int64(e.Version))
	}
	return c, nil
}

const insertAudit = `
INSERT INTO switchboard_audit (conv, seq, at, actor, reason, event, from_state, to_state, agent, version)
SELECT $1, COALESCE((SELECT max(seq) FROM switchboard_audit WHERE conv = $1), 0) + u.ord,
       u.at, u.actor, u.reason, u.event, u.from_state, u.to_state, u.agent, u.version
FROM unnest($2::timestamptz[], $3::text[], $4::text[], $5::smallint[], $6::smallint[], $7::smallint[], $8::text[], $9::bigint[])
     WITH ORDINALITY AS u(at, actor, reason, event, from_state, to_state, agent, version, ord)`

func (c *auditColumns) queue(b *pgx.Batch, id string) {
	if len(c.at) > 0 {
		b.Queue(insertAudit, id, c.at, c.actor, c.reason, c.event, c.fromState, c.toSt, c.agent, c.version)
	}
}

// raiseFence is queued first in a fenced write's batch: it raises the
// partition's highest token to the write's, or affects no row when a
// higher one was seen (ErrFenced). The row stays locked until the
// transaction ends, serialising the partition's fenced writes.
const raiseFence = `
INSERT INTO switchboard_fences (partition, token) VALUES ($1, $2)
ON CONFLICT (partition) DO UPDATE SET token = EXCLUDED.token
WHERE switchboard_fences.token <= EXCLUDED.token`

func queueFence(b *pgx.Batch, f session.Fence) {
	if f.Token != 0 {
		b.Queue(raiseFence, f.Partition, encodeToken(f.Token))
	}
}

// readFence reads the fence statement's result from br (when one was
// queued) and returns ErrFenced for a stale token.
func (s *Store) readFence(ctx context.Context, br pgx.BatchResults, f session.Fence, op string) error {
	if f.Token == 0 {
		return nil
	}
	tag, err := br.Exec()
	if err != nil {
		return s.classify(ctx, op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: partition %q token %d", session.ErrFenced, f.Partition, f.Token)
	}
	return nil
}

// Create stores a new record and its audit entries in one transaction (see
// session.Repository).
func (s *Store) Create(ctx context.Context, f session.Fence, r *session.Record, audit ...session.AuditEntry) error {
	rec, err := encodeRecord(r)
	if err != nil {
		return err
	}
	ac, err := encodeAudit(r.ID, audit)
	if err != nil {
		return err
	}
	if err := checkText("fence partition", f.Partition); err != nil {
		return err
	}
	return s.inTx(ctx, "create", func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		queueFence(b, f)
		b.Queue(`INSERT INTO switchboard_records (id, partition, customer, created, is_open, version, data)
			VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (id) DO NOTHING`,
			rec.id, rec.partition, rec.customer, rec.created, rec.open, rec.version, rec.data)
		ac.queue(b, rec.id)
		br := tx.SendBatch(ctx, b)
		defer br.Close()
		if err := s.readFence(ctx, br, f, "create"); err != nil {
			return err
		}
		tag, err := br.Exec()
		if err != nil {
			return s.classify(ctx, "create", err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("%w: %q", session.ErrRecordExists, rec.id)
		}
		if len(ac.at) > 0 {
			if _, err := br.Exec(); err != nil {
				return s.classify(ctx, "create", err)
			}
		}
		return s.classify(ctx, "create", br.Close())
	})
}

// Update replaces the record if its stored version is prev (UPDATE … WHERE
// version = prev) and appends the audit entries, in one transaction (see
// session.Repository).
func (s *Store) Update(ctx context.Context, f session.Fence, prev uint64, r *session.Record, audit ...session.AuditEntry) error {
	rec, err := encodeRecord(r)
	if err != nil {
		return err
	}
	if r.Conversation.Version <= prev {
		return fmt.Errorf("pgstore: update %q: new Version %d must be greater than %d", r.ID, r.Conversation.Version, prev)
	}
	ac, err := encodeAudit(r.ID, audit)
	if err != nil {
		return err
	}
	if err := checkText("fence partition", f.Partition); err != nil {
		return err
	}
	return s.inTx(ctx, "update", func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		queueFence(b, f)
		b.Queue(`UPDATE switchboard_records
			SET partition = $2, customer = $3, created = $4, is_open = $5, version = $6, data = $7::jsonb
			WHERE id = $1 AND version = $8`,
			rec.id, rec.partition, rec.customer, rec.created, rec.open, rec.version, rec.data, int64(prev))
		br := tx.SendBatch(ctx, b)
		if err := s.readFence(ctx, br, f, "update"); err != nil {
			br.Close()
			return err
		}
		tag, err := br.Exec()
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return s.classify(ctx, "update", err)
		}
		if tag.RowsAffected() == 0 {
			var stored int64
			err := tx.QueryRow(ctx, "SELECT version FROM switchboard_records WHERE id = $1", rec.id).Scan(&stored)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				return fmt.Errorf("%w: %q", session.ErrRecordNotFound, rec.id)
			case err != nil:
				return s.classify(ctx, "update", err)
			}
			return fmt.Errorf("%w: %q is at version %d, not %d", session.ErrVersionConflict, rec.id, stored, prev)
		}
		if len(ac.at) > 0 {
			b := &pgx.Batch{}
			ac.queue(b, rec.id)
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return s.classify(ctx, "update", err)
			}
		}
		return nil
	})
}

func (s *Store) decodeRecord(id string, data []byte) (*session.Record, error) {
	r := new(session.Record)
	if err := json.Unmarshal(data, r); err != nil {
		return nil, &session.StoreError{Op: "read record " + id, Path: s.addr, Err: err}
	}
	return r, nil
}

// Get returns the record with that ID.
func (s *Store) Get(ctx context.Context, id string) (*session.Record, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	if checkText("id", id) != nil {
		return nil, fmt.Errorf("%w: %q", session.ErrRecordNotFound, id)
	}
	var data []byte
	err := s.pool.QueryRow(ctx, "SELECT data FROM switchboard_records WHERE id = $1", id).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", session.ErrRecordNotFound, id)
	}
	if err != nil {
		return nil, s.classify(ctx, "get", err)
	}
	return s.decodeRecord(id, data)
}

// Audit returns the conversation's audit trail in order.
func (s *Store) Audit(ctx context.Context, id string) ([]session.AuditEntry, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	if checkText("id", id) != nil {
		return nil, fmt.Errorf("%w: %q", session.ErrRecordNotFound, id)
	}
	// One statement, one snapshot: the record's existence and its trail.
	rows, err := s.pool.Query(ctx, `
		SELECT a.at, a.actor, a.reason, a.event, a.from_state, a.to_state, a.agent, a.version
		FROM switchboard_records r LEFT JOIN switchboard_audit a ON a.conv = r.id
		WHERE r.id = $1 ORDER BY a.seq`, id)
	if err != nil {
		return nil, s.classify(ctx, "audit", err)
	}
	defer rows.Close()
	found := false
	var out []session.AuditEntry
	for rows.Next() {
		found = true
		var (
			at                        *time.Time
			actor, reason, agent      *string
			event, fromState, toState *int16
			version                   *int64
		)
		if err := rows.Scan(&at, &actor, &reason, &event, &fromState, &toState, &agent, &version); err != nil {
			return nil, s.classify(ctx, "audit", err)
		}
		if at == nil {
			continue // the record has no entries
		}
		out = append(out, session.AuditEntry{At: *at, Actor: *actor, Reason: *reason, Event: session.Event(*event),
			From: session.State(*fromState), To: session.State(*toState), Agent: *agent, Version: uint64(*version)})
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, "audit", err)
	}
	if !found {
		return nil, fmt.Errorf("%w: %q", session.ErrRecordNotFound, id)
	}
	return out, nil
}

// queryRecords runs a query returning data columns and decodes them.
func (s *Store) queryRecords(ctx context.Context, op, sql string, args ...any) ([]*session.Record, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, s.classify(ctx, op, err)
	}
	defer rows.Close()
	var out []*session.Record
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return nil, s.classify(ctx, op, err)
		}
		r, err := s.decodeRecord(id, data)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, op, err)
	}
	return out, nil
}

// OpenConversations returns the open records of a partition ("" for all),
// ordered by ID.
func (s *Store) OpenConversations(ctx context.Context, partition string) ([]*session.Record, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	if partition == "" {
		return s.queryRecords(ctx, "open conversations",
			"SELECT id, data FROM switchboard_records WHERE is_open ORDER BY id")
	}
	if checkText("partition", partition) != nil {
		return nil, nil
	}
	return s.queryRecords(ctx, "open conversations",
		"SELECT id, data FROM switchboard_records WHERE is_open AND partition = $1 ORDER BY id", partition)
}

// CustomerConversations returns up to limit of the customer's records,
// newest first by creation time (ties: greater ID first).
func (s *Store) CustomerConversations(ctx context.Context, customer string, limit int) ([]*session.Record, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 || checkText("customer", customer) != nil {
		return nil, nil
	}
	return s.queryRecords(ctx, "customer conversations",
		"SELECT id, data FROM switchboard_records WHERE customer = $1 ORDER BY created DESC, id DESC LIMIT $2", customer, limit)
}
