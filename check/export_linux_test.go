//go:build linux

package check

import "testing"

// UseProcTables makes Listening read /proc/<pid>/net/tcp and tcp6 instead of
// asking sock_diag, until the end of the test, so that tests cover both
// sources of socket tables.
func UseProcTables(tb testing.TB) {
	before := diagDisabled.Swap(true)
	tb.Cleanup(func() { diagDisabled.Store(before) })
}

// DiagDisabled reports whether Listening has given up on sock_diag, so that a
// test meant for it knows it runs on /proc instead.
func DiagDisabled() bool { return diagDisabled.Load() }

// UseChildrenScan makes Listening find children by reading the parent of every
// process, as on kernels without /proc/<pid>/task/<tid>/children files, until
// the end of the test.
func UseChildrenScan(tb testing.TB) {
	detectChildrenFiles()
	before := childrenByScan.Swap(true)
	tb.Cleanup(func() { childrenByScan.Store(before) })
}

// Children lists the children of pid as the tree walk of Listening does.
func Children(pid int) ([]int, error) {
	return appendChildren(nil, pid, make([]byte, 32<<10))
}

// RememberedInIPv6 reports whether p's memory says that its socket was last
// found by the fast look, in the IPv6 dump.
func RememberedInIPv6(p Port) bool {
	p.last.mu.Lock()
	defer p.last.mu.Unlock()
	return p.last.v6
}
