package embedded_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/embedded"
)

// smallDisk mounts a tmpfs of size bytes (root only; skipped elsewhere) and
// returns its directory and a func that resizes it.
func smallDisk(t *testing.T, size int) (dir string, resize func(int)) {
	t.Helper()
	dir = t.TempDir()
	mount := func(opts string) error {
		out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := mount(fmt.Sprintf("size=%d", size)); err != nil {
		if os.Getenv("SWITCHBOARD_REQUIRE_FULLDISK") != "" {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Skipf("cannot mount a size-limited tmpfs here (needs root): %v", err)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir, func(n int) { require.NoError(t, mount(fmt.Sprintf("remount,size=%d", n))) }
}

// TestFullDisk: when the disk fills, appends fail with a *session.StoreError
// naming the file and wrapping ENOSPC — nothing is acknowledged that is not
// stored — and once there is room again the store works without a restart;
// every acknowledged message is still there after a reopen.
func TestFullDisk(t *testing.T) {
	dir, resize := smallDisk(t, 256<<10)
	s, err := embedded.Open(dir, embedded.Options{MergeAfter: 64})
	require.NoError(t, err)
	ctx := context.Background()
	body := strings.Repeat("x", 900)
	acked := 0
	var appendErr error
	for i := range 10000 {
		_, err := s.Append(ctx, session.Message{Conversation: fmt.Sprint("conv-", i%8), Sender: "u", ClientID: fmt.Sprint("m", i), Body: body})
		if err != nil {
			appendErr = err
			break
		}
		acked++
	}
	require.Error(t, appendErr, "a 256 KiB disk cannot hold 10,000 messages of 900 bytes")
	t.Logf("%d messages acknowledged before: %v", acked, appendErr)
	requireStoreError(t, appendErr, filepath.Join(dir, embedded.FileName), syscall.ENOSPC)
	require.Greater(t, acked, 10)
	// Still full: still refused, never acknowledged.
	_, err = s.Append(ctx, session.Message{Conversation: "conv-0", Sender: "u", ClientID: "again", Body: body})
	require.ErrorIs(t, err, syscall.ENOSPC)

	// Room again: the same store appends without a restart.
	resize(4 << 20)
	res, err := s.Append(ctx, session.Message{Conversation: "conv-0", Sender: "u", ClientID: "after", Body: body})
	require.NoError(t, err)
	require.False(t, res.Duplicate)
	require.NoError(t, s.Close())

	// Everything acknowledged is there, in order, once.
	s, err = embedded.Open(dir, embedded.Options{})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close()) }()
	total := 0
	for c := range 8 {
		msgs, err := s.Messages(ctx, fmt.Sprint("conv-", c), 0, 100000)
		require.NoError(t, err)
		for i, m := range msgs {
			require.Equal(t, uint64(i+1), m.Offset)
		}
		total += len(msgs)
	}
	require.Equal(t, acked+1, total)
}
