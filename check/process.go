package check

import (
	"context"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v3/process"
)

// maxCommand is how much of a command line Describe keeps.
const maxCommand = 120

// gopsutil reads the machine's boot time (all of /proc/stat, 46 KiB of
// garbage on this machine) for every process it opens, unless told to keep
// it: the boot time does not change while svcwrap runs.
func init() { process.EnableBootTimeCache(true) }

// Describe names process pid for a check's output, "pid 4242: nc -l 9999",
// from its command line as the kernel shows it now (gopsutil), cut to 120
// bytes; a process gone or unreadable is named by its PID alone. It reads
// /proc, tens of microseconds: svcwrap calls it when a status changes, not
// every run.
func Describe(ctx context.Context, pid int) string {
	name := "pid " + strconv.Itoa(pid)
	p, err := process.NewProcessWithContext(ctx, int32(pid))
	if err != nil {
		return name
	}
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
