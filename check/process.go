package check

import (
	"context"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v3/process"
)

// maxCommand is how much of a command line Describe keeps.
const maxCommand = 120

// Describe names process pid for a check's output, "pid 4242: nc -l 9999",
// from its command line as the kernel shows it now (gopsutil), cut to 120
// bytes; a process gone or unreadable is named by its PID alone. It reads
// /proc, tens of microseconds: svcwrap calls it when a status changes, not
// every run.
func Describe(ctx context.Context, pid int) string {
	name := "pid " + strconv.Itoa(pid)
	// Not process.NewProcess: it proves the process exists by its start
	// time, which takes the boot time, which gopsutil finds by reading
	// /proc/stat, /etc/os-release and a dozen files that tell a container
	// from a host (40 KiB of garbage, and most of Describe's time). A
	// process that is gone fails the command line's read just the same.
	p := &process.Process{Pid: int32(pid)}
	argv, err := p.CmdlineSliceWithContext(ctx)
	if err != nil || len(argv) == 0 {
		return name
	}
	cmd := strings.Join(argv, " ")
	if len(cmd) > maxCommand {
		cmd = strings.ToValidUTF8(cmd[:maxCommand], "") + "…"
	}
	return name + ": " + printable(cmd)
}
