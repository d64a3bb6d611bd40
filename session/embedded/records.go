package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-go/switchboard/session"
)

// recordHeader is what the indexes and compare-and-set need of a stored
// record, kept in front of its JSON so that they need not decode it.
type recordHeader struct {
	version   uint64
	partition string
	open      bool
	customer  string
	created   time.Time
}

const recordFormat = 1

func encodeRecord(r *session.Record) ([]byte, error) {
	c := r.Clone() // drops History: the audit trail is kept apart
	js, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("embedded: encode record %q: %w", r.ID, err)
	}
	b := make([]byte, 0, len(js)+64)
	b = append(b, recordFormat)
	b = binary.AppendUvarint(b, r.Conversation.Version)
	b = appendLP(b, r.Partition)
	if r.Open() {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendLP(b, r.Customer)
	b = appendTime(b, r.Conversation.Created)
	return append(b, js...), nil
}

func readLP(b []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return "", nil, false
	}
	return string(b[k : k+int(n)]), b[k+int(n):], true
}

// decodeHeader splits a stored record into its header and JSON.
func decodeHeader(v []byte) (h recordHeader, js []byte, err error) {
	bad := fmt.Errorf("%w: bad record encoding", ErrCorrupt)
	if len(v) < 1 || v[0] != recordFormat {
		return h, nil, bad
	}
	b := v[1:]
	var k int
	if h.version, k = binary.Uvarint(b); k <= 0 {
		return h, nil, bad
	}
	b = b[k:]
	var ok bool
	if h.partition, b, ok = readLP(b); !ok || len(b) < 1 {
		return h, nil, bad
	}
	h.open, b = b[0] == 1, b[1:]
	if h.customer, b, ok = readLP(b); !ok || len(b) < timeLen {
		return h, nil, bad
	}
	sec := int64(binary.BigEndian.Uint64(b) ^ (1 << 63))
	h.created = time.Unix(sec, int64(binary.BigEndian.Uint32(b[8:])))
	return h, b[timeLen:], nil
}

func (s *Store) decodeRecord(id, v []byte) (*session.Record, error) {
	_, js, err := decodeHeader(v)
	if err == nil {
		r := new(session.Record)
		if err = json.Unmarshal(js, r); err == nil {
			return r, nil
		}
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return nil, &session.StoreError{Op: "read record " + string(id), Path: s.path, Err: err}
}

func openKey(partition, id string) []byte { return append(lp(partition), id...) }

func customerKey(customer string, created time.Time, id string) []byte {
	return append(appendTime(lp(customer), created), id...)
}

func validateRecord(r *session.Record) error {
	switch {
	case r == nil:
		return fmt.Errorf("embedded: nil record")
	case r.ID == "":
		return fmt.Errorf("embedded: record without ID")
	case r.Conversation.Version < 1:
		return fmt.Errorf("embedded: record %q: Version must be at least 1, not %d", r.ID, r.Conversation.Version)
	}
	for _, k := range [][]byte{customerKey(r.Customer, r.Conversation.Created, r.ID), openKey(r.Partition, r.ID)} {
		if err := checkKey(k); err != nil {
			return fmt.Errorf("record %q: %w", r.ID, err)
		}
	}
	return nil
}

type encodedAudit struct {
	entries [][]byte
}

func encodeAudit(id string, audit []session.AuditEntry) (encodedAudit, error) {
	var ea encodedAudit
	for _, e := range audit {
		b, err := json.Marshal(e)
		if err != nil {
			return ea, fmt.Errorf("embedded: encode audit entry of %q: %w", id, err)
		}
		ea.entries = append(ea.entries, b)
	}
	return ea, nil
}

// checkFence fails with ErrFenced when f is older than the highest token of
// its partition. It writes nothing.
func checkFence(tx *bolt.Tx, f session.Fence) error {
	if f.Token == 0 {
		return nil
	}
	if v := tx.Bucket(bucketFences).Get([]byte(f.Partition)); v != nil {
		if highest := u64(v); f.Token < highest {
			return fmt.Errorf("%w: partition %q token %d, highest seen %d", session.ErrFenced, f.Partition, f.Token, highest)
		}
	}
	return nil
}

// raiseFence records f's token as the partition's highest.
func raiseFence(tx *bolt.Tx, f session.Fence) error {
	if f.Token == 0 {
		return nil
	}
	b := tx.Bucket(bucketFences)
	if v := b.Get([]byte(f.Partition)); v != nil && u64(v) >= f.Token {
		return nil
	}
	return put(b, []byte(f.Partition), appendU64(nil, f.Token))
}

func appendAudit(tx *bolt.Tx, id string, ea encodedAudit) error {
	if len(ea.entries) == 0 {
		return nil
	}
	b := tx.Bucket(bucketAudit)
	prefix := lp(id)
	seq := uint64(0)
	if k, _ := lastWithPrefix(b.Cursor(), prefix); k != nil {
		seq = u64(k[len(prefix):])
	}
	for _, e := range ea.entries {
		seq++
		if err := put(b, appendU64(bytes.Clone(prefix), seq), e); err != nil {
			return err
		}
	}
	return nil
}

func indexRecord(tx *bolt.Tx, r *session.Record) error {
	if r.Open() {
		if err := put(tx.Bucket(bucketOpen), openKey(r.Partition, r.ID), nil); err != nil {
			return err
		}
	}
	return put(tx.Bucket(bucketCustomers), customerKey(r.Customer, r.Conversation.Created, r.ID), nil)
}

func unindexRecord(tx *bolt.Tx, id string, h recordHeader) error {
	if h.open {
		if err := del(tx.Bucket(bucketOpen), openKey(h.partition, id)); err != nil {
			return err
		}
	}
	return del(tx.Bucket(bucketCustomers), customerKey(h.customer, h.created, id))
}

func checkFenceToken(f session.Fence) error {
	if f.Token != 0 {
		return checkKey([]byte(f.Partition))
	}
	return nil
}

// Create stores a new record and its audit entries (see
// session.Repository).
func (s *Store) Create(ctx context.Context, f session.Fence, r *session.Record, audit ...session.AuditEntry) error {
	if err := validateRecord(r); err != nil {
		return err
	}
	if err := checkFenceToken(f); err != nil {
		return err
	}
	rec, err := encodeRecord(r)
	if err != nil {
		return err
	}
	ea, err := encodeAudit(r.ID, audit)
	if err != nil {
		return err
	}
	stored := r.Clone()
	id := []byte(r.ID)
	return s.write(ctx, "create", func(tx *bolt.Tx) error {
		if err := checkFence(tx, f); err != nil {
			return err
		}
		recs := tx.Bucket(bucketRecords)
		if recs.Get(id) != nil {
			return fmt.Errorf("%w: %q", session.ErrRecordExists, r.ID)
		}
		if err := put(recs, id, rec); err != nil {
			return err
		}
		if err := indexRecord(tx, stored); err != nil {
			return err
		}
		if err := appendAudit(tx, r.ID, ea); err != nil {
			return err
		}
		return raiseFence(tx, f)
	})
}

// Update replaces the record if its stored version is prev, and appends the
// audit entries, in one transaction (see session.Repository).
func (s *Store) Update(ctx context.Context, f session.Fence, prev uint64, r *session.Record, audit ...session.AuditEntry) error {
	if err := validateRecord(r); err != nil {
		return err
	}
	if r.Conversation.Version <= prev {
		return fmt.Errorf("embedded: update %q: new Version %d must be greater than %d", r.ID, r.Conversation.Version, prev)
	}
	if err := checkFenceToken(f); err != nil {
		return err
	}
	rec, err := encodeRecord(r)
	if err != nil {
		return err
	}
	ea, err := encodeAudit(r.ID, audit)
	if err != nil {
		return err
	}
	stored := r.Clone()
	id := []byte(r.ID)
	return s.write(ctx, "update", func(tx *bolt.Tx) error {
		if err := checkFence(tx, f); err != nil {
			return err
		}
		recs := tx.Bucket(bucketRecords)
		old := recs.Get(id)
		if old == nil {
			return fmt.Errorf("%w: %q", session.ErrRecordNotFound, r.ID)
		}
		h, _, err := decodeHeader(old)
		if err != nil {
			return &session.StoreError{Op: "read record " + r.ID, Path: s.path, Err: err}
		}
		if h.version != prev {
			return fmt.Errorf("%w: %q is at version %d, not %d", session.ErrVersionConflict, r.ID, h.version, prev)
		}
		if err := unindexRecord(tx, r.ID, h); err != nil {
			return err
		}
		if err := put(recs, id, rec); err != nil {
			return err
		}
		if err := indexRecord(tx, stored); err != nil {
			return err
		}
		if err := appendAudit(tx, r.ID, ea); err != nil {
			return err
		}
		return raiseFence(tx, f)
	})
}

// Get returns the record with that ID.
func (s *Store) Get(ctx context.Context, id string) (*session.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var r *session.Record
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: %q", session.ErrRecordNotFound, id)
		}
		var err error
		r, err = s.decodeRecord([]byte(id), v)
		return err
	})
	return r, err
}

// Audit returns the conversation's audit trail in order.
func (s *Store) Audit(ctx context.Context, id string) ([]session.AuditEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var out []session.AuditEntry
	err := s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRecords).Get([]byte(id)) == nil {
			return fmt.Errorf("%w: %q", session.ErrRecordNotFound, id)
		}
		prefix := lp(id)
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var e session.AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return &session.StoreError{Op: "read audit of " + id, Path: s.path, Err: fmt.Errorf("%w: %w", ErrCorrupt, err)}
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// OpenConversations returns the open records of a partition ("" for all),
// ordered by ID.
func (s *Store) OpenConversations(ctx context.Context, partition string) ([]*session.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var raw []rawRecord
	err := s.view(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		c := tx.Bucket(bucketOpen).Cursor()
		var prefix []byte
		if partition != "" {
			prefix = lp(partition)
		}
		n := 0
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if n++; n%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			_, rest, ok := readLP(k)
			if !ok {
				return &session.StoreError{Op: "read open index", Path: s.path, Err: fmt.Errorf("%w: bad key %q", ErrCorrupt, k)}
			}
			v := recs.Get(rest)
			if v == nil {
				return &session.StoreError{Op: "read open index", Path: s.path, Err: fmt.Errorf("%w: dangling entry %q", ErrCorrupt, k)}
			}
			// Copied out of the memory map: decoded after the transaction.
			raw = append(raw, rawRecord{string(rest), bytes.Clone(v)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out, err := s.decodeRecords(ctx, raw)
	if err != nil {
		return nil, err
	}
	if partition == "" {
		slices.SortFunc(out, func(a, b *session.Record) int { return cmpString(a.ID, b.ID) })
	}
	return out, nil
}

// rawRecord is a stored record not decoded yet.
type rawRecord struct {
	id string
	v  []byte
}

// decodeRecords decodes raw on every P: decoding JSON is most of a large
// read (a rebuild after a restart).
func (s *Store) decodeRecords(ctx context.Context, raw []rawRecord) ([]*session.Record, error) {
	out := make([]*session.Record, len(raw))
	const chunk = 512
	workers := min(runtime.GOMAXPROCS(0), (len(raw)+chunk-1)/chunk)
	if workers <= 1 {
		for i, r := range raw {
			rec, err := s.decodeRecord([]byte(r.id), r.v)
			if err != nil {
				return nil, err
			}
			out[i] = rec
		}
		return out, nil
	}
	var next atomic.Int64
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= len(raw) || ctx.Err() != nil {
					return
				}
				for i := lo; i < min(lo+chunk, len(raw)); i++ {
					rec, err := s.decodeRecord([]byte(raw[i].id), raw[i].v)
					if err != nil {
						errs[w] = err
						return
					}
					out[i] = rec
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// CustomerConversations returns up to limit of the customer's records,
// newest first by creation time (ties: greater ID first).
func (s *Store) CustomerConversations(ctx context.Context, customer string, limit int) ([]*session.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, session.ErrRepositoryClosed
	}
	if limit <= 0 {
		return nil, nil
	}
	var out []*session.Record
	err := s.view(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		prefix := lp(customer)
		c := tx.Bucket(bucketCustomers).Cursor()
		for k, _ := lastWithPrefix(c, prefix); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, _ = c.Prev() {
			if len(k) < len(prefix)+timeLen {
				return &session.StoreError{Op: "read customer index", Path: s.path, Err: fmt.Errorf("%w: bad key %q", ErrCorrupt, k)}
			}
			id := k[len(prefix)+timeLen:]
			v := recs.Get(id)
			if v == nil {
				return &session.StoreError{Op: "read customer index", Path: s.path, Err: fmt.Errorf("%w: dangling entry %q", ErrCorrupt, k)}
			}
			r, err := s.decodeRecord(id, v)
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
