//go:build race

package gateway

import "syscall"

// raceHandoff, called by nbhttp's OnOpen hook on the accepting goroutine,
// tells the race detector that what that goroutine wrote (the accepted conn
// and its addresses) happens before the poller reads it. The real ordering comes from epoll, which the detector cannot
// see; syscall.Write releases (and the poller's syscall.Read acquires) the
// runtime's ioSync token. Writing to fd -1 fails with EBADF and has no
// other effect. Only race builds include this.
func raceHandoff() { _, _ = syscall.Write(-1, nil) }
