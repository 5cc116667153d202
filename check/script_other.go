//go:build unix && !linux

package check

import "syscall"

// scriptArgv is the argv that runs command. Without a parent-death signal,
// a script svcwrap leaves by dying (SIGKILL) runs to its end.
func scriptArgv(command string) []string { return []string{"/bin/sh", "-c", command} }

func scriptProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
