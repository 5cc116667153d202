package wrapper

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// metaInstance is the service meta key under which svcwrap records which
// process holds a registration, so that a second svcwrap can tell a live
// holder from a stale one.
const metaInstance = "svcwrap_instance"

// instance names one svcwrap process: its host, its PID, the PID's start
// time in clock ticks since boot, which tells a reused PID from the original,
// and its PID namespace, without which the PID means nothing on a host
// whose containers share its name (host networking).
type instance struct {
	host  string
	pid   int
	start uint64
	pidns uint64 // inode of /proc/self/ns/pid; 0: not known (an older mark)
}

func currentInstance() instance {
	host, _ := os.Hostname()
	pid := os.Getpid()
	start, _ := processStart(pid)
	return instance{host: host, pid: pid, start: start, pidns: pidNamespace()}
}

func (i instance) String() string {
	return fmt.Sprintf("%s/%d/%d/%d", i.host, i.pid, i.start, i.pidns)
}

// parseInstance reads what String wrote, and the three fields of marks made
// before the namespace was added. A host name holds no slash.
func parseInstance(s string) (instance, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 && len(parts) != 4 {
		return instance{}, false
	}
	pid, err1 := strconv.Atoi(parts[1])
	start, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return instance{}, false
	}
	i := instance{host: parts[0], pid: pid, start: start}
	if len(parts) == 4 {
		ns, err := strconv.ParseUint(parts[3], 10, 64)
		if err != nil {
			return instance{}, false
		}
		i.pidns = ns
	}
	return i, true
}

// visibleFrom reports whether i's process can be looked at from self: the
// same host, and the same PID namespace as far as the mark says.
func (i instance) visibleFrom(self instance) bool {
	return i.host == self.host && (i.pidns == 0 || self.pidns == 0 || i.pidns == self.pidns)
}

// pidNamespace is the inode of this process's PID namespace, 0 if unknown.
func pidNamespace() uint64 {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		return 0
	}
	return st.Ino
}

// alive reports whether the process i names still runs on this host.
func (i instance) alive() bool {
	start, err := processStart(i.pid)
	return err == nil && start == i.start
}

// processStart reads field 22 of /proc/PID/stat, the start time in clock
// ticks. The command name (field 2) may hold spaces and parentheses, so
// fields are counted after its closing parenthesis.
//
// Read by hand, not with gopsutil's CreateTime, for correctness rather than
// speed: CreateTime is these ticks turned into milliseconds since the epoch
// through the boot time (btime of /proc/stat, whole seconds, which the
// kernel moves when the clock is stepped). The mark is written by one
// svcwrap and compared by another, possibly after such a step: the ticks
// are the one value both read alike, so a reused PID is told from the
// original without a tolerance that two quick starts could fall within.
func processStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(s[end+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}
