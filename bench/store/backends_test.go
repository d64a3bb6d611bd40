package storebench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/switchboard-go/switchboard/internal/pgtest"
	"github.com/switchboard-go/switchboard/session"
	"github.com/switchboard-go/switchboard/session/embedded"
	"github.com/switchboard-go/switchboard/session/pgstore"
)

var pg pgtest.Shared

// dirs are the embedded stores' directories, removed when the run ends.
var dirs sync.Map

func TestMain(m *testing.M) {
	code := m.Run()
	dirs.Range(func(k, _ any) bool {
		_ = os.RemoveAll(k.(string))
		return true
	})
	if err := pg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
		code = 1
	}
	os.Exit(code)
}

// backend opens a repository by name: the same name reopens the same data.
type backend struct {
	name string
	// open opens store name; maxBatch 1 means one transaction per append.
	open func(b *testing.B, name string, maxBatch int) session.Repository
}

var dbSeq atomic.Int64

var backends = []backend{
	{"embedded", func(b *testing.B, name string, maxBatch int) session.Repository {
		dir := filepath.Join(os.TempDir(), "storebench-"+name)
		dirs.Store(dir, true)
		s, err := embedded.Open(dir, embedded.Options{MaxBatch: maxBatch})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
	{"postgres", func(b *testing.B, name string, maxBatch int) session.Repository {
		dsn, err := pg.Server(b).CreateDatabase(context.Background(), "storebench_"+name)
		if err != nil {
			b.Fatal(err)
		}
		s, err := pgstore.Open(context.Background(), dsn, pgstore.Options{MaxBatch: maxBatch, MaxConns: 16})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}},
}

// freshName returns a store name no earlier call used.
func freshName(what string) string {
	return fmt.Sprintf("%s_%d_%d", what, os.Getpid(), dbSeq.Add(1))
}
