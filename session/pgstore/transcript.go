package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/switchboard-go/switchboard/session"
)

const messageColumns = "conv, off, sender, sender_name, sender_role, client_id, body, at, traceparent, tracestate"

func scanMessage(row pgx.Row) (session.Message, error) {
	var m session.Message
	var off int64
	err := row.Scan(&m.Conversation, &off, &m.Sender, &m.SenderName, &m.SenderRole, &m.ClientID, &m.Body, &m.At, &m.Traceparent, &m.Tracestate)
	m.Offset = uint64(off)
	return m, err
}

// Append stores m at its conversation's next offset, once per (Conversation,
// Sender, ClientID). The append writer commits it with the other Appends
// waiting, in one transaction; Append returns after that commit (see
// session.Repository).
func (s *Store) Append(ctx context.Context, m session.Message) (session.AppendResult, error) {
	if m.Conversation == "" {
		return session.AppendResult{}, errors.New("pgstore: append: message without conversation")
	}
	if err := checkText("message field", m.Conversation, m.Sender, m.SenderName, m.SenderRole, m.ClientID, m.Body, m.Traceparent, m.Tracestate); err != nil {
		return session.AppendResult{}, err
	}
	if m.At.IsZero() {
		m.At = time.Now()
	}
	// Stored with microsecond precision: return what a read returns.
	m.At = m.At.Round(time.Microsecond)
	return s.enqueue(ctx, m)
}

// Messages returns up to limit messages of conv after offset after, in
// offset order.
func (s *Store) Messages(ctx context.Context, conv string, after uint64, limit int) ([]session.Message, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	if limit <= 0 || after >= math.MaxInt64 || checkText("conversation", conv) != nil {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, "SELECT "+messageColumns+" FROM switchboard_messages WHERE conv = $1 AND off > $2 ORDER BY off LIMIT $3",
		conv, int64(after), limit)
	if err != nil {
		return nil, s.classify(ctx, "messages", err)
	}
	defer rows.Close()
	var out []session.Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, s.classify(ctx, "messages", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, "messages", err)
	}
	return out, nil
}

// LastOffset returns conv's highest stored offset (0: none).
func (s *Store) LastOffset(ctx context.Context, conv string) (uint64, error) {
	if err := s.usable(ctx); err != nil {
		return 0, err
	}
	if checkText("conversation", conv) != nil {
		return 0, nil
	}
	var last int64
	err := s.pool.QueryRow(ctx, "SELECT COALESCE(max(off), 0) FROM switchboard_messages WHERE conv = $1", conv).Scan(&last)
	if err != nil {
		return 0, s.classify(ctx, "last offset", err)
	}
	return uint64(last), nil
}

// SetRead moves participant's read marker of conv forward to offset
// (INSERT … ON CONFLICT DO UPDATE … WHERE stored < offset) and reports
// whether it moved.
func (s *Store) SetRead(ctx context.Context, conv, participant string, offset uint64) (bool, error) {
	if err := checkText("read marker key", conv, participant); err != nil {
		return false, err
	}
	if offset > math.MaxInt64 {
		return false, fmt.Errorf("pgstore: set read: offset %d out of range", offset)
	}
	if err := s.usable(ctx); err != nil {
		return false, err
	}
	if offset == 0 {
		return false, nil // where every marker starts
	}
	moved := false
	err := s.inTx(ctx, "set read", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO switchboard_read_markers (conv, participant, off) VALUES ($1, $2, $3)
			ON CONFLICT (conv, participant) DO UPDATE SET off = EXCLUDED.off
			WHERE switchboard_read_markers.off < EXCLUDED.off`, conv, participant, int64(offset))
		if err != nil {
			return s.classify(ctx, "set read", err)
		}
		moved = tag.RowsAffected() == 1
		return nil
	})
	return moved, err
}

// ReadMarkers returns every participant's read marker of conv.
func (s *Store) ReadMarkers(ctx context.Context, conv string) (map[string]uint64, error) {
	if err := s.usable(ctx); err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	if checkText("conversation", conv) != nil {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, "SELECT participant, off FROM switchboard_read_markers WHERE conv = $1", conv)
	if err != nil {
		return nil, s.classify(ctx, "read markers", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		var off int64
		if err := rows.Scan(&p, &off); err != nil {
			return nil, s.classify(ctx, "read markers", err)
		}
		out[p] = uint64(off)
	}
	if err := rows.Err(); err != nil {
		return nil, s.classify(ctx, "read markers", err)
	}
	return out, nil
}
