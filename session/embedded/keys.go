package embedded

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets. Composite keys are built from length-prefixed strings (lp), so
// that no ID can be a prefix of another one's key range, and big-endian
// integers, so that byte order is numeric order.
var (
	bucketMeta      = []byte("meta")      // "schema" → uint32 version
	bucketRecords   = []byte("records")   // id → recordHeader + JSON(Record)
	bucketOpen      = []byte("open")      // lp(partition) id → "" for open records
	bucketCustomers = []byte("customers") // lp(customer) time(created) id → ""
	bucketAudit     = []byte("audit")     // lp(id) u64(seq) → JSON(AuditEntry)
	bucketFences    = []byte("fences")    // partition → u64(highest token)
	// A conversation's messages and client IDs share its key prefix, so
	// that appending touches one leaf page per conversation, not two:
	//   lp(conv) 'm' u64(offset) → JSON(Message) (its offset is the key's)
	//   lp(conv) 'i' lp(sender) clientID → u64(offset)
	bucketTranscripts = []byte("transcripts")
	bucketReads       = []byte("reads") // lp(conv) participant → u64(offset)
	// Appended messages wait in the append log (applog.go) before they
	// are merged into transcripts:
	//   u64(seq) → u64(offset) lp(conv) lp(sender) lp(clientID) JSON(Message)
	bucketLog = []byte("log")

	keySchema = []byte("schema")
)

// errTooLong rejects keys bbolt cannot store.
var errTooLong = errors.New("embedded: key too long")

func checkKey(k []byte) error {
	if len(k) > bolt.MaxKeySize {
		return fmt.Errorf("%w (%d bytes, at most %d)", errTooLong, len(k), bolt.MaxKeySize)
	}
	return nil
}

func appendLP(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func lp(s string) []byte { return appendLP(nil, s) }

func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// appendTime encodes t so that byte order is time order: seconds with the
// sign bit flipped, then nanoseconds.
func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

const timeLen = 12

// successor returns the smallest key greater than every key with prefix p,
// or nil when there is none.
func successor(p []byte) []byte {
	s := bytes.Clone(p)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] < 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	return nil
}

// lastWithPrefix positions c on the last key with prefix p and returns it
// (nil when there is none).
func lastWithPrefix(c *bolt.Cursor, p []byte) (k, v []byte) {
	if succ := successor(p); succ == nil {
		k, v = c.Last()
	} else if k, _ = c.Seek(succ); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if k == nil || !bytes.HasPrefix(k, p) {
		return nil, nil
	}
	return k, v
}
