package wrapper

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The host lock makes claiming a service ID atomic among the svcwraps of one
// host: looking up who holds the ID in Consul and registering are two requests,
// and two svcwraps started together would both find it free. The lock is an
// flock on a file named after the agent and the ID, which the kernel releases
// when svcwrap dies, however it dies: no stale lock is ever left to clean up.
// Across hosts, or where no lock can be taken, the look-up in Consul is what
// remains (see syncer.claim).

// runLockDir is where the locks live when the host has made it (a packaging
// or tmpfiles.d line such as `d /run/svcwrap 1777 root root -`): /run is a
// tmpfs emptied at boot, so lock files do not pile up across boots.
const runLockDir = "/run/svcwrap"

// shmLockDir is where they live otherwise: /dev/shm is a tmpfs every Linux
// host and container has, world-writable and sticky like /tmp, and unlike
// /tmp not made private per unit by systemd's PrivateTmp.
const shmLockDir = "/dev/shm/svcwrap"

// defaultLockDir is Config.LockDir's zero value: runLockDir where it exists,
// else shmLockDir where /dev/shm is writable, else svcwrap in os.TempDir().
// svcwrap never creates runLockDir itself: if root created it on first use
// while svcwraps of other users, who cannot, had already chosen another
// directory, the two would not see each other's locks. It creates nothing
// here: the lock does, once the configuration is known to be good.
func defaultLockDir() string {
	if fi, err := os.Stat(runLockDir); err == nil && fi.IsDir() {
		return runLockDir
	}
	const wx = 0x2 | 0x1 // W_OK|X_OK of unistd.h, which syscall does not name
	if fi, err := os.Stat(shmLockDir); err == nil && fi.IsDir() {
		return shmLockDir
	}
	if syscall.Access(filepath.Dir(shmLockDir), wx) == nil {
		return shmLockDir
	}
	return filepath.Join(os.TempDir(), "svcwrap")
}

// lockAgent is the address of the first agent of reg's list, this host's
// own, which with the service ID names a lock: IDs are unique per agent, not
// per host.
func lockAgent(reg Registry) string {
	return reg.Addr(0)
}

// lockPath is the lock file of service id on agent in dir. The name is a hash,
// so that any address and ID make a short, safe file name; it gives neither
// away to another user of the host.
func lockPath(dir, agent, id string) string {
	sum := sha256.Sum256([]byte(agent + "\x00" + id))
	return filepath.Join(dir, hex.EncodeToString(sum[:8])+".lock")
}

// lockHost takes the host lock of cfg.ID on agent and returns the function
// that releases it. When another svcwrap of this host holds it, the error
// wraps ErrIDInUse. When no lock can be taken (a read-only file system, a
// directory svcwrap may not write), the service must not suffer for it: one
// notice says the claim is not atomic, and the run goes on without the lock.
// An empty agent, as from a Registry that does not say where it is, takes no
// lock: it would make every such registry on the host one agent.
func lockHost(cfg Config, agent string) (release func(), err error) {
	noLock := func() {}
	if agent == "" {
		return noLock, nil
	}
	path := lockPath(cfg.LockDir, agent, cfg.ID)
	f, err := lockFile(cfg.LockDir, path)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		by := ""
		if pid := lockHolder(f); pid > 0 {
			by = fmt.Sprintf(", pid %d", pid)
		}
		f.Close()
		return nil, fmt.Errorf("%w on this host: service %q on agent %s%s (lock %s)",
			ErrIDInUse, cfg.ID, agent, by, path)
	}
	if err != nil {
		cfg.Logger.Log(context.Background(), LevelNotice,
			"the service ID claim is not atomic on this host: no host lock",
			"service", cfg.ID, "error", err)
		return noLock, nil
	}
	// The file goes with the lock, so that the directory holds a file per
	// service ID that runs, not one per ID that ever ran. It is removed while
	// still locked: an svcwrap that opened it before and locks it after
	// finds it gone (lockFile) and takes a new one. Another user's file
	// cannot be removed from the sticky directory, and stays.
	return func() {
		_ = os.Remove(path)
		f.Close()
	}, nil
}

// lockFile opens the lock file at path and takes its flock without waiting.
// A lock refused because another process holds it is returned with the
// file, wrapping syscall.EWOULDBLOCK. A lock taken on a file that was
// removed meanwhile (its holder released it between this open and this
// flock) guards nothing: the next svcwrap creates and locks a new file at
// path. So the lock counts only if path still names the file locked;
// otherwise it is taken again on whatever path names now.
func lockFile(dir, path string) (*os.File, error) {
	for range 100 {
		f, err := openLock(dir, path)
		if err != nil {
			return nil, err
		}
		if err := flock(f); err != nil {
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return f, err
			}
			f.Close()
			return nil, fmt.Errorf("flock %s: %w", path, err)
		}
		if stillAt(f, path) {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("lock %s: removed again after every flock", path)
}

// stillAt reports whether path names the file f has open.
func stillAt(f *os.File, path string) bool {
	held, err := f.Stat()
	if err != nil {
		return false
	}
	now, err := os.Lstat(path)
	return err == nil && os.SameFile(held, now)
}

// openLock opens the lock file at path, creating it and its directory dir as
// needed. The directory is sticky and writable by all, as /tmp is, so that
// svcwraps of different users share it. The file is opened read-only, which
// flock needs no more than, so that another user's svcwrap can lock a file it
// cannot write; os.OpenFile adds O_CLOEXEC, so the child never holds it. An
// existing file is opened without O_CREAT, which fs.protected_regular refuses
// in a sticky directory for a file of another user; a symbolic link planted
// in the directory is refused.
func openLock(dir, path string) (*os.File, error) {
	if err := makeLockDir(dir); err != nil {
		return nil, err
	}
	for range 3 {
		f, err := os.OpenFile(path, lockOpenFlags, 0)
		if !errors.Is(err, fs.ErrNotExist) {
			if err != nil {
				return nil, err
			}
			if err := regularFile(f); err != nil {
				return nil, err
			}
			return f, nil
		}
		f, err = os.OpenFile(path, lockOpenFlags|os.O_CREATE|os.O_EXCL, 0o644)
		if errors.Is(err, fs.ErrExist) {
			continue // created meanwhile by another svcwrap: open that one
		}
		if err != nil {
			return nil, err
		}
		// Readable by all whatever the umask, for the svcwraps of other users.
		if err := f.Chmod(0o644); err != nil {
			f.Close()
			return nil, err
		}
		return f, nil
	}
	return nil, fmt.Errorf("open %s: created and removed again repeatedly", path)
}

// lockOpenFlags open a lock or slot file. O_NONBLOCK, because the directory
// is writable by all: a FIFO planted at a lock's path would block a
// read-only open until a writer came, and hang a heartbeat or a stop
// forever. On a regular file it changes nothing.
const lockOpenFlags = os.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// regularFile closes f and says so unless it is a regular file: a FIFO or
// device someone planted at a lock's path is no lock.
func regularFile(f *os.File) error {
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file (%s)", f.Name(), fi.Mode().Type())
	}
	if err != nil {
		f.Close()
	}
	return err
}

// makeLockDir creates dir, sticky and writable by all, unless it exists.
func makeLockDir(dir string) error {
	const mode = 0o777 | os.ModeSticky
	err := os.Mkdir(dir, mode)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// Mkdir's mode has passed through the umask.
	return os.Chmod(dir, mode)
}

// flock takes an exclusive lock on f without waiting.
func flock(f *os.File) error { return flockFile(f, syscall.LOCK_EX|syscall.LOCK_NB) }

// flockFile applies flock(2) operation how to f's descriptor.
func flockFile(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = flockFD(int(fd), how) }); err != nil {
		return err
	}
	return ferr
}

// flockFD applies flock(2) operation how to fd, again when a signal
// interrupted it.
func flockFD(fd, how int) error {
	for {
		if err := syscall.Flock(fd, how); err != syscall.EINTR {
			return err
		}
	}
}

// lockHolder is the PID of the process holding the flock on f's file, read
// from /proc/locks, or 0 if it cannot tell. It is read only when the lock is
// refused, to say who holds it.
func lockHolder(f *os.File) int {
	fi, err := f.Stat()
	if err != nil {
		return 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return 0
	}
	defer locks.Close()
	return flockHolder(bufio.NewScanner(locks), st.Dev, st.Ino)
}

// flockHolder finds in the lines of /proc/locks the PID holding an flock on
// the file (dev, ino), such as "3: FLOCK  ADVISORY  WRITE 4242 00:1a:1234 0 EOF".
// The kernel writes the device as major:minor in hex, the inode in decimal.
func flockHolder(sc *bufio.Scanner, dev, ino uint64) int {
	major := (dev>>8)&0xfff | (dev>>32)&^0xfff
	minor := dev&0xff | (dev>>12)&^0xff
	file := fmt.Sprintf("%02x:%02x:%d", major, minor, ino)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		// A waiter's line has "->" after the number; a holder's does not.
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != file {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil {
			return pid
		}
	}
	return 0
}
