//go:build !linux

package ctl

import "syscall"

// sysProcAttr gives each child its own process group so Kill reaches its
// descendants; Pdeathsig exists only on Linux, where stdin EOF remains the
// fallback that makes a child exit.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
