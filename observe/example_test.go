package observe_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/switchboard-go/switchboard/observe"
)

// stdoutText writes text logs without timestamps, for stable example output.
func stdoutText() slog.Handler {
	return slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
}

func ExampleNew() {
	obs, err := observe.New(observe.Config{
		LogHandler: stdoutText(),
		// Keep every second INFO record; turn the first-N rule off so the
		// output does not depend on the wall clock.
		Sampling: observe.SamplingConfig{Info: observe.R(0.5), FirstN: -1},
	})
	if err != nil {
		panic(err)
	}
	log := obs.Logger().With("component", "queue")
	for i := range 4 {
		log.Info("task done", "n", i)
	}
	log.Error("worker crashed", "err", errors.New("boom")) // ERROR: always kept

	dropped := obs.Counter("log", "records_dropped_total", "Log records dropped by the sampler, by level.", "level")
	fmt.Println("dropped info records:", testutil.ToFloat64(dropped.WithLabelValues("info")))
	// Output:
	// level=INFO msg="task done" component=queue n=1
	// level=INFO msg="task done" component=queue n=3
	// level=ERROR msg="worker crashed" component=queue err=boom
	// dropped info records: 2
}

func ExampleInject() {
	// An incoming request carries a W3C traceparent.
	in := http.Header{}
	in.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx := observe.ExtractHTTP(context.Background(), in)

	// The trace travels on with a queued task's envelope...
	envelope := observe.MapCarrier{}
	observe.Inject(ctx, envelope)
	fmt.Println(envelope["traceparent"])

	// ...and is picked up by the worker.
	worker := observe.Extract(context.Background(), envelope)
	fmt.Println(observe.TraceID(worker))
	// Output:
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// 4bf92f3577b34da6a3ce929d0e0e4736
}

func ExampleEnsureTrace() {
	in := http.Header{}
	in.Set("traceparent", "garbage") // malformed: ignored
	ctx := observe.ExtractHTTP(context.Background(), in)
	fmt.Printf("extracted: %q\n", observe.TraceID(ctx))

	ctx = observe.EnsureTrace(ctx) // a new trace starts, so logs still correlate
	fmt.Println("new trace id length:", len(observe.TraceID(ctx)))

	out := http.Header{}
	observe.InjectHTTP(ctx, out)
	fmt.Println("propagated:", out.Get("traceparent") != "")
	// Output:
	// extracted: ""
	// new trace id length: 32
	// propagated: true
}

func ExampleTraceHandler() {
	log := slog.New(observe.TraceHandler(stdoutText()))
	ctx := observe.Extract(context.Background(), observe.MapCarrier{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	})
	log.WithGroup("req").InfoContext(ctx, "assigned", "agent", "a7")
	// Output:
	// level=INFO msg=assigned trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7 req.agent=a7
}

func ExampleObserver_Histogram() {
	obs, err := observe.New(observe.Config{DisableRuntimeCollectors: true})
	if err != nil {
		panic(err)
	}
	// Components pre-resolve children once, at construction.
	wait := obs.Histogram("queue", "wait_seconds", "Time tasks wait for a worker.", nil, "tier")
	p0 := wait.WithLabelValues("p0")
	p0.Observe(0.004)
	fmt.Println(testutil.CollectAndCount(wait, "switchboard_queue_wait_seconds"))

	var off *observe.Observer // nil: metrics off, no cost
	fmt.Println(off.Histogram("queue", "wait_seconds", "", nil, "tier") == nil)
	// Output:
	// 1
	// true
}
