package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100
// on every Linux architecture Go supports (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// cpuUse is a process's CPU time so far, read two ways.
type cpuUse struct {
	// ticks is utime+stime from /proc/PID/stat, in 1/clockTicks s: what ps
	// and top show, 10 ms resolution.
	ticks int64
	// ns is the sum over the process's threads of the time they ran, from
	// /proc/PID/task/TID/schedstat, in nanoseconds. A thread that exits
	// takes its share with it, so tids records which threads were counted.
	ns   int64
	tids map[int]bool
}

// readCPU reads the CPU time pid has used so far.
func readCPU(pid int) (cpuUse, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return cpuUse{}, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// count fields after the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return cpuUse{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	u := cpuUse{ticks: utime + stime, tids: map[int]bool{}}

	dir := fmt.Sprintf("/proc/%d/task", pid)
	d, err := os.Open(dir)
	if err != nil {
		return cpuUse{}, err
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	for _, n := range names {
		data, err := os.ReadFile(dir + "/" + n + "/schedstat")
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		tid, _ := strconv.Atoi(n)
		u.ns += ns
		u.tids[tid] = true
	}
	return u, nil
}

// since returns the CPU seconds used between an earlier reading and u, by
// both methods, and whether every thread of the earlier reading was still
// there (if not, the schedstat figure under-counts).
func (u cpuUse) since(before cpuUse) (tickSec, nsSec float64, complete bool) {
	complete = true
	for tid := range before.tids {
		if !u.tids[tid] {
			complete = false
		}
	}
	return float64(u.ticks-before.ticks) / clockTicks, float64(u.ns-before.ns) / 1e9, complete
}

// memUse is a process's memory, in kB.
type memUse struct {
	rss, hwm, pss int64
}

// readMem reads VmRSS and VmHWM (peak RSS) from /proc/PID/status and Pss
// (RSS with each shared page divided among the processes that share it)
// from /proc/PID/smaps_rollup.
func readMem(pid int) (memUse, error) {
	var m memUse
	if err := scanKB(fmt.Sprintf("/proc/%d/status", pid), map[string]*int64{"VmRSS:": &m.rss, "VmHWM:": &m.hwm}); err != nil {
		return m, err
	}
	err := scanKB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), map[string]*int64{"Pss:": &m.pss})
	return m, err
}

// scanKB reads "Key:   123 kB" lines of path into the fields.
func scanKB(path string, fields map[string]*int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		w := strings.Fields(sc.Text())
		if len(w) >= 2 {
			if p, ok := fields[w[0]]; ok {
				*p, _ = strconv.ParseInt(w[1], 10, 64)
			}
		}
	}
	return sc.Err()
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

// busyTime is the machine's CPU time from the first line of /proc/stat, in
// clock ticks: all of it, and the part spent idle or waiting for I/O.
type busyTime struct{ total, idle int64 }

func readBusy() busyTime {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return busyTime{}
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	var b busyTime
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i < 8 { // guest time is already counted in user
			b.total += n
		}
		if i == 3 || i == 4 {
			b.idle += n
		}
	}
	return b
}

// since is the fraction of the machine's CPU time that was busy between an
// earlier reading and b.
func (b busyTime) since(before busyTime) float64 {
	total := b.total - before.total
	if total <= 0 {
		return 0
	}
	return 1 - float64(b.idle-before.idle)/float64(total)
}
