package opshttp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime/trace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/switchboard-go/switchboard/observe"
)

func newTestObserver(t *testing.T, cfg observe.Config) *observe.Observer {
	t.Helper()
	if cfg.LogHandler == nil {
		cfg.LogHandler = slog.DiscardHandler
	}
	o, err := observe.New(cfg)
	require.NoError(t, err)
	return o
}

func get(t *testing.T, h http.Handler, target string) (int, string) {
	t.Helper()
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, target, nil))
	return rr.Code, rr.Body.String()
}

func TestHealthz(t *testing.T) {
	code, body := get(t, Handler(newTestObserver(t, observe.Config{})), PathHealthz)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)
}

func TestReadyzFlips(t *testing.T) {
	o := newTestObserver(t, observe.Config{DisableRuntimeCollectors: true})
	h := Handler(o)
	code, _ := get(t, h, PathReadyz)
	assert.Equal(t, http.StatusOK, code, "no checks: ready")

	var draining atomic.Bool
	o.AddReadyCheck("store", func(context.Context) error { return nil })
	o.AddReadyCheck("gateway", func(context.Context) error {
		if draining.Load() {
			return errors.New("draining")
		}
		return nil
	})
	code, body := get(t, h, PathReadyz)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, "ok\n", body)

	draining.Store(true)
	code, body = get(t, h, PathReadyz)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "not ready: gateway: draining\n", body)

	draining.Store(false)
	code, _ = get(t, h, PathReadyz)
	assert.Equal(t, http.StatusOK, code)

	draining.Store(true)
	o.RemoveReadyCheck("gateway")
	code, _ = get(t, h, PathReadyz)
	assert.Equal(t, http.StatusOK, code, "removed check no longer counts")
}

func TestReadyzTimeout(t *testing.T) {
	o := newTestObserver(t, observe.Config{DisableRuntimeCollectors: true, ReadyTimeout: 20 * time.Millisecond})
	o.AddReadyCheck("slow", func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	code, body := get(t, Handler(o), PathReadyz)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "not ready: slow: context deadline exceeded")
}

func TestMetricsServesRuntimeHistograms(t *testing.T) {
	o := newTestObserver(t, observe.Config{})
	code, body := get(t, Handler(o), PathMetrics)
	require.Equal(t, http.StatusOK, code)
	for _, want := range []string{
		"# TYPE go_sched_latencies_seconds histogram",
		"go_sched_latencies_seconds_bucket{le=",
		"# TYPE go_sched_pauses_total_gc_seconds histogram",
		"go_sched_pauses_total_gc_seconds_bucket{le=",
		"go_goroutines ",
		"process_cpu_seconds_total ",
		`switchboard_log_records_dropped_total{level="info"} 0`,
	} {
		assert.Contains(t, body, want)
	}
}

func TestPprofIndexAndProfile(t *testing.T) {
	h := Handler(newTestObserver(t, observe.Config{DisableRuntimeCollectors: true}))
	code, body := get(t, h, PathPprof)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "goroutine")
	code, body = get(t, h, PathPprof+"goroutine?debug=1")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "goroutine profile:")
	code, _ = get(t, h, PathPprof+"cmdline")
	assert.Equal(t, http.StatusOK, code)
	code, _ = get(t, h, "/nope")
	assert.Equal(t, http.StatusNotFound, code)
}

func TestNilObserverHandler(t *testing.T) {
	var o *observe.Observer
	code, _ := get(t, Handler(o), PathHealthz)
	assert.Equal(t, http.StatusNotFound, code)
}

func TestTraceRejectsBadSeconds(t *testing.T) {
	h := Handler(newTestObserver(t, observe.Config{DisableRuntimeCollectors: true}))
	for _, s := range []string{"0", "31", "-1", "abc", "1.5", "999999999999999999999"} {
		code, body := get(t, h, PathTrace+"?seconds="+s)
		assert.Equal(t, http.StatusBadRequest, code, s)
		assert.Contains(t, body, "seconds must be", s)
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodPost, PathTrace, nil))
	assert.Equal(t, http.StatusMethodNotAllowed, rr.Code)
	assert.False(t, trace.IsEnabled())
}

func TestTraceOneCaptureAtATime(t *testing.T) {
	srv := httptest.NewServer(Handler(newTestObserver(t, observe.Config{DisableRuntimeCollectors: true})))
	defer srv.Close()
	client := srv.Client()

	// First capture: long, cancelled by the client below.
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	reqA, err := http.NewRequestWithContext(ctxA, http.MethodGet, srv.URL+PathTrace+"?seconds=30", nil)
	require.NoError(t, err)
	respA, err := client.Do(reqA)
	require.NoError(t, err)
	defer respA.Body.Close()
	require.Equal(t, http.StatusOK, respA.StatusCode, "the 200 is flushed as soon as the capture starts")
	assert.Equal(t, "application/octet-stream", respA.Header.Get("Content-Type"))
	require.True(t, trace.IsEnabled())

	// Second capture while the first runs: 409.
	respB, err := client.Get(srv.URL + PathTrace + "?seconds=1")
	require.NoError(t, err)
	body, _ := io.ReadAll(respB.Body)
	respB.Body.Close()
	assert.Equal(t, http.StatusConflict, respB.StatusCode)
	assert.Contains(t, string(body), "already running")

	// The client going away stops the capture well before 30 s.
	cancelA()
	_, _ = io.Copy(io.Discard, respA.Body)
	require.Eventually(t, func() bool { return !trace.IsEnabled() }, 5*time.Second, 5*time.Millisecond)

	// A new capture now succeeds and yields a Go execution trace.
	respC, err := client.Get(srv.URL + PathTrace + "?seconds=1")
	require.NoError(t, err)
	data, err := io.ReadAll(respC.Body)
	respC.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, respC.StatusCode)
	assert.True(t, strings.HasPrefix(string(data), "go 1."), "trace header, got %q", data[:min(len(data), 16)])
	assert.False(t, trace.IsEnabled())
}
