//go:build linux

package check

import "syscall"

// keeper runs a script on Linux: a shell that leads the script's process
// group, runs the script in a second shell and waits for it. The parent-death
// signal reaches one process, never its group: when svcwrap dies, even by
// SIGKILL, the kernel sends the keeper SIGTERM, and the keeper kills the
// whole group, the script and whatever it started. Only a process that left
// the group (setsid, setpgid) survives svcwrap's death. The script's exit
// status is the keeper's; a script killed by signal N reads as the shell's
// 128+N. The cost is one more exec of /bin/sh per run (BENCHMARKS.md).
// The keeper's own stderr is /dev/null, so that its job report ("Killed")
// never reads as the script's output.
const keeper = `exec 3>&2 2>/dev/null; trap 'kill -KILL 0' TERM; /bin/sh -c "$1" 2>&3 3>&- & wait $!`

// scriptArgv is the argv that runs command.
func scriptArgv(command string) []string {
	return []string{"/bin/sh", "-c", keeper, "sh", command}
}

// scriptProcAttr puts a script in a process group of its own, so that it can
// be killed with everything it started, and tells the keeper when svcwrap
// dies.
func scriptProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
