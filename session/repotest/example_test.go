package repotest_test

import (
	"path/filepath"
	"testing"

	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/embedded"
	"github.com/switchboard-go/switchboard/session/repotest"
)

// An implementation's test runs the suite with a function that opens the
// store called name — the same name reopening the same data.
func ExampleRun() {
	// In a _test.go file of the implementation:
	_ = func(t *testing.T) {
		root := t.TempDir()
		repotest.Run(t, func(t *testing.T, name string) session.Repository {
			s, err := embedded.Open(filepath.Join(root, name), embedded.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		})
	}
}
