package embedded_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/embedded"
	"github.com/switchboard-go/switchboard/session/repotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRepository(t *testing.T) {
	// The default keeps every message of the suite in the append log;
	// MergeAfter 1 merges at every commit (all but the last message), 5
	// now and then.
	for _, mergeAfter := range []int{0, 1, 5} {
		t.Run(fmt.Sprint("MergeAfter=", mergeAfter), func(t *testing.T) {
			root := t.TempDir()
			repotest.Run(t, func(t *testing.T, name string) session.Repository {
				s, err := embedded.Open(filepath.Join(root, name), embedded.Options{MergeAfter: mergeAfter})
				require.NoError(t, err)
				t.Cleanup(func() { require.NoError(t, s.Close()) })
				return s
			})
		})
	}
}

// requireStoreError checks that err is a *session.StoreError naming path and
// wrapping want.
func requireStoreError(t *testing.T, err error, path string, want error) {
	t.Helper()
	require.Error(t, err)
	var se *session.StoreError
	require.True(t, errors.As(err, &se), "want a *session.StoreError, got %T: %v", err, err)
	require.Equal(t, path, se.Path)
	require.Contains(t, err.Error(), path, "the message names the path")
	require.ErrorIs(t, err, want)
}

func TestGarbageFileRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, embedded.FileName)
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	require.NoError(t, os.WriteFile(path, garbage, 0o600))
	_, err := embedded.Open(dir, embedded.Options{})
	requireStoreError(t, err, path, embedded.ErrCorrupt)
	got, rerr := os.ReadFile(path)
	require.NoError(t, rerr)
	require.Equal(t, garbage, got, "a refused file is left as it was")
}

func TestForeignBoltFileRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, embedded.FileName)
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("someone-elses"))
		if err != nil {
			return err
		}
		return b.Put([]byte("k"), []byte("v"))
	}))
	require.NoError(t, db.Close())
	_, err = embedded.Open(dir, embedded.Options{})
	requireStoreError(t, err, path, embedded.ErrCorrupt)
}

// TestDamagedPagesRefused overwrites the data pages of a store (keeping its
// two meta pages valid): the consistency check at Open must refuse it.
func TestDamagedPagesRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	ctx := t.Context()
	for i := range 200 {
		_, err := s.Append(ctx, session.Message{Conversation: "c", Sender: "s", ClientID: string(rune('a'+i%26)) + string(rune(i)), Body: "some text to fill pages"})
		require.NoError(t, err)
	}
	require.NoError(t, s.Close())

	path := s.Path()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	fi, err := f.Stat()
	require.NoError(t, err)
	page := int64(os.Getpagesize())
	junk := make([]byte, fi.Size()-2*page)
	for i := range junk {
		junk[i] = 0xA5
	}
	_, err = f.WriteAt(junk, 2*page)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	_, err = embedded.Open(dir, embedded.Options{})
	requireStoreError(t, err, path, embedded.ErrCorrupt)
}

func TestSecondOpenLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	start := time.Now()
	_, err = embedded.Open(dir, embedded.Options{LockTimeout: 50 * time.Millisecond})
	requireStoreError(t, err, s.Path(), embedded.ErrLocked)
	require.Less(t, time.Since(start), 5*time.Second)
	require.NoError(t, s.Close())

	// Released by Close.
	s2, err := embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	require.NoError(t, s2.Close())
}

func TestSchemaTooNew(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	db, err := bolt.Open(s.Path(), 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte{0, 0, 0, embedded.SchemaVersion + 1})
	}))
	require.NoError(t, db.Close())
	_, err = embedded.Open(dir, embedded.Options{})
	requireStoreError(t, err, s.Path(), session.ErrSchemaTooNew)
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o600))
	_, err := embedded.Open(file, embedded.Options{})
	var se *session.StoreError
	require.ErrorAs(t, err, &se)
	require.Equal(t, file, se.Path)

	_, err = embedded.Open(filepath.Join(file, "sub"), embedded.Options{})
	require.ErrorAs(t, err, &se)

	require.NoError(t, os.Mkdir(filepath.Join(dir, "d"), 0o700))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "d", embedded.FileName), 0o700))
	_, err = embedded.Open(filepath.Join(dir, "d"), embedded.Options{})
	requireStoreError(t, err, filepath.Join(dir, "d", embedded.FileName), embedded.ErrCorrupt)

	for _, opts := range []embedded.Options{{MaxBatch: -1}, {LockTimeout: -time.Second}, {MergeAfter: -1}} {
		_, err = embedded.Open(t.TempDir(), opts)
		require.ErrorIs(t, err, embedded.ErrInvalidOptions)
	}
	_, err = embedded.Open("", embedded.Options{})
	require.ErrorIs(t, err, embedded.ErrInvalidOptions)
}

// TestCloseFailsQueuedWrites: Close during a stream of appends; every
// Append returns either a stored result or ErrRepositoryClosed, and every
// acknowledged message is there after reopening.
func TestCloseFailsQueuedWrites(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[uint64]bool{}
	started := make(chan struct{}, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				res, err := s.Append(t.Context(), session.Message{Conversation: "c", Sender: string(rune('a' + w)), ClientID: string(rune(i))})
				if err != nil {
					if !errors.Is(err, session.ErrRepositoryClosed) {
						t.Errorf("append: %v", err)
					}
					return
				}
				mu.Lock()
				acked[res.Message.Offset] = true
				mu.Unlock()
				if i == 2 {
					started <- struct{}{}
				}
			}
		})
	}
	for range 16 {
		<-started
	}
	require.NoError(t, s.Close())
	wg.Wait()

	s, err = embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	defer s.Close()
	last, err := s.LastOffset(t.Context(), "c")
	require.NoError(t, err)
	require.GreaterOrEqual(t, last, uint64(len(acked)))
	for off := range acked {
		require.LessOrEqual(t, off, last)
	}
}

// TestAppendLogAcrossReopen: messages still in the append log when the
// store closes (it does not merge on Close, as a crash would not) are
// there after reopening; a store reopened with a smaller MergeAfter merges
// them as it writes; retries are answered as duplicates whether the
// original waits in the log or was merged.
func TestAppendLogAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := t.Context()
	s, err := embedded.Open(dir, embedded.Options{MergeAfter: 1000})
	require.NoError(t, err)
	want := map[string][]session.Message{}
	appendTo := func(s *embedded.Store, conv string, n int) {
		t.Helper()
		for range n {
			i := len(want[conv])
			res, err := s.Append(ctx, session.Message{Conversation: conv, Sender: "ada", ClientID: fmt.Sprint("m", i), Body: fmt.Sprint(conv, " ", i)})
			require.NoError(t, err)
			require.False(t, res.Duplicate)
			require.Equal(t, uint64(i+1), res.Message.Offset)
			want[conv] = append(want[conv], res.Message)
		}
	}
	check := func(s *embedded.Store) {
		t.Helper()
		for conv, msgs := range want {
			got, err := s.Messages(ctx, conv, 0, 1000)
			require.NoError(t, err)
			require.Len(t, got, len(msgs), conv)
			for i := range msgs {
				require.Equal(t, msgs[i].Offset, got[i].Offset)
				require.Equal(t, msgs[i].Body, got[i].Body)
			}
			page, err := s.Messages(ctx, conv, 2, 3)
			require.NoError(t, err)
			require.Len(t, page, min(3, max(0, len(msgs)-2)))
			for i, m := range page {
				require.Equal(t, uint64(3+i), m.Offset)
			}
			last, err := s.LastOffset(ctx, conv)
			require.NoError(t, err)
			require.Equal(t, uint64(len(msgs)), last)
			for _, i := range []int{0, len(msgs) - 1} {
				dup, err := s.Append(ctx, session.Message{Conversation: conv, Sender: "ada", ClientID: fmt.Sprint("m", i), Body: "retry"})
				require.NoError(t, err)
				require.True(t, dup.Duplicate, "%s m%d", conv, i)
				require.Equal(t, msgs[i].Offset, dup.Message.Offset)
				require.Equal(t, msgs[i].Body, dup.Message.Body)
			}
		}
	}
	appendTo(s, "a", 10)
	appendTo(s, "b", 7)
	check(s)
	require.NoError(t, s.Close())

	s, err = embedded.Open(dir, embedded.Options{MergeAfter: 1000})
	require.NoError(t, err)
	check(s) // all in the log
	appendTo(s, "a", 3)
	require.NoError(t, s.Close())

	s, err = embedded.Open(dir, embedded.Options{MergeAfter: 4})
	require.NoError(t, err)
	check(s) // the log as it was: nothing was written yet
	appendTo(s, "c", 1)
	check(s) // "a" and "b" merged, partly or wholly
	appendTo(s, "b", 5)
	check(s)
	require.NoError(t, s.Close())

	s, err = embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	check(s)
	require.NoError(t, s.Close())
}
