//go:build linux

package check

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

// procRoot is where the kernel's process information is mounted.
const procRoot = "/proc"

// bufPool holds the read buffers of Listening: one wrapper runs it about once a
// second (every ~20 ms while the child is not ready), and a thousand wrappers
// may share a small machine, so the hot path should not allocate a buffer
// per call.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// The socket tables and the process tree are read by hand (sock_diag,
// /proc), not with gopsutil: its Process.Children takes 7.9 ms (it runs
// pgrep) where the children files take 49 µs, its net.ConnectionsPid 9.6 ms
// where sock_diag takes 35 µs (BENCHMARKS.md, checks section), on a path
// that runs every second, and every ~20 ms while the child is not ready.

// Listening reports whether the process tree rooted at pid (pid itself, its
// threads, and all its descendants) has a TCP socket in LISTEN state on port,
// on any local address, IPv4 or IPv6.
//
// It reads the kernel's state and never connects to the port, so it cannot
// steal a connection from a server that accepts only one. It first asks which
// sockets listen on port in pid's network namespace (see listenInodes: the
// child may live in another namespace than svcwrap); only when there is one
// does it walk the process tree and look for it among the processes' open
// files. So the common not-ready case stays cheap, and a socket held by an
// unrelated process on the same port does not count.
//
// A process of the tree that exits during the walk, or whose open files may
// not be read, is skipped. If pid itself does not exist (or has exited and is
// a zombie), the error wraps os.ErrNotExist. Invalid arguments wrap
// os.ErrInvalid. Whenever the error is not nil, the bool is false.
func Listening(pid, port int) (bool, error) {
	return listening(pid, port, nil)
}

// listening is Listening that remembers in last, when it is not nil, which
// open file of the root process pid held the socket, and looks there first
// next time: a ready child is checked every second, and its listening socket
// rarely moves. The socket must still be in LISTEN state on port (the dump
// says so) and that descriptor must still refer to it (its inode, unique while
// the socket exists), so a closed or replaced socket is never taken for
// the remembered one; only then is the tree walked again.
func listening(pid, port int, last *socketHolder) (bool, error) {
	if pid <= 0 {
		return false, fmt.Errorf("listening check: pid %d: %w", pid, os.ErrInvalid)
	}
	if port < 1 || port > 65535 {
		return false, fmt.Errorf("listening check: port %d: %w", port, os.ErrInvalid)
	}

	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp

	var inodeArray [4]uint64 // enough for v4 + v6 + a few SO_REUSEPORT twins
	if last != nil {
		last.mu.Lock()
		defer last.mu.Unlock()
		if last.stillListening(pid, port, inodeArray[:0], buf) {
			return true, nil
		}
	}

	// Find the sockets listening on port in pid's network namespace.
	inodes, ours, err := listenInodes(inodeArray[:0], pid, port, buf)
	if err != nil || len(inodes) == 0 {
		return false, err
	}
	if last != nil && last.pid == pid && fdHolds(last.pid, last.fd, inodes, buf) {
		last.ours = ours
		return true, nil
	}

	// Look for one of them among the open files of the tree.
	at, err := treeHoldsSocket(pid, inodes, buf)
	if err != nil {
		return false, err
	}
	if last != nil {
		// Only the root's own descriptor is remembered: while the root
		// lives its PID cannot be reused, whereas a descendant may leave the
		// tree (a daemon reparented to init) and still hold the socket.
		last.pid, last.fd, last.ours, last.v6 = 0, 0, false, false
		if at.pid == pid {
			last.pid, last.fd, last.ours = at.pid, at.fd, ours
		}
	}
	return at.pid != 0, nil
}

// stillListening reports whether the descriptor that held the socket last
// time still holds one that listens on port, asking a dump of our namespace
// for it alone: for a ready child, one dump of the family it was found in
// and two readlinks (the child's namespace, the descriptor), where the full
// look dumps both families and may walk the tree. It is asked only for a
// socket found in our namespace's dump, while the child is still in our
// namespace, so that it answers as the full look would. Any doubt (another
// pid, another namespace, a failed dump, a socket gone) leaves the answer to
// the full look.
func (h *socketHolder) stillListening(pid, port int, inodes []uint64, buf []byte) bool {
	if h.pid != pid || !h.ours || diagDisabled.Load() {
		return false
	}
	if same, err := sameNetNamespace(pid); !same || err != nil {
		return false
	}
	families := [2]uint8{syscall.AF_INET, syscall.AF_INET6}
	if h.v6 {
		families[0], families[1] = families[1], families[0]
	}
	for _, family := range families {
		found, err := diagFamily(inodes[:0], family, port, buf)
		if err != nil {
			return false
		}
		if len(found) > 0 && fdHolds(pid, h.fd, found, buf) {
			h.v6 = family == syscall.AF_INET6
			return true
		}
	}
	return false
}

// fdHolds reports whether descriptor fd of process pid is one of the sockets
// inodes.
func fdHolds(pid, fd int, inodes []uint64, buf []byte) bool {
	n, err := syscall.Readlink(procRoot+"/"+strconv.Itoa(pid)+"/fd/"+strconv.Itoa(fd), buf)
	if err != nil {
		return false
	}
	inode, ok := socketInode(buf[:n])
	return ok && slices.Contains(inodes, inode)
}

// fdRef is an open file of a process; the zero value is none.
type fdRef struct{ pid, fd int }

// treeHoldsSocket returns which open file of pid or of one of its descendants
// is one of the sockets inodes, or none. It goes breadth first, so the usual
// case, a child that listens itself, costs one directory of file descriptors.
func treeHoldsSocket(pid int, inodes []uint64, buf []byte) (fdRef, error) {
	listChildren := appendChildren
	if detectChildrenFiles(); childrenByScan.Load() {
		listChildren = (&childScan{}).appendChildren
	}

	queue := []int{pid}
	seen := map[int]bool{pid: true} // a PID reused mid-walk must not loop
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]

		fd, err := holdsSocket(p, inodes, buf)
		if err != nil {
			return fdRef{}, err
		}
		if fd >= 0 {
			return fdRef{pid: p, fd: fd}, nil
		}

		children, err := listChildren(nil, p, buf)
		if err != nil {
			return fdRef{}, err
		}
		for _, c := range children {
			if !seen[c] {
				seen[c] = true
				queue = append(queue, c)
			}
		}
	}
	return fdRef{}, nil
}

// holdsSocket returns the descriptor by which process pid has one of the
// sockets inodes open, or -1. All threads of a process normally share its
// file table, so /proc/<pid>/fd covers them. A process that is gone, or whose
// files we may not read, holds nothing as far as we can tell.
func holdsSocket(pid int, inodes []uint64, buf []byte) (int, error) {
	fdDir := procRoot + "/" + strconv.Itoa(pid) + "/fd/"
	dir, err := os.Open(fdDir)
	if err != nil {
		return -1, skipGone(err)
	}
	defer dir.Close()

	for {
		// In batches, to stop early: the listening socket is usually among
		// the first descriptors a server opens.
		names, err := dir.Readdirnames(64)
		for _, name := range names {
			n, err := syscall.Readlink(fdDir+name, buf)
			if err != nil {
				if err = skipGone(err); err != nil {
					return -1, err
				}
				continue // closed since we listed it
			}
			if inode, ok := socketInode(buf[:n]); ok && slices.Contains(inodes, inode) {
				fd, err := strconv.Atoi(name)
				if err != nil {
					return -1, fmt.Errorf("%s%s: not a descriptor number", fdDir, name)
				}
				return fd, nil
			}
		}
		if err == io.EOF {
			return -1, nil
		}
		if err != nil {
			return -1, skipGone(err)
		}
	}
}

// socketInode parses the target of a /proc/<pid>/fd link to a socket,
// "socket:[12345]".
func socketInode(target []byte) (uint64, bool) {
	const prefix, suffix = "socket:[", "]"
	if !bytes.HasPrefix(target, []byte(prefix)) || !bytes.HasSuffix(target, []byte(suffix)) {
		return 0, false
	}
	inode, err := strconv.ParseUint(string(target[len(prefix):len(target)-len(suffix)]), 10, 64)
	return inode, err == nil
}

// appendChildren appends the children of process pid to pids. The kernel lists
// children per thread (/proc/<pid>/task/<tid>/children), and a child forked by
// any thread belongs to the process, so every thread is read.
func appendChildren(pids []int, pid int, buf []byte) ([]int, error) {
	taskDir := procRoot + "/" + strconv.Itoa(pid) + "/task/"
	dir, err := os.Open(taskDir)
	if err != nil {
		return pids, skipGone(err)
	}
	tids, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return pids, skipGone(err)
	}
	for _, tid := range tids {
		pids, err = appendPIDs(pids, taskDir+tid+"/children", buf)
		if err != nil {
			if err = skipGone(err); err != nil {
				return pids, err
			}
		}
	}
	return pids, nil
}

// childrenByScan is set when the kernel has no children files (it was built
// without CONFIG_PROC_CHILDREN): the tree walk then finds children by reading
// the parent of every process instead, which costs far more but is right.
var childrenByScan atomic.Bool

// detectChildrenFiles sets childrenByScan, once, if the kernel has no
// children files.
var detectChildrenFiles = sync.OnceFunc(func() {
	if _, err := os.Stat(procRoot + "/thread-self/children"); errors.Is(err, fs.ErrNotExist) {
		childrenByScan.Store(true)
	}
})

// childScan lists children from the parent PIDs of all processes, read from
// /proc/<pid>/stat at the first call, for kernels without children files.
// One childScan serves one tree walk.
type childScan struct {
	byParent map[int][]int // nil until the scan
}

// appendChildren appends the children of process pid to pids.
func (s *childScan) appendChildren(pids []int, pid int, buf []byte) ([]int, error) {
	if s.byParent == nil {
		if err := s.scan(buf); err != nil {
			return pids, err
		}
	}
	return append(pids, s.byParent[pid]...), nil
}

// scan reads the parent of every process into s.byParent.
func (s *childScan) scan(buf []byte) error {
	dir, err := os.Open(procRoot)
	if err != nil {
		return err
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return err
	}

	s.byParent = make(map[int][]int)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue // not a process: /proc/net, /proc/self...
		}
		ppid, err := parentPID(procRoot+"/"+name+"/stat", buf)
		if err != nil {
			if err = skipGone(err); err != nil {
				return err
			}
			continue
		}
		s.byParent[ppid] = append(s.byParent[ppid], pid)
	}
	return nil
}

// parentPID reads the parent PID from the stat file of a process at path:
// "pid (comm) state ppid ...", where comm may hold spaces and parentheses.
func parentPID(path string, buf []byte) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n, err := f.Read(buf) // stat is one short line; one read returns it all
	if err != nil {
		return 0, err
	}
	stat := buf[:n]
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name", path)
	}
	_, rest := nextField(stat[i+1:]) // state
	ppid, _ := nextField(rest)
	return strconv.Atoi(string(ppid))
}

// appendPIDs appends the space-separated decimal numbers of the file at path
// to pids, reading it through buf in as many pieces as it takes.
func appendPIDs(pids []int, path string, buf []byte) ([]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return pids, err
	}
	defer f.Close()

	n, inNumber := 0, false
	for {
		k, err := f.Read(buf)
		for _, c := range buf[:k] {
			if '0' <= c && c <= '9' {
				n = n*10 + int(c-'0')
				inNumber = true
			} else if inNumber {
				pids = append(pids, n)
				n, inNumber = 0, false
			}
		}
		if err == io.EOF {
			if inNumber {
				pids = append(pids, n)
			}
			return pids, nil
		}
		if err != nil {
			return pids, err
		}
	}
}

// skipGone turns the errors of a process that exited during the walk (ENOENT,
// ESRCH) or whose details we may not read (EACCES, EPERM) into nil: such a
// process is skipped, not a failure of the check. Other errors are returned.
func skipGone(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) || errors.Is(err, fs.ErrPermission) {
		return nil
	}
	return err
}
