// Package opshttp serves an Observer's operator endpoints over HTTP:
// Prometheus metrics, net/http/pprof, runtime/trace captures, liveness and
// readiness. It is a separate package so that importing the SDK's components
// (which all import observe) never links net/http/pprof, whose init
// registers handlers on http.DefaultServeMux: only a host that imports
// opshttp gets pprof, and even then the handlers are served by the
// http.Handler that Handler returns, which hosts mount on a private
// listener. This package does not register anything on
// http.DefaultServeMux itself.
package opshttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"runtime/trace"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-go/switchboard/observe"
)

// Debug/ops endpoint paths served by Handler.
const (
	PathMetrics = "/metrics"
	PathPprof   = "/debug/pprof/"
	PathTrace   = "/debug/trace"
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
)

// MaxTraceSeconds is the longest runtime/trace capture /debug/trace accepts.
const MaxTraceSeconds = 30

// Handler returns o's debug/ops HTTP handler. Mount it at the root of a
// private listener (the pprof index expects the /debug/pprof/ prefix):
//
//   - GET /metrics: the Gatherer in Prometheus text (or OpenMetrics, when
//     negotiated) format; gathering errors are reported per metric family.
//   - /debug/pprof/…: every net/http/pprof handler (index, named profiles,
//     cmdline, profile, symbol, trace).
//   - GET /debug/trace?seconds=N: a runtime/trace capture of N seconds,
//     1 ≤ N ≤ MaxTraceSeconds, default 1; 400 for another N, 409 while any
//     runtime trace is already running in the process (one capture at a
//     time). The capture stops early when the client goes away.
//   - /healthz: 200 "ok" while the process serves HTTP (liveness).
//   - /readyz: 200 "ok" when every ready check passes within the ready
//     timeout, else 503 with "not ready: <check>: <error>".
//
// Other paths get 404. Expose it only to operators: pprof and traces reveal
// internals and cost CPU (and /debug/pprof/cmdline shows the command line).
// Importing this package links net/http/pprof, whose init registers the pprof
// handlers on http.DefaultServeMux: never serve DefaultServeMux publicly in a
// process that imports opshttp. On a nil Observer Handler returns
// a handler that answers 404 to everything. Handler may be called more than
// once; the handlers are safe for concurrent use.
func Handler(o *observe.Observer) http.Handler {
	if o == nil {
		return http.NotFoundHandler()
	}
	mux := http.NewServeMux()
	mux.Handle(PathMetrics, promhttp.HandlerFor(o.Gatherer(), promhttp.HandlerOpts{
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc(PathPprof, pprof.Index)
	mux.HandleFunc(PathPprof+"cmdline", pprof.Cmdline)
	mux.HandleFunc(PathPprof+"profile", pprof.Profile)
	mux.HandleFunc(PathPprof+"symbol", pprof.Symbol)
	mux.HandleFunc(PathPprof+"trace", pprof.Trace)
	mux.HandleFunc(PathTrace, serveTrace)
	mux.HandleFunc(PathHealthz, serveHealthz)
	mux.HandleFunc(PathReadyz, func(w http.ResponseWriter, r *http.Request) { serveReadyz(o, w, r) })
	return mux
}

func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte("ok\n"))
}

func serveReadyz(o *observe.Observer, w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), o.ReadyTimeout())
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := o.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		var nr *observe.NotReadyError
		if errors.As(err, &nr) {
			_, _ = fmt.Fprintf(w, "not ready: %s: %v\n", nr.Check, nr.Err)
			return
		}
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}

// serveTrace captures a runtime/trace. runtime/trace allows one trace per
// process, so trace.Start itself is the "one capture at a time" lock: it
// fails while any capture (this endpoint's, /debug/pprof/trace's or the
// host's own) is running, and that failure is answered with 409.
func serveTrace(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	secs := 1
	if s := r.URL.Query().Get("seconds"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxTraceSeconds {
			http.Error(w, fmt.Sprintf("seconds must be an integer from 1 to %d", MaxTraceSeconds), http.StatusBadRequest)
			return
		}
		secs = n
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="trace.out"`)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	lw := &lockedWriter{w: w}
	if err := trace.Start(lw); err != nil {
		w.Header().Del("Content-Disposition")
		w.Header().Del("Content-Type")
		http.Error(w, "a runtime trace capture is already running", http.StatusConflict)
		return
	}
	// Send the 200 now so that clients see the capture has started.
	lw.flush()
	t := time.NewTimer(time.Duration(secs) * time.Second)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
	trace.Stop() // waits until all trace data is written to w
}

// lockedWriter serialises runtime/trace's writer goroutine with the
// handler's own flush of the same ResponseWriter.
type lockedWriter struct {
	mu sync.Mutex
	w  http.ResponseWriter
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = http.NewResponseController(l.w).Flush()
}
