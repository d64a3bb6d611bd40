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

func clientIDKey(m *session.Message) []byte {
	return append(appendLP(append(lp(m.Conversation), 'i'), m.Sender), m.ClientID...)
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
// fsync'd (see session.Repository).
func (s *Store) Append(ctx context.Context, m session.Message) (session.AppendResult, error) {
	if m.Conversation == "" {
		return session.AppendResult{}, fmt.Errorf("embedded: append: message without conversation")
	}
	ckey := clientIDKey(&m)
	if err := checkKey(ckey); err != nil {
		return session.AppendResult{}, fmt.Errorf("append to %q: %w", m.Conversation, err)
	}
	if m.At.IsZero() {
		m.At = time.Now()
	}
	prefix := messagesPrefix(m.Conversation)
	// Encoded here, not in the writer's critical section: the offset is
	// the key's, so the stored JSON carries none.
	body, err := json.Marshal(&m)
	if err != nil {
		return session.AppendResult{}, fmt.Errorf("embedded: encode message: %w", err)
	}
	var res session.AppendResult
	err = s.write(ctx, "append", func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTranscripts)
		if m.ClientID != "" {
			if v := b.Get(ckey); v != nil {
				stored := b.Get(messageKey(prefix, u64(v)))
				if stored == nil {
					return &session.StoreError{Op: "append", Path: s.path, Err: fmt.Errorf("%w: client ID %q of %q points to a missing message", ErrCorrupt, m.ClientID, m.Conversation)}
				}
				res = session.AppendResult{Duplicate: true}
				if err := json.Unmarshal(stored, &res.Message); err != nil {
					return &session.StoreError{Op: "append", Path: s.path, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
				}
				res.Message.Offset = u64(v)
				return nil
			}
		}
		m.Offset = lastOffset(b, prefix) + 1
		if err := put(b, messageKey(prefix, m.Offset), body); err != nil {
			return err
		}
		if m.ClientID != "" {
			if err := put(b, ckey, appendU64(nil, m.Offset)); err != nil {
				return err
			}
		}
		res = session.AppendResult{Message: m}
		return nil
	})
	if err != nil {
		return session.AppendResult{}, err
	}
	return res, nil
}

// Messages returns up to limit messages of conv after offset after, in
// offset order.
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
	var out []session.Message
	err := s.view(func(tx *bolt.Tx) error {
		prefix := messagesPrefix(conv)
		c := tx.Bucket(bucketTranscripts).Cursor()
		for k, v := c.Seek(messageKey(prefix, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Next() {
			var m session.Message
			if err := json.Unmarshal(v, &m); err != nil {
				return &session.StoreError{Op: "read messages of " + conv, Path: s.path, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
			}
			m.Offset = u64(k[len(prefix):])
			out = append(out, m)
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
	var off uint64
	err := s.view(func(tx *bolt.Tx) error {
		off = lastOffset(tx.Bucket(bucketTranscripts), messagesPrefix(conv))
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
