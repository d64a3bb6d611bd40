package opshttp_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/switchboard-go/switchboard/observe"
	"github.com/switchboard-go/switchboard/observe/opshttp"
)

func ExampleHandler() {
	obs, err := observe.New(observe.Config{})
	if err != nil {
		panic(err)
	}
	draining := false
	obs.AddReadyCheck("gateway", func(context.Context) error {
		if draining {
			return errors.New("draining")
		}
		return nil
	})
	h := opshttp.Handler(obs) // serve it on a private listener: http.ListenAndServe("127.0.0.1:9090", h)

	probe := func(path string) {
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
		fmt.Printf("%s %d %s", path, rr.Code, rr.Body.String())
	}
	probe("/healthz")
	probe("/readyz")
	draining = true
	probe("/readyz")
	// Output:
	// /healthz 200 ok
	// /readyz 200 ok
	// /readyz 503 not ready: gateway: draining
}
