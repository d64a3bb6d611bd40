//go:build !unix

package gateway

// spareFD is not used outside Unix; see spare_unix.go.
type spareFD int

func openSpareFD() spareFD       { return -1 }
func (s *spareFD) release() bool { return false }
func (s *spareFD) reopen()       {}
func (s *spareFD) close()        {}
func outOfFDs(error) bool        { return false }
