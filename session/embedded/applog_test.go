package embedded

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/switchboard-go/switchboard/session"
)

func TestSchemaVersionIsMigrationCount(t *testing.T) {
	require.Equal(t, len(migrations), SchemaVersion)
}

func TestTailViewAfter(t *testing.T) {
	view := &tailView{entries: []logEntry{{off: 4}, {off: 5}, {off: 6}}}
	offsets := func(es []logEntry) (out []uint64) {
		for _, e := range es {
			out = append(out, e.off)
		}
		return out
	}
	for _, tc := range []struct {
		after uint64
		want  []uint64
	}{
		{0, []uint64{4, 5, 6}},
		{3, []uint64{4, 5, 6}},
		{4, []uint64{5, 6}},
		{5, []uint64{6}},
		{6, nil},
		{7, nil},
		{^uint64(0), nil},
	} {
		assert.Equal(t, tc.want, offsets(view.after(tc.after)), "after %d", tc.after)
	}
	var none *tailView
	assert.Nil(t, none.after(0))
	assert.Zero(t, none.last())
	assert.Equal(t, uint64(6), view.last())
}

// appendN appends n messages to conv from sender, with client IDs
// prefix0…, and returns their offsets.
func appendN(t *testing.T, s *Store, conv, sender, prefix string, n int) []uint64 {
	t.Helper()
	var offs []uint64
	for i := range n {
		res, err := s.Append(t.Context(), session.Message{Conversation: conv, Sender: sender, ClientID: fmt.Sprint(prefix, i), Body: fmt.Sprint(conv, " ", prefix, i)})
		require.NoError(t, err)
		require.False(t, res.Duplicate)
		offs = append(offs, res.Message.Offset)
	}
	return offs
}

// TestMergeKeepsTarget: after every commit at most MergeAfter messages
// wait in the log, the log holds no entry in front of the oldest unmerged
// one, and the state matches what Open rebuilds from the file.
func TestMergeKeepsTarget(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{MergeAfter: 10})
	require.NoError(t, err)
	for round := range 6 {
		for c := range 4 {
			appendN(t, s, fmt.Sprint("c", c), "ada", fmt.Sprint("r", round, "-"), 3+c)
			require.LessOrEqual(t, s.log.n, 10)
			require.False(t, s.log.merged(s.log.refs[0]), "the log starts with an unmerged entry")
		}
	}
	var fresh appendLog
	require.NoError(t, s.view(fresh.load))
	require.Equal(t, s.log.n, fresh.n)
	require.Equal(t, s.log.seq, fresh.seq)
	require.Equal(t, s.log.ids, fresh.ids)
	require.Equal(t, s.log.convs, fresh.convs)
	require.Equal(t, s.log.refs, fresh.refs)
	require.NoError(t, s.Close())
}

// TestCrashImages copies the file, consistently, at arbitrary commits while
// writers append and the log merges (what a crash right after that commit
// leaves on disk): every image opens, every conversation in it is
// gap-free, every message acknowledged before the copy began is in it, and
// retries of its messages are answered as duplicates with their offsets.
func TestCrashImages(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(filepath.Join(dir, "live"), Options{MergeAfter: 7})
	require.NoError(t, err)
	const writers, perWriter, convs, images = 6, 50, 4, 8
	type ackedMsg struct {
		conv, sender, id string
		off              uint64
	}
	var mu sync.Mutex
	var acked []ackedMsg
	progress := make(chan struct{}, writers*perWriter) // a token per acknowledged append
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				m := session.Message{Conversation: fmt.Sprint("c", (w+i)%convs), Sender: fmt.Sprint("w", w), ClientID: fmt.Sprint(i), Body: "x"}
				res, err := s.Append(t.Context(), m)
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				acked = append(acked, ackedMsg{m.Conversation, m.Sender, m.ClientID, res.Message.Offset})
				mu.Unlock()
				progress <- struct{}{}
			}
		})
	}
	type image struct {
		dir   string
		acked []ackedMsg
	}
	var imgs []image
	// An image every writers*perWriter/images acknowledged appends.
	for i := range images {
		for range writers * perWriter / images / 2 {
			<-progress
		}
		mu.Lock()
		before := append([]ackedMsg(nil), acked...)
		mu.Unlock()
		img := filepath.Join(dir, fmt.Sprint("image", i))
		require.NoError(t, os.Mkdir(img, 0o700))
		require.NoError(t, s.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(filepath.Join(img, FileName), 0o600) }))
		imgs = append(imgs, image{img, before})
	}
	wg.Wait()
	mu.Lock()
	imgs = append(imgs, image{"", acked}) // and the store itself, reopened
	mu.Unlock()
	require.NoError(t, s.Close())
	imgs[len(imgs)-1].dir = filepath.Join(dir, "live")

	for _, img := range imgs {
		r, err := Open(img.dir, Options{MergeAfter: 3})
		require.NoError(t, err, img.dir)
		ctx := t.Context()
		for c := range convs {
			conv := fmt.Sprint("c", c)
			msgs, err := r.Messages(ctx, conv, 0, 1000)
			require.NoError(t, err)
			for i, m := range msgs {
				require.Equal(t, uint64(i+1), m.Offset, "%s %s", img.dir, conv)
			}
			last, err := r.LastOffset(ctx, conv)
			require.NoError(t, err)
			require.Equal(t, uint64(len(msgs)), last)
		}
		for _, a := range img.acked {
			res, err := r.Append(ctx, session.Message{Conversation: a.conv, Sender: a.sender, ClientID: a.id, Body: "retry"})
			require.NoError(t, err)
			require.True(t, res.Duplicate, "%s: %+v", img.dir, a)
			require.Equal(t, a.off, res.Message.Offset, "%s: %+v", img.dir, a)
		}
		require.NoError(t, r.Close())
	}
}

// TestBadLogEntryRefused: a log entry that does not decode, or that does
// not continue its conversation, fails Open with ErrCorrupt.
func TestBadLogEntryRefused(t *testing.T) {
	for name, value := range map[string][]byte{
		"truncated":  {0, 0, 0},
		"bad length": append(binary.BigEndian.AppendUint64(nil, 1), 200, 'c'),
		"gap":        encodeLogValue(3, "c", "s", "x", []byte(`{}`)),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(dir, Options{})
			require.NoError(t, err)
			appendN(t, s, "c", "s", "m", 1)
			require.NoError(t, s.Close())
			db, err := bolt.Open(s.Path(), 0o600, nil)
			require.NoError(t, err)
			require.NoError(t, db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketLog).Put(appendU64(nil, 99), value)
			}))
			require.NoError(t, db.Close())
			_, err = Open(dir, Options{})
			var se *session.StoreError
			require.ErrorAs(t, err, &se)
			require.Equal(t, s.Path(), se.Path)
			require.ErrorIs(t, err, ErrCorrupt)
		})
	}
}

// TestMigrateFromVersion1: a store written by the release before the
// append log (schema 1: messages straight in transcripts) opens, keeps its
// messages and client IDs, and numbering carries on.
func TestMigrateFromVersion1(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		if err := migrations[0](tx); err != nil {
			return err
		}
		require.NoError(t, tx.Bucket(bucketMeta).Put(keySchema, []byte{0, 0, 0, 1}))
		tb := tx.Bucket(bucketTranscripts)
		for off := uint64(1); off <= 3; off++ {
			m := session.Message{Conversation: "c", Sender: "ada", ClientID: fmt.Sprint("m", off), Body: fmt.Sprint("old ", off)}
			data, err := json.Marshal(&m)
			require.NoError(t, err)
			require.NoError(t, tb.Put(messageKey(messagesPrefix("c"), off), data))
			require.NoError(t, tb.Put(clientIDKey(clientKey{"c", "ada", m.ClientID}), appendU64(nil, off)))
		}
		return nil
	}))
	require.NoError(t, db.Close())

	s, err := Open(dir, Options{})
	require.NoError(t, err)
	ctx := t.Context()
	dup, err := s.Append(ctx, session.Message{Conversation: "c", Sender: "ada", ClientID: "m2", Body: "retry"})
	require.NoError(t, err)
	require.True(t, dup.Duplicate)
	require.Equal(t, uint64(2), dup.Message.Offset)
	require.Equal(t, "old 2", dup.Message.Body)
	require.Equal(t, []uint64{4, 5}, appendN(t, s, "c", "ada", "new", 2))
	msgs, err := s.Messages(ctx, "c", 0, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 5)
	require.Equal(t, "old 3", msgs[2].Body)
	require.Equal(t, "c new0", msgs[3].Body)
	require.NoError(t, s.Close())

	db, err = bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		require.Equal(t, []byte{0, 0, 0, SchemaVersion}, tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	}))
}

// TestFailedCommitReloadsIndex: a transaction that fails after the append
// log's index changed leaves neither the file nor the index changed: the
// next write reloads it, numbering and deduplication carry on as if the
// failed write had never happened.
func TestFailedCommitReloadsIndex(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MergeAfter: 2})
	require.NoError(t, err)
	defer s.Close()
	ctx := t.Context()
	require.Equal(t, []uint64{1, 2, 3}, appendN(t, s, "c", "ada", "m", 3))
	err = s.write(ctx, "test", func(tx *bolt.Tx) error {
		if _, err := s.log.append(tx, clientKey{"c", "ada", "lost"}, []byte(`{"conv":"c"}`)); err != nil {
			return err
		}
		if err := s.log.merge(tx, 0); err != nil {
			return err
		}
		return &storageError{errors.New("disk on fire")}
	})
	require.ErrorIs(t, err, session.ErrUnavailable)
	res, err := s.Append(ctx, session.Message{Conversation: "c", Sender: "ada", ClientID: "lost", Body: "again"})
	require.NoError(t, err)
	require.False(t, res.Duplicate, "the failed append was not stored")
	require.Equal(t, uint64(4), res.Message.Offset)
	dup, err := s.Append(ctx, session.Message{Conversation: "c", Sender: "ada", ClientID: "m2", Body: "retry"})
	require.NoError(t, err)
	require.True(t, dup.Duplicate)
	require.Equal(t, uint64(3), dup.Message.Offset)
	msgs, err := s.Messages(ctx, "c", 0, 10)
	require.NoError(t, err)
	require.Len(t, msgs, 4)
	require.Equal(t, "again", msgs[3].Body)
}
