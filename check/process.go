package check

import (
	"bytes"
	"os"
	"strconv"
	"strings"
)

// maxCommand is how much of a command line Describe keeps.
const maxCommand = 120

// Describe names process pid for a check's output, "pid 4242: nc -l 9999",
// from its command line as the kernel shows it now (/proc/PID/cmdline, the
// arguments joined by spaces), cut to 120 bytes; a process gone or
// unreadable is named by its PID alone. svcwrap calls it when a status
// changes, not every run.
//
// Read by hand, not with gopsutil's Process.CmdlineSlice, which reads the
// same file the same way: importing gopsutil's process package brings in
// its cpu package, whose init reads /proc/stat twice for cpu.Percent's
// baseline, and that init ran in every svcwrap's start, before main, on the
// path to the first registration: 0.5-0.9 ms of a 3.1-4.0 ms start before
// main here (GODEBUG=inittrace=1, the median of 20 runs of `svcwrap
// --version` with and without the import; BENCHMARKS.md section 13).
func Describe(pid int) string {
	name := "pid " + strconv.Itoa(pid)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	// The arguments end in NULs; a process that rewrote its title may have
	// padded it with more.
	b = bytes.TrimRight(b, "\x00")
	if err != nil || len(b) == 0 {
		return name
	}
	cmd := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
	if len(cmd) > maxCommand {
		cmd = strings.ToValidUTF8(cmd[:maxCommand], "") + "…"
	}
	return name + ": " + printable(cmd)
}
