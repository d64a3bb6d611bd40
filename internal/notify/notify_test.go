package notify_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/switchboard-go/switchboard/internal/notify"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Events arrive in post order, one at a time, on another goroutine; the
// goroutine exits when idle; Stop delivers what is pending, and nothing
// is delivered afterwards.
func TestOrderStopAndIdle(t *testing.T) {
	var mu sync.Mutex
	var got []int
	n := notify.New(func(e int) {
		mu.Lock() // the poster holds mu while posting: delivery must not run on its goroutine
		got = append(got, e)
		mu.Unlock()
	})
	mu.Lock()
	for i := range 1000 {
		n.Post(i)
	}
	mu.Unlock()
	n.Flush()
	mu.Lock()
	require.Len(t, got, 1000)
	for i, e := range got {
		require.Equal(t, i, e)
	}
	mu.Unlock()
	n.Post(1000)
	require.NoError(t, n.Stop(context.Background()))
	n.Post(1001) // after Stop: discarded
	n.Flush()
	require.Equal(t, 1000, got[len(got)-1])
	require.Len(t, got, 1001)
}

// A Stop whose context ends drops what is pending but waits for the
// callback running.
func TestStopContextDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var delivered []int
		n := notify.New(func(e int) {
			if e == 0 {
				<-release
			}
			delivered = append(delivered, e)
		})
		for i := range 3 {
			n.Post(i)
		}
		synctest.Wait() // event 0 is running
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		done := make(chan error, 1)
		go func() { done <- n.Stop(ctx) }()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Stop returned while a callback was running")
		default:
		}
		close(release)
		require.ErrorIs(t, <-done, context.Canceled)
		require.Equal(t, []int{0}, delivered)
	})
}
