package wrapper

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// metaInstance is the service meta key under which svcwrap records which
// process holds a registration, so that a second svcwrap can tell a live
// holder from a stale one.
const metaInstance = "svcwrap_instance"

// instance names one svcwrap process: its host, its PID, and the PID's start
// time in clock ticks since boot, which tells a reused PID from the original.
type instance struct {
	host  string
	pid   int
	start uint64
}

func currentInstance() instance {
	host, _ := os.Hostname()
	pid := os.Getpid()
	start, _ := processStart(pid)
	return instance{host: host, pid: pid, start: start}
}

func (i instance) String() string {
	return fmt.Sprintf("%s/%d/%d", i.host, i.pid, i.start)
}

// parseInstance reads what String wrote. A host name holds no slash, so the
// last two fields are the PID and start time.
func parseInstance(s string) (instance, bool) {
	parts := strings.Split(s, "/")
	if len(parts) != 3 {
		return instance{}, false
	}
	pid, err1 := strconv.Atoi(parts[1])
	start, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return instance{}, false
	}
	return instance{host: parts[0], pid: pid, start: start}, true
}

// alive reports whether the process i names still runs on this host.
func (i instance) alive() bool {
	start, err := processStart(i.pid)
	return err == nil && start == i.start
}

// processStart reads field 22 of /proc/PID/stat, the start time in clock
// ticks. The command name (field 2) may hold spaces and parentheses, so
// fields are counted after its closing parenthesis.
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
