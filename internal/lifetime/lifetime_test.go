package lifetime

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStopCancelsDerivedContexts(t *testing.T) {
	life := New()
	require.NoError(t, life.Err())
	_, ok := life.Deadline()
	assert.False(t, ok)
	assert.Nil(t, life.Value("k"))

	before := runtime.NumGoroutine()
	ctxs := make([]context.Context, 100)
	cancels := make([]context.CancelFunc, 100)
	for i := range ctxs {
		ctxs[i], cancels[i] = context.WithTimeout(life, time.Hour)
	}
	assert.Equal(t, before, runtime.NumGoroutine(), "no goroutine per derived context")
	cancels[0]() // unregisters itself
	life.Stop()
	life.Stop() // idempotent
	for i, ctx := range ctxs {
		select {
		case <-ctx.Done():
		default:
			t.Fatalf("derived context %d not cancelled by Stop", i)
		}
		assert.ErrorIs(t, ctx.Err(), context.Canceled)
		cancels[i]()
	}
	assert.ErrorIs(t, life.Err(), context.Canceled)

	// Deriving from a stopped lifetime gives a done context.
	ctx, cancel := context.WithCancel(life)
	defer cancel()
	assert.ErrorIs(t, ctx.Err(), context.Canceled)
}

func TestAfterFunc(t *testing.T) {
	life := New()
	ran := make(chan struct{})
	stop := life.AfterFunc(func() { close(ran) })
	other := life.AfterFunc(func() { t.Error("unregistered func ran") })
	assert.True(t, other())
	assert.False(t, other(), "second stop reports nothing to stop")
	life.Stop()
	<-ran
	assert.False(t, stop(), "already ran")

	late := make(chan struct{})
	life.AfterFunc(func() { close(late) })
	<-late // runs (on its own goroutine) when already stopped
}

func TestCanceled(t *testing.T) {
	ctx := Canceled()
	assert.ErrorIs(t, ctx.Err(), context.Canceled)
	<-ctx.Done()
}
