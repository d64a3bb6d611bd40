package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// The test binary re-executes itself as a child when CTL_TEST_ROLE is set.
func TestMain(m *testing.M) {
	switch os.Getenv("CTL_TEST_ROLE") {
	case "child":
		os.Exit(childMain())
	case "parent":
		os.Exit(parentMain())
	}
	goleak.VerifyTestMain(m)
}

func childMain() int {
	s := NewServer(os.Stdout)
	s.Emit("ready", map[string]int{"pid": os.Getpid()})
	err := s.Serve(context.Background(), os.Stdin, func(_ context.Context, cmd string, args json.RawMessage) (any, error) {
		switch cmd {
		case "echo":
			var v any
			if err := json.Unmarshal(args, &v); err != nil {
				return nil, err
			}
			return v, nil
		case "fail":
			return nil, errors.New("boom")
		case "exit":
			os.Exit(3)
		}
		return nil, fmt.Errorf("unknown %q", cmd)
	})
	if err != nil && err.Error() != "EOF" {
		return 1
	}
	return 0
}

// parentMain starts a grandchild through a Group, prints its pid, and
// blocks: the test kills this process alone and expects Pdeathsig to take
// the grandchild with it.
func parentMain() int {
	g := &Group{}
	c, err := g.Start("grandchild", os.Args[0], []string{"-test.run=^$"}, []string{"CTL_TEST_ROLE=child"}, os.Stderr)
	if err != nil {
		return 1
	}
	if _, err := c.WaitEvent(context.Background(), "ready"); err != nil {
		return 1
	}
	fmt.Println(c.Pid())
	select {}
}

func startChild(t *testing.T, g *Group) *Child {
	t.Helper()
	c, err := g.Start("child", os.Args[0], []string{"-test.run=^$"}, []string{"CTL_TEST_ROLE=child"}, os.Stderr)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = c.WaitEvent(ctx, "ready")
	require.NoError(t, err)
	return c
}

func TestCallRoundTrip(t *testing.T) {
	g := &Group{}
	defer g.Close()
	c := startChild(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var out map[string]any
	require.NoError(t, c.Call(ctx, "echo", map[string]any{"a": 1.5, "b": "x"}, &out))
	assert.Equal(t, map[string]any{"a": 1.5, "b": "x"}, out)

	err := c.Call(ctx, "fail", nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "boom")
	assert.Error(t, c.Call(ctx, "nope", nil, nil))

	// Concurrent calls are matched to their own replies.
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			var v float64
			err := c.Call(ctx, "echo", i, &v)
			if err == nil && int(v) != i {
				err = fmt.Errorf("got %v for %d", v, i)
			}
			errs <- err
		}()
	}
	for range 20 {
		require.NoError(t, <-errs)
	}
}

func TestCallAfterExitFails(t *testing.T) {
	g := &Group{}
	defer g.Close()
	c := startChild(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.Call(ctx, "exit", nil, nil)
	require.ErrorIs(t, err, ErrChildExited)
	<-c.Done()
	require.ErrorIs(t, c.Call(ctx, "echo", 1, nil), ErrChildExited)
	_, err = c.WaitEvent(ctx, "ready")
	require.ErrorIs(t, err, ErrChildExited)
}

func TestChildExitsOnStdinEOF(t *testing.T) {
	g := &Group{}
	defer g.Close()
	c := startChild(t, g)
	require.NoError(t, c.CloseInput())
	select {
	case <-c.Done():
		assert.NoError(t, c.Err())
	case <-time.After(10 * time.Second):
		t.Fatal("child did not exit on stdin EOF")
	}
}

func TestGroupCloseKillsEveryChild(t *testing.T) {
	g := &Group{}
	var pids []int
	for range 3 {
		pids = append(pids, startChild(t, g).Pid())
	}
	require.Len(t, g.Children(), 3)
	g.Close()
	for _, pid := range pids {
		assert.True(t, WaitGone(pid, 5*time.Second), "pid %d survived Close", pid)
	}
	assert.Empty(t, g.Children())
	g.Close() // idempotent
}

func TestPdeathsigKillsOrphans(t *testing.T) {
	g := &Group{}
	defer g.Close()
	parent, err := g.Start("parent", os.Args[0], []string{"-test.run=^$"}, []string{"CTL_TEST_ROLE=parent"}, os.Stderr)
	require.NoError(t, err)
	// The parent prints the grandchild's pid as a non-JSON line, which the
	// reader passes to stderr; read it from /proc instead: the grandchild
	// is the parent's only child process.
	var grandchild int
	require.Eventually(t, func() bool {
		grandchild = childOf(parent.Pid())
		return grandchild != 0
	}, 10*time.Second, 10*time.Millisecond)
	require.True(t, Alive(grandchild))
	// Kill only the parent (not its group): the kernel must kill the
	// grandchild, which lives in its own process group.
	require.NoError(t, syscall.Kill(parent.Pid(), syscall.SIGKILL))
	<-parent.Done()
	assert.True(t, WaitGone(grandchild, 5*time.Second), "grandchild %d outlived its parent", grandchild)
}

// childOf returns a child pid of pid from /proc/<pid>/task/*/children, or 0.
func childOf(pid int) int {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		if err != nil {
			continue
		}
		var c int
		if _, err := fmt.Sscan(string(b), &c); err == nil && c > 0 {
			return c
		}
	}
	return 0
}

func TestWaitGoneOnMissingPid(t *testing.T) {
	assert.True(t, WaitGone(1<<22+12345, time.Millisecond))
	assert.False(t, WaitGone(os.Getpid(), 20*time.Millisecond))
	assert.True(t, Alive(os.Getpid()))
}
