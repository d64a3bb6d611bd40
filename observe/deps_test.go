package observe_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestComponentDependencyRule checks the rule the README states: a
// component imports observe and nothing else of Switchboard but the
// module's small internal helpers (lifetime, notify), and none links
// net/http/pprof or a heavy backend client.
func TestComponentDependencyRule(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const mod = "github.com/switchboard-go/switchboard/"
	forbidden := []string{"net/http/pprof", "github.com/redis/go-redis", "github.com/jackc/pgx", "go.etcd.io/bbolt", "github.com/bytedance/sonic"}
	for _, c := range []string{"gateway", "router", "session", "queue", "fanout"} {
		out, err := exec.Command("go", "list", "-deps", mod+c).Output()
		require.NoError(t, err, "go list %s", c)
		for dep := range strings.Lines(string(out)) {
			dep = strings.TrimSpace(dep)
			if rest, ok := strings.CutPrefix(dep, mod); ok {
				ok := rest == c || rest == "observe" || rest == "internal/lifetime" || rest == "internal/notify"
				require.True(t, ok, "%s imports %s", c, dep)
			}
			for _, f := range forbidden {
				require.False(t, dep == f || strings.HasPrefix(dep, f+"/"), "%s links %s", c, dep)
			}
		}
	}
}
