package plan

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func sum(v []int) int {
	t := 0
	for _, x := range v {
		t += x
	}
	return t
}

func TestMakeLayouts(t *testing.T) {
	cases := []struct {
		name                     string
		conns, per, srv, cli     int
		wantServers, wantClients int
	}{
		{"fits one process", 15000, 19000, 0, 0, 1, 1},
		{"100k under 20k files", 100000, 19000, 0, 0, 6, 6},
		{"exact multiple", 38000, 19000, 0, 0, 2, 2},
		{"one over", 19001, 19000, 0, 0, 2, 2},
		{"high limit uses fewer", 100000, 1 << 20, 0, 0, 1, 1},
		{"forced counts", 1000, 19000, 3, 2, 3, 2},
		{"tiny", 1, 19000, 0, 0, 1, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Make(tc.conns, tc.per, tc.srv, tc.cli)
			require.NoError(t, err)
			assert.Equal(t, tc.wantServers, p.Servers)
			assert.Equal(t, tc.wantClients, p.Clients)
			assert.Equal(t, tc.conns, sum(p.PerServer))
			assert.Equal(t, tc.conns, sum(p.PerClient))
			require.Len(t, p.Matrix, p.Clients)
			colSums := make([]int, p.Servers)
			for c, row := range p.Matrix {
				require.Len(t, row, p.Servers)
				assert.Equal(t, p.PerClient[c], sum(row), "row %d", c)
				for s, n := range row {
					assert.GreaterOrEqual(t, n, 0)
					colSums[s] += n
				}
			}
			assert.Equal(t, p.PerServer, colSums)
			for _, n := range p.PerServer {
				assert.LessOrEqual(t, n, tc.per)
			}
			for _, n := range p.PerClient {
				assert.LessOrEqual(t, n, tc.per)
			}
		})
	}
}

func TestMakeSpreadsEveryClientOverEveryServer(t *testing.T) {
	p, err := Make(100000, 19000, 0, 0)
	require.NoError(t, err)
	for c, row := range p.Matrix {
		for s, n := range row {
			assert.Positive(t, n, "client %d → server %d", c, s)
		}
	}
}

func TestMakeErrors(t *testing.T) {
	_, err := Make(0, 100, 0, 0)
	assert.Error(t, err)
	_, err = Make(10, 0, 0, 0)
	assert.Error(t, err)
	_, err = Make(100000, 19000, 2, 0)
	assert.ErrorIs(t, err, ErrTooFew)
	_, err = Make(100000, 19000, 0, 3)
	assert.ErrorIs(t, err, ErrTooFew)
}

func TestSplit(t *testing.T) {
	assert.Equal(t, []int{4, 3, 3}, Split(10, 3))
	assert.Equal(t, []int{0, 0}, Split(0, 2))
	assert.Nil(t, Split(5, 0))
}

func TestPerProcess(t *testing.T) {
	assert.Equal(t, 19000, PerProcess(20000, 1000))
	assert.Equal(t, 1, PerProcess(500, 1000))
	assert.Equal(t, 1<<30, PerProcess(1<<62, 0))
}

func TestNoFile(t *testing.T) {
	soft, hard, err := NoFile()
	require.NoError(t, err)
	assert.Positive(t, soft)
	assert.GreaterOrEqual(t, hard, soft)
}

func TestLoopbackAddrs(t *testing.T) {
	assert.Equal(t, []string{"127.0.0.1", "127.0.0.2"}, LoopbackAddrs(2, 0))
	assert.Equal(t, []string{"127.0.1.0"}, LoopbackAddrs(1, 255))
}

func TestAddrsFor(t *testing.T) {
	src, dst := AddrsFor(15000, 64512)
	assert.Equal(t, 1, src*dst, "15k fits a widened range on one address pair")
	src, dst = AddrsFor(15000, 28232)
	assert.Equal(t, 2, src*dst, "the default range is kept half free")
	src, dst = AddrsFor(19000, 28232)
	assert.GreaterOrEqual(t, src*dst*28232/2, 19000)
	src, dst = AddrsFor(100000, 1000)
	assert.GreaterOrEqual(t, src*dst*500, 100000)
	assert.LessOrEqual(t, src-dst, 1)
}

func TestPortRange(t *testing.T) {
	lo, hi, err := ParsePortRange("32768\t60999\n")
	require.NoError(t, err)
	assert.Equal(t, 32768, lo)
	assert.Equal(t, 60999, hi)
	for _, bad := range []string{"", "1", "a b", "1 b", "5 4", "0 10", "1 70000"} {
		_, _, err := ParsePortRange(bad)
		assert.Error(t, err, "%q", bad)
	}

	dir := t.TempDir()
	f := filepath.Join(dir, "range")
	require.NoError(t, os.WriteFile(f, []byte("32768 60999\n"), 0o644))
	lo, hi, changed, err := WidenPortRange(f, 1024, 65535)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, 1024, lo)
	assert.Equal(t, 65535, hi)
	_, _, changed, err = WidenPortRange(f, 1024, 65535)
	require.NoError(t, err)
	assert.False(t, changed, "already wide enough")

	ro := filepath.Join(dir, "ro")
	require.NoError(t, os.WriteFile(ro, []byte("40000 50000\n"), 0o444))
	if os.Geteuid() != 0 { // root ignores file modes
		lo, hi, changed, err = WidenPortRange(ro, 1024, 65535)
		require.NoError(t, err)
		assert.False(t, changed)
		assert.Equal(t, 40000, lo)
		assert.Equal(t, 50000, hi)
	}
	_, _, _, err = WidenPortRange(filepath.Join(dir, "missing"), 1024, 65535)
	assert.Error(t, err)
}
