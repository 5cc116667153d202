package signals

import (
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// terminal remembers a terminal whose foreground Start gave to the child, so
// that it can be given back.
type terminal struct {
	fd   int
	file *os.File // Options.Stdin, kept reachable so fd stays open; nil for fd 0
	pgrp int      // svcwrap's process group, the foreground before the child
}

// ownsForeground reports whether fd is a terminal whose foreground process
// group is svcwrap's. Only then may the child take the terminal: a svcwrap
// started in the background (`svcwrap ... &`) must not steal it from the shell.
func ownsForeground(fd int) bool {
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return false
	}
	fg, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && fg == unix.Getpgrp()
}

// restore makes svcwrap's group the foreground again. Errors are dropped: the
// terminal may be gone (hung up, closed), and then there is nothing to give
// back.
func (t *terminal) restore() {
	_ = setForeground(t.fd, t.pgrp)
	runtime.KeepAlive(t.file)
}

// setForeground is tcsetpgrp with SIGTTOU blocked. Once the child's group
// owns the terminal, svcwrap is a background group, and the kernel answers a
// background tcsetpgrp with SIGTTOU, which stops the caller unless the signal
// is blocked or ignored. Blocking is per thread, so the goroutine is pinned to
// its thread for the call; ignoring would be process-wide and would undo a
// signal.Notify for SIGTTOU.
func setForeground(fd, pgrp int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var block, old unix.Sigset_t
	addSignal(&block, syscall.SIGTTOU)
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &block, &old); err != nil {
		return err
	}
	defer func() { _ = unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil) }()
	return unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, pgrp)
}

// addSignal is sigaddset; the word size of Sigset_t differs between
// architectures.
func addSignal(set *unix.Sigset_t, sig syscall.Signal) {
	bits := int(unsafe.Sizeof(set.Val[0])) * 8
	n := int(sig) - 1
	set.Val[n/bits] |= 1 << uint(n%bits)
}
