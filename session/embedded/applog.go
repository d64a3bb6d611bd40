package embedded

import (
	"encoding/binary"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// The append log. Appending a message straight into its conversation's key
// range rewrites one B+tree leaf (4 KB) per conversation at every commit: a
// batch of 256 messages to 256 conversations wrote about 1 MB. Appends
// therefore go to the log bucket first, keyed by a global sequence number,
// where a batch fills the rightmost leaf or two whatever the number of
// conversations. Once more than Options.MergeAfter messages wait in the
// log, each write transaction moves whole conversations out of it — the
// conversation of the oldest waiting message first — into the transcripts
// bucket, where each leaf is then rewritten once for all the messages a
// conversation gathered meanwhile. Log entries are deleted from the front
// once merged (a merged entry behind an unmerged one waits for it), which
// frees whole pages without rewriting them.
//
// The log bucket holds the messages; appendLog, owned by the writer
// goroutine, is an index of it: each conversation's unmerged offsets and
// their log keys, and the client IDs among them, so that the writer numbers
// and deduplicates without scanning the log. Readers see the unmerged
// offsets through immutable per-conversation views published after each
// commit (see tails) and read the messages from the log in their own
// transaction. Every transaction is self-contained — a merge moves
// messages and deletes their log entries in the same transaction — so a
// crash at any point leaves a log and transcripts that Open rebuilds the
// same index from.

// logEntry is one unmerged message: its offset and its log key.
type logEntry struct {
	seq uint64
	off uint64
}

// logRef is a log key not deleted yet, with what tells whether its message
// was merged.
type logRef struct {
	seq  uint64
	conv string
	off  uint64
}

// convLog is a conversation's unmerged messages.
type convLog struct {
	merged  uint64     // the highest offset in the transcripts bucket (0: none)
	entries []logEntry // offsets merged+1, merged+2, …
}

func (c *convLog) last() uint64 { return c.merged + uint64(len(c.entries)) }

type clientKey struct{ conv, sender, clientID string }

// appendLog is the writer's index of the log bucket. Only the writer
// goroutine uses it (and Open, before starting it).
type appendLog struct {
	seq   uint64              // the highest log key used
	refs  []logRef            // log keys not deleted yet, oldest first
	convs map[string]*convLog // conversations with unmerged messages
	ids   map[clientKey]uint64
	n     int // unmerged messages
	// stale: a transaction failed after changing the index, which must be
	// reloaded from the committed log before the next one.
	stale   bool
	touched map[string]struct{} // conversations whose view changes at the next commit
}

// tails holds the readers' views of the unmerged messages: conversation →
// *tailView. The writer stores a conversation's new view (or deletes it,
// once merged) only after the commit that changed it. A reader loads the
// view before beginning its read transaction, which therefore sees at
// least that commit: the view's offsets follow what the transcripts bucket
// held at that commit and are all still in the transaction's log or
// transcripts, whose transcripts hold at least as many — so the
// transaction's transcripts, then the view's offsets after them, are every
// message committed when the view was published, once each.
type tails struct{ m sync.Map }

// tailView is an immutable view of a conversation's unmerged messages. It
// shares the writer's slice, which the writer only ever appends to past
// the view's length, or drops.
type tailView struct{ entries []logEntry }

func (t *tails) load(conv string) *tailView {
	if v, ok := t.m.Load(conv); ok {
		return v.(*tailView)
	}
	return nil
}

// last returns the view's highest offset (0 for a nil or empty view).
func (v *tailView) last() uint64 {
	if v == nil || len(v.entries) == 0 {
		return 0
	}
	return v.entries[len(v.entries)-1].off
}

// after returns the view's entries with offsets greater than off.
func (v *tailView) after(off uint64) []logEntry {
	if v == nil || len(v.entries) == 0 {
		return nil
	}
	first := v.entries[0].off
	switch {
	case off < first:
		return v.entries
	case off-first+1 >= uint64(len(v.entries)):
		return nil
	}
	return v.entries[off-first+1:]
}

func newAppendLog() *appendLog {
	return &appendLog{convs: map[string]*convLog{}, ids: map[clientKey]uint64{}, touched: map[string]struct{}{}}
}

// logValue is a decoded log value.
type logValue struct {
	off                    uint64
	conv, sender, clientID []byte
	data                   []byte // JSON(Message), as stored in the transcripts bucket
}

// encodeLogValue is a log entry's value: its offset, conversation, sender
// and client ID, then the message's JSON.
func encodeLogValue(off uint64, conv, sender, clientID string, data []byte) []byte {
	v := make([]byte, 0, 8+3*binary.MaxVarintLen16+len(conv)+len(sender)+len(clientID)+len(data))
	v = appendU64(v, off)
	v = appendLP(appendLP(appendLP(v, conv), sender), clientID)
	return append(v, data...)
}

// decodeLogValue decodes the log value of key seq. Its slices point into v.
func decodeLogValue(seq uint64, v []byte) (lv logValue, err error) {
	bad := fmt.Errorf("%w: bad append log entry %d", ErrCorrupt, seq)
	if len(v) < 8 {
		return lv, bad
	}
	lv.off = u64(v[:8])
	v = v[8:]
	for _, f := range []*[]byte{&lv.conv, &lv.sender, &lv.clientID} {
		n, k := binary.Uvarint(v)
		if k <= 0 || n > uint64(len(v)-k) {
			return lv, bad
		}
		*f = v[k : k+int(n)]
		v = v[k+int(n):]
	}
	lv.data = v
	return lv, nil
}

// readLog returns the log value of key seq, which must be there.
func readLog(tx *bolt.Tx, seq uint64) (logValue, error) {
	v := tx.Bucket(bucketLog).Get(appendU64(nil, seq))
	if v == nil {
		return logValue{}, fmt.Errorf("%w: append log entry %d is missing", ErrCorrupt, seq)
	}
	return decodeLogValue(seq, v)
}

// load rebuilds the index from the log and transcripts buckets.
func (l *appendLog) load(tx *bolt.Tx) error {
	*l = *newAppendLog()
	tb := tx.Bucket(bucketTranscripts)
	done := map[string]uint64{} // merged offsets of conversations with nothing unmerged so far
	c := tx.Bucket(bucketLog).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		seq := u64(k)
		if seq <= l.seq {
			return fmt.Errorf("%w: append log key %x out of order", ErrCorrupt, k)
		}
		l.seq = seq
		lv, err := decodeLogValue(seq, v)
		if err != nil {
			return err
		}
		conv := string(lv.conv)
		l.refs = append(l.refs, logRef{seq: seq, conv: conv, off: lv.off})
		cl := l.convs[conv]
		if cl == nil {
			merged, ok := done[conv]
			if !ok {
				merged = lastOffset(tb, messagesPrefix(conv))
				done[conv] = merged
			}
			if lv.off <= merged {
				continue // merged, not deleted yet
			}
			cl = &convLog{merged: merged}
			l.convs[conv] = cl
			delete(done, conv)
		}
		if lv.off != cl.last()+1 {
			return fmt.Errorf("%w: append log entry %d has offset %d of %q, expected %d", ErrCorrupt, seq, lv.off, conv, cl.last()+1)
		}
		l.add(clientKey{conv, string(lv.sender), string(lv.clientID)}, cl, logEntry{seq: seq, off: lv.off})
	}
	return nil
}

// add records e as the next unmerged message of k.conv, with k's client
// ID (its log entry is written by the caller).
func (l *appendLog) add(k clientKey, cl *convLog, e logEntry) {
	cl.entries = append(cl.entries, e)
	if k.clientID != "" {
		l.ids[k] = e.off
	}
	l.n++
	l.touched[k.conv] = struct{}{}
}

// conv returns conv's unmerged messages, creating the (empty) state of a
// conversation that has none from its last merged offset.
func (l *appendLog) conv(tb *bolt.Bucket, conv string) *convLog {
	cl := l.convs[conv]
	if cl == nil {
		cl = &convLog{merged: lastOffset(tb, messagesPrefix(conv))}
		l.convs[conv] = cl
	}
	return cl
}

// lookup returns the unmerged message stored with k's client ID.
func (l *appendLog) lookup(k clientKey) (logEntry, bool) {
	off, ok := l.ids[k]
	if !ok {
		return logEntry{}, false
	}
	cl := l.convs[k.conv]
	return cl.entries[off-cl.merged-1], true
}

// append writes the log entry of k's message, whose JSON is data, in tx
// and records it.
func (l *appendLog) append(tx *bolt.Tx, k clientKey, data []byte) (logEntry, error) {
	cl := l.conv(tx.Bucket(bucketTranscripts), k.conv)
	e := logEntry{seq: l.seq + 1, off: cl.last() + 1}
	b := tx.Bucket(bucketLog)
	b.FillPercent = 1 // keys only ever grow: fill pages
	if err := put(b, appendU64(nil, e.seq), encodeLogValue(e.off, k.conv, k.sender, k.clientID, data)); err != nil {
		return logEntry{}, err
	}
	l.seq = e.seq
	l.refs = append(l.refs, logRef{seq: e.seq, conv: k.conv, off: e.off})
	l.add(k, cl, e)
	return e, nil
}

// merged reports whether r's message is in the transcripts bucket.
func (l *appendLog) merged(r logRef) bool {
	cl := l.convs[r.conv]
	return cl == nil || r.off <= cl.merged
}

// merge moves conversations' unmerged messages into the transcripts bucket,
// the oldest waiting message's conversation first, until at most target
// remain, then deletes the merged front of the log.
func (l *appendLog) merge(tx *bolt.Tx, target int) error {
	if l.n <= target {
		return nil
	}
	tb := tx.Bucket(bucketTranscripts)
	for _, r := range l.refs {
		if l.n <= target {
			break
		}
		if l.merged(r) {
			continue
		}
		cl := l.convs[r.conv]
		prefix := messagesPrefix(r.conv)
		for _, e := range cl.entries {
			lv, err := readLog(tx, e.seq)
			if err != nil {
				return err
			}
			if err := put(tb, messageKey(prefix, e.off), lv.data); err != nil {
				return err
			}
			if len(lv.clientID) > 0 {
				k := clientKey{r.conv, string(lv.sender), string(lv.clientID)}
				if err := put(tb, clientIDKey(k), appendU64(nil, e.off)); err != nil {
					return err
				}
				delete(l.ids, k)
			}
		}
		l.n -= len(cl.entries)
		delete(l.convs, r.conv)
		l.touched[r.conv] = struct{}{}
	}
	lb := tx.Bucket(bucketLog)
	drop := 0
	for drop < len(l.refs) && l.merged(l.refs[drop]) {
		if err := del(lb, appendU64(nil, l.refs[drop].seq)); err != nil {
			return err
		}
		drop++
	}
	l.refs = l.refs[drop:]
	return nil
}

// publish gives readers the views of the conversations changed by the
// transaction just committed.
func (l *appendLog) publish(t *tails) {
	for conv := range l.touched {
		if cl := l.convs[conv]; cl != nil && len(cl.entries) > 0 {
			t.m.Store(conv, &tailView{entries: cl.entries[:len(cl.entries):len(cl.entries)]})
		} else {
			t.m.Delete(conv)
		}
	}
	clear(l.touched)
}
