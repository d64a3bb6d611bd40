package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lesismal/nbio/logging"
)

// nbio logs through one process-wide logger (logging.DefaultLogger), which
// prints to stdout by default. The first New replaces it, once, with
// nbioLogs, which forwards each line to the slog logger of the most
// recently started Gateway that is still running (Config.Observer's logger;
// a gateway without an Observer discards them), and to slog.Default() while
// no gateway runs. A line does not say which engine wrote it, so with
// several gateways in one process their nbio lines all go to the newest
// one's logger; Shutdown hands them back to the previous one. Levels map
// one to one (nbio's Debug, Info, Warn and Error); records carry
// component=nbio.
var nbioLogs = &nbioLogger{}

type nbioLogger struct {
	install sync.Once
	mu      sync.Mutex
	live    []*nbioRoute // running gateways, oldest first
	cur     atomic.Pointer[slog.Logger]
}

// nbioRoute is one running gateway's entry (a pointer, so that two
// gateways sharing a logger are told apart).
type nbioRoute struct{ l *slog.Logger }

// installNBIOLogger replaces nbio's logger with nbioLogs, once per process.
func installNBIOLogger() {
	nbioLogs.install.Do(func() { logging.SetLogger(nbioLogs) })
}

// push routes nbio's lines to l until pop is called with the result.
func (n *nbioLogger) push(l *slog.Logger) *nbioRoute {
	r := &nbioRoute{l: l}
	n.mu.Lock()
	n.live = append(n.live, r)
	n.cur.Store(l)
	n.mu.Unlock()
	return r
}

func (n *nbioLogger) pop(r *nbioRoute) {
	if r == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, x := range n.live {
		if x == r {
			n.live = append(n.live[:i], n.live[i+1:]...)
			break
		}
	}
	if k := len(n.live); k > 0 {
		n.cur.Store(n.live[k-1].l)
	} else {
		n.cur.Store(nil)
	}
}

func (n *nbioLogger) log(level slog.Level, format string, v []any) {
	l := n.cur.Load()
	if l == nil {
		l = slog.Default()
	}
	ctx := context.Background()
	if !l.Enabled(ctx, level) {
		return
	}
	l.Log(ctx, level, strings.TrimRight(fmt.Sprintf(format, v...), "\n"), "component", "nbio")
}

// Debug implements logging.Logger.
func (n *nbioLogger) Debug(format string, v ...any) { n.log(slog.LevelDebug, format, v) }

// Info implements logging.Logger.
func (n *nbioLogger) Info(format string, v ...any) { n.log(slog.LevelInfo, format, v) }

// Warn implements logging.Logger.
func (n *nbioLogger) Warn(format string, v ...any) { n.log(slog.LevelWarn, format, v) }

// Error implements logging.Logger.
func (n *nbioLogger) Error(format string, v ...any) { n.log(slog.LevelError, format, v) }
