package gateway

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExecutorShutdownRunsQueuedJobsAndStopsWorkers(t *testing.T) {
	e := newExecutor(64, nil)
	e.start(4)
	release := make(chan struct{})
	var ran atomic.Int64
	// Hold every worker so that the next jobs stay queued.
	for range 4 {
		e.Go(func() { <-release; ran.Add(1) })
	}
	for range 32 {
		e.Go(func() { ran.Add(1) })
	}
	done := make(chan struct{})
	go func() {
		e.shutdown()
		close(done)
	}()
	close(release)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not return")
	}
	assert.Equal(t, int64(36), ran.Load(), "jobs queued before shutdown run")

	// After shutdown Go drops jobs instead of blocking, also on a full queue.
	for range 128 {
		e.Go(func() { ran.Add(1) })
	}
	assert.Equal(t, int64(36), ran.Load())
	e.shutdown() // idempotent
}

func TestExecutorRecoversPanickingJob(t *testing.T) {
	got := make(chan any, 1)
	e := newExecutor(4, func(v any) { got <- v })
	e.start(1)
	e.Go(func() { panic("boom") })
	var ran atomic.Bool
	e.Go(func() { ran.Store(true) })
	select {
	case v := <-got:
		assert.Equal(t, "boom", v)
	case <-time.After(5 * time.Second):
		t.Fatal("panic not reported")
	}
	e.shutdown()
	require.True(t, ran.Load(), "the worker survives a panicking job")
}

func TestExecutorShutdownWithoutStart(t *testing.T) {
	e := newExecutor(1, nil)
	e.shutdown()
	e.Go(func() {})
}
