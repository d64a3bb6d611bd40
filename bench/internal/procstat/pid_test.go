package procstat

import (
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseStat(t *testing.T) {
	line := []byte("4242 (my (odd) cmd) S 1 4240 4240 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 1000 1000000 500 18446744073709551615")
	cpu, pgid, err := ParseStat(line)
	require.NoError(t, err)
	assert.InDelta(t, 3.25, cpu, 1e-9)
	assert.Equal(t, 4240, pgid)
	_, _, err = ParseStat([]byte("4242 no name"))
	assert.Error(t, err)
	_, _, err = ParseStat([]byte("4242 (x) S 1 2"))
	assert.Error(t, err)
}

func TestProcAndGroupOfSelf(t *testing.T) {
	s, err := Proc(os.Getpid())
	require.NoError(t, err)
	assert.Positive(t, s.RSSBytes)
	g, err := Group(syscall.Getpgrp())
	require.NoError(t, err)
	assert.GreaterOrEqual(t, g.RSSBytes, s.RSSBytes)
	_, err = Group(1 << 30)
	assert.Error(t, err)
}

func TestTreeAndPPid(t *testing.T) {
	pp, err := PPid(os.Getpid())
	require.NoError(t, err)
	assert.Equal(t, os.Getppid(), pp)
	tree, err := Tree(os.Getpid())
	require.NoError(t, err)
	assert.Positive(t, tree.RSSBytes)
	assert.Empty(t, ChildrenNamed(os.Getpid(), "no-such-command"))
}
