package desk_test

import (
	"log/slog"
	"os"
	"testing"

	"github.com/switchboard-go/switchboard/observe"
)

// testObserver logs to stderr when SWITCHBOARD_TEST_LOGS=1 (debugging).
func testObserver(t *testing.T) *observe.Observer {
	t.Helper()
	if os.Getenv("SWITCHBOARD_TEST_LOGS") != "1" {
		return nil
	}
	o, err := observe.New(observe.Config{
		LogHandler:               slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}),
		Sampling:                 observe.SamplingConfig{Disabled: true},
		DisableRuntimeCollectors: true,
		Registerer:               nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}
