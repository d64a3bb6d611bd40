package embedded

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-go/switchboard/session"
)

// migrations[i] brings a store from schema version i to i+1. A release only
// ever appends to this list, and raises SchemaVersion.
var migrations = []func(tx *bolt.Tx) error{
	// 1: the initial layout.
	func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketRecords, bucketOpen, bucketCustomers, bucketAudit,
			bucketFences, bucketTranscripts, bucketReads} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	},
	// 2: the append log. Messages already in transcripts stay there.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketLog)
		return err
	},
}

// SchemaVersion is the schema version this release writes (the length of
// migrations, which a test checks). Open migrates older stores to it and
// refuses newer ones with session.ErrSchemaTooNew.
const SchemaVersion = 2

// migrate checks the stored schema version and applies the missing
// migrations in one transaction.
func (s *Store) migrate() error {
	fail := func(err error) error { return &session.StoreError{Op: "migrate", Path: s.path, Err: err} }
	var stored int
	err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			// Only a new, empty file may lack the meta bucket.
			empty := true
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
			if !empty {
				return fail(fmt.Errorf("%w: no schema version", ErrCorrupt))
			}
			return nil
		}
		v := meta.Get(keySchema)
		if len(v) != 4 {
			return fail(fmt.Errorf("%w: bad schema version %x", ErrCorrupt, v))
		}
		stored = int(binary.BigEndian.Uint32(v))
		return nil
	})
	if err != nil {
		return err
	}
	if stored > SchemaVersion {
		return fail(fmt.Errorf("%w: the file has schema version %d, this binary knows up to %d", session.ErrSchemaTooNew, stored, SchemaVersion))
	}
	if stored == SchemaVersion {
		return nil
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for v := stored; v < SchemaVersion; v++ {
			if err := migrations[v](tx); err != nil {
				return fmt.Errorf("to version %d: %w", v+1, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, uint32(SchemaVersion)))
	})
	if err != nil {
		return fail(fmt.Errorf("%w: %w", session.ErrUnavailable, err))
	}
	return nil
}
