//go:build linux

package ctl

import "syscall"

// sysProcAttr gives each child its own process group (so Kill reaches its
// descendants) and asks the kernel to SIGKILL it when the coordinator dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
