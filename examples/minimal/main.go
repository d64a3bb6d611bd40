// Command minimal is a complete, small support backend built on
// Switchboard's public packages only. See doc.go.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/switchboard-go/switchboard/observe"
	"github.com/switchboard-go/switchboard/observe/opshttp"
)

// Options configures run.
type Options struct {
	Addr, OpsAddr string        // listen addresses ("127.0.0.1:0" picks a free port)
	Token         string        // shared secret clients pass as ?token= ("" admits anyone)
	OfflineGrace  time.Duration // how long a disconnected agent keeps its conversations
}

func main() {
	var o Options
	flag.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "WebSocket listen address (path /ws)")
	flag.StringVar(&o.OpsAddr, "ops", "127.0.0.1:9090", "metrics and health listen address")
	flag.DurationVar(&o.OfflineGrace, "grace", 30*time.Second, "how long a disconnected agent keeps its conversations")
	flag.Parse()
	o.Token = os.Getenv("MINIMAL_TOKEN")
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, o, func(ws, ops string) {
		log.Printf("minimal: ws://%s/ws  http://%s/metrics  http://%s/readyz", ws, ops, ops)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx is done, then shuts down. ready is called with the
// bound addresses once clients can connect.
func run(ctx context.Context, o Options, ready func(ws, ops string)) error {
	obs, err := observe.New(observe.Config{Namespace: "minimal"})
	if err != nil {
		return err
	}
	s, err := newApp(ctx, obs, o)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.OpsAddr)
	if err != nil {
		return errors.Join(err, s.shutdown(ctx))
	}
	ops := &http.Server{Handler: opshttp.Handler(obs), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- ops.Serve(ln) }()
	if err = s.g.Start(); err == nil {
		ready(s.g.Addrs()[0].String(), ln.Addr().String())
		<-ctx.Done()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err = errors.Join(err, s.shutdown(sctx), ops.Shutdown(sctx))
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
