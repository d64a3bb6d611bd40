package embedded

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-go/switchboard/session"
)

// messagesPrefix is the key prefix of conv's messages.
func messagesPrefix(conv string) []byte { return append(lp(conv), 'm') }

func messageKey(prefix []byte, off uint64) []byte { return appendU64(bytes.Clone(prefix), off) }

// clientIDKey is the transcripts key of a merged message's client ID.
func clientIDKey(k clientKey) []byte {
	return append(appendLP(append(lp(k.conv), 'i'), k.sender), k.clientID...)
}

// lastOffset returns the highest offset of the messages under prefix.
func lastOffset(b *bolt.Bucket, prefix []byte) uint64 {
	if k, _ := lastWithPrefix(b.Cursor(), prefix); k != nil {
		return u64(k[len(prefix):])
	}
	return 0
}

// Append stores m at its conversation's next offset, once per (Conversation,
// Sender, ClientID); it returns when the batch holding it is committed and
// fsync'd (see session.Repository). The message goes to the append log;
// a later transaction merges it into the transcript.
func (s *Store) Append(ctx context.Context, m session.Message) (session.AppendResult, error) {
	if m.Conversation == "" {
		return session.AppendResult{}, fmt.Errorf("embedded: append: message without conversation")
	}
	key := clientKey{m.Conversation, m.Sender, m.ClientID}
	if err := checkKey(clientIDKey(key)); err != nil {
		return session.AppendResult{}, fmt.Errorf("append to %q: %w", m.Conversation, err)
	}
	if m.At.IsZero() {
		m.At = time.Now()
	}
	// Encoded here, not in the writer's critical section: the offset is
	// the key's, so the stored JSON carries none.
	body, err := json.Marshal(&m)
	if err != nil {
		return session.AppendResult{}, fmt.Errorf("embedded: encode message: %w", err)
	}
	var res session.AppendResult
	err = s.write(ctx, "append", func(tx *bolt.Tx) error {
		tb := tx.Bucket(bucketTranscripts)
		if m.ClientID != "" {
			if e, ok := s.log.lookup(key); ok {
				lv, err := readLog(tx, e.seq)
				if err != nil {
					return &session.StoreError{Op: "append", Path: s.path, Err: err}
				}
				return s.duplicate(&res, lv.data, e.off)
			}
			if v := tb.Get(clientIDKey(key)); v != nil {
				stored := tb.Get(messageKey(messagesPrefix(m.Conversation), u64(v)))
				if stored == nil {
					return &session.StoreError{Op: "append", Path: s.path, Err: fmt.Errorf("%w: client ID %q of %q points to a missing message", ErrCorrupt, m.ClientID, m.Conversation)}
				}
				return s.duplicate(&res, stored, u64(v))
			}
		}
		e, err := s.log.append(tx, key, body)
		if err != nil {
			return err
		}
		m.Offset = e.off
		res = session.AppendResult{Message: m}
		return nil
	})
	if err != nil {
		return session.AppendResult{}, err
	}
	return res, nil
}

// duplicate sets res to the stored message data at offset off.
func (s *Store) duplicate(res *session.AppendResult, data []byte, off uint64) error {
	*res = session.AppendResult{Duplicate: true}
	if err := json.Unmarshal(data, &res.Message); err != nil {
		return &session.StoreError{Op: "append", Path: s.path, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
	}
	res.Message.Offset = off
	return nil
}

// Messages returns up to limit messages of conv after offset after, in
// offset order: those of the transcript, then those still in the append
// log.
func (s *Store) Messages(ctx context.Context, conv string, after uint64, limit int) ([]session.Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, session.ErrRepositoryClosed
	}
	if limit <= 0 || after == ^uint64(0) {
		return nil, nil
	}
	tail := s.tails.load(conv) // before the transaction: see tails
	var out []session.Message
	decode := func(data []byte, off uint64) error {
		var m session.Message
		if err := json.Unmarshal(data, &m); err != nil {
			return &session.StoreError{Op: "read messages of " + conv, Path: s.path, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
		}
		m.Offset = off
		out = append(out, m)
		return nil
	}
	err := s.view(func(tx *bolt.Tx) error {
		prefix := messagesPrefix(conv)
		c := tx.Bucket(bucketTranscripts).Cursor()
		seen := after
		for k, v := c.Seek(messageKey(prefix, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Next() {
			seen = u64(k[len(prefix):])
			if err := decode(v, seen); err != nil {
				return err
			}
		}
		for _, e := range tail.after(seen) {
			if len(out) == limit {
				break
			}
			lv, err := readLog(tx, e.seq)
			if err != nil {
				return &session.StoreError{Op: "read messages of " + conv, Path: s.path, Err: err}
			}
			if err := decode(lv.data, e.off); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LastOffset returns conv's highest stored offset (0: none).
func (s *Store) LastOffset(ctx context.Context, conv string) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	tail := s.tails.load(conv) // before the transaction: see tails
	var off uint64
	err := s.view(func(tx *bolt.Tx) error {
		off = max(tail.last(), lastOffset(tx.Bucket(bucketTranscripts), messagesPrefix(conv)))
		return nil
	})
	return off, err
}

// SetRead moves participant's read marker of conv forward to offset and
// reports whether it moved.
func (s *Store) SetRead(ctx context.Context, conv, participant string, offset uint64) (bool, error) {
	key := append(lp(conv), participant...)
	if err := checkKey(key); err != nil {
		return false, fmt.Errorf("set read of %q: %w", conv, err)
	}
	if offset == 0 {
		// Every marker starts at 0: nothing to write, but the call still
		// honours Close and the context.
		if s.closed.Load() {
			return false, session.ErrRepositoryClosed
		}
		return false, ctx.Err()
	}
	moved := false
	err := s.write(ctx, "set read", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReads)
		if v := b.Get(key); v != nil && u64(v) >= offset {
			moved = false
			return nil
		}
		moved = true
		return put(b, key, appendU64(nil, offset))
	})
	return moved, err
}

// ReadMarkers returns every participant's read marker of conv.
func (s *Store) ReadMarkers(ctx context.Context, conv string) (map[string]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	err := s.view(func(tx *bolt.Tx) error {
		prefix := lp(conv)
		c := tx.Bucket(bucketReads).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			out[string(k[len(prefix):])] = u64(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
