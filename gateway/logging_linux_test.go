//go:build linux

package gateway

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/switchboard-go/switchboard/observe"
)

// recordHandler keeps the records it handles.
type recordHandler struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordHandler) nbioMessages() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "component" && a.Value.String() == "nbio" {
				out = append(out, r.Message)
			}
			return true
		})
	}
	return out
}

// captureStdout points file descriptor 1 at a pipe (nbio's default logger
// holds the original *os.File, so replacing os.Stdout would not see it)
// and returns what was written there when stop is called.
func captureStdout(t *testing.T) (stop func() string) {
	t.Helper()
	saved, err := syscall.Dup(1)
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	require.NoError(t, syscall.Dup3(int(w.Fd()), 1, 0))
	out := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		out <- string(b)
	}()
	var once sync.Once
	var got string
	stop = func() string {
		once.Do(func() {
			require.NoError(t, syscall.Dup3(saved, 1, 0))
			_ = syscall.Close(saved)
			_ = w.Close()
			select {
			case got = <-out:
			case <-time.After(5 * time.Second):
				t.Error("stdout pipe not drained")
			}
			_ = r.Close()
		})
		return got
	}
	t.Cleanup(func() { stop() })
	return stop
}

// nbio prints "[INF] NBIO…" lines to stdout through its process-wide
// logger; the gateway routes them to the Observer's slog logger instead.
func TestNBIOLogsRoutedNotOnStdout(t *testing.T) {
	rec := &recordHandler{}
	o, err := observe.New(observe.Config{DisableRuntimeCollectors: true, LogHandler: rec})
	require.NoError(t, err)

	stop := captureStdout(t)
	g, err := New(Config{Addrs: []string{"127.0.0.1:0"}, Observer: o, HandlerWorkers: 2})
	require.NoError(t, err)
	require.NoError(t, g.Start())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, g.Shutdown(ctx))
	printed := stop()

	assert.Empty(t, printed, "written to stdout")
	msgs := rec.nbioMessages()
	assert.NotEmpty(t, msgs, "nbio's lines reach the Observer's logger")
	assert.True(t, func() bool {
		for _, m := range msgs {
			if strings.Contains(m, "NBIO") && !strings.HasSuffix(m, "\n") {
				return true
			}
		}
		return false
	}(), "nbio's start and stop lines: %q", msgs)
}

// With several gateways, nbio's lines go to the newest running one, and
// back to the previous one when it shuts down.
func TestNBIOLogsFollowRunningGateways(t *testing.T) {
	var recs [2]*recordHandler
	var gws [2]*Gateway
	for i := range gws {
		recs[i] = &recordHandler{}
		o, err := observe.New(observe.Config{DisableRuntimeCollectors: true, LogHandler: recs[i]})
		require.NoError(t, err)
		gws[i], err = New(Config{Name: "gw" + string(rune('a'+i)), Addrs: []string{"127.0.0.1:0"}, Observer: o, HandlerWorkers: 2})
		require.NoError(t, err)
		require.NoError(t, gws[i].Start())
	}
	shutdown := func(g *Gateway) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, g.Shutdown(ctx))
	}
	defer shutdown(gws[0])
	nbioLogs.Warn("line %d", 1)
	shutdown(gws[1])
	nbioLogs.Warn("line %d", 2)
	assert.Contains(t, recs[1].nbioMessages(), "line 1")
	assert.NotContains(t, recs[1].nbioMessages(), "line 2")
	assert.Contains(t, recs[0].nbioMessages(), "line 2")
	assert.NotContains(t, recs[0].nbioMessages(), "line 1")
}
