//go:build unix

package gateway

import (
	"errors"
	"syscall"
)

// spareFD is a file descriptor held in reserve (on /dev/null) so that the
// accept loop can still accept, answer and close a connection when the
// process has run out of descriptors. -1 when none is held.
type spareFD int

func openSpareFD() spareFD {
	fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return spareFD(fd)
}

// release closes the spare so that one descriptor is free; it reports
// false when no spare was held.
func (s *spareFD) release() bool {
	if *s < 0 {
		return false
	}
	_ = syscall.Close(int(*s))
	*s = -1
	return true
}

// reopen takes the spare back (it stays released if that fails: the next
// shortage is then handled by the backoff alone, until a later reopen).
func (s *spareFD) reopen() {
	if *s < 0 {
		*s = openSpareFD()
	}
}

func (s *spareFD) close() { s.release() }

// outOfFDs reports whether err is the process (EMFILE) or system (ENFILE)
// running out of file descriptors.
func outOfFDs(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}
