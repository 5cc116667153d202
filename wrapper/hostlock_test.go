package wrapper

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logBuffer is a Logger that keeps every record, at every level.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.buf.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func lockConfig(t *testing.T, dir, id string) (Config, *logBuffer) {
	t.Helper()
	var logs logBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return Config{ID: id, LockDir: dir, Logger: logger}, &logs
}

const testAgent = "127.0.0.1:8500"

func TestHostLock(t *testing.T) {
	t.Run("second-refused-until-released", func(t *testing.T) {
		// flock belongs to the open file description: two opens in one
		// process conflict as two svcwraps do.
		cfg, logs := lockConfig(t, t.TempDir(), "web")
		release, err := lockHost(cfg, testAgent)
		require.NoError(t, err)

		_, err = lockHost(cfg, testAgent)
		require.ErrorIs(t, err, ErrIDInUse)
		msg := err.Error()
		assert.Contains(t, msg, `service "web" on agent `+testAgent)
		assert.Contains(t, msg, "on this host")
		assert.Contains(t, msg, "pid "+strconv.Itoa(os.Getpid()), "the holder is this process")
		assert.Contains(t, msg, lockPath(cfg.LockDir, testAgent, "web"))
		assert.NotContains(t, msg, "\n")

		release()
		again, err := lockHost(cfg, testAgent)
		require.NoError(t, err, "free once released")
		again()
		assert.Empty(t, logs.lines(), "a lock taken or refused logs nothing")
	})

	t.Run("released-lock-removes-its-file", func(t *testing.T) {
		// A file per ID that ever ran would pile up in the directory:
		// tests and benchmarks left 112,000 in this machine's /run/svcwrap.
		cfg, _ := lockConfig(t, t.TempDir(), "web")
		release, err := lockHost(cfg, testAgent)
		require.NoError(t, err)
		path := lockPath(cfg.LockDir, testAgent, "web")
		require.FileExists(t, path)
		release()
		assert.NoFileExists(t, path)
	})

	t.Run("lock-on-a-removed-file-does-not-count", func(t *testing.T) {
		// The race the removal opens: B opens the file, A releases it
		// (removes and unlocks), B's flock then succeeds on a file no
		// longer at the path, where C creates and locks a new one.
		cfg, _ := lockConfig(t, t.TempDir(), "web")
		path := lockPath(cfg.LockDir, testAgent, "web")
		a, err := lockHost(cfg, testAgent)
		require.NoError(t, err)
		b, err := openLock(cfg.LockDir, path)
		require.NoError(t, err)
		defer b.Close()
		a()
		require.NoError(t, flock(b), "the removed file's flock is free")
		assert.False(t, stillAt(b, path), "a lock on a removed file must not count")

		c, err := lockHost(cfg, testAgent)
		require.NoError(t, err, "B's lock on the removed file keeps nobody out")
		f, err := os.Open(path)
		require.NoError(t, err)
		defer f.Close()
		assert.True(t, stillAt(f, path))
		assert.False(t, stillAt(b, path))
		c()
	})

	t.Run("never-two-holders-while-locks-come-and-go", func(t *testing.T) {
		// Four would-be holders take and release the lock of one ID as
		// fast as they can: with the file removed at each release, a lock
		// taken on a removed file would let two hold at once.
		cfg, _ := lockConfig(t, t.TempDir(), "web")
		var holders, most atomic.Int32
		var taken atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 300 {
					release, err := lockHost(cfg, testAgent)
					if errors.Is(err, ErrIDInUse) {
						continue
					}
					if !assert.NoError(t, err) {
						return
					}
					n := holders.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					taken.Add(1)
					runtime.Gosched()
					holders.Add(-1)
					release()
				}
			}()
		}
		wg.Wait()
		assert.EqualValues(t, 1, most.Load(), "holders at once, at most")
		assert.Positive(t, taken.Load())
		assert.NoFileExists(t, lockPath(cfg.LockDir, testAgent, "web"), "the last release removed it")
	})

	t.Run("different-keys-do-not-conflict", func(t *testing.T) {
		dir := t.TempDir()
		web, _ := lockConfig(t, dir, "web")
		api, _ := lockConfig(t, dir, "api")
		for _, k := range []struct {
			cfg   Config
			agent string
		}{
			{web, testAgent},
			{api, testAgent},         // another ID, same agent
			{web, "127.0.0.2:8500"},  // the same ID, another agent
			{web, "127.0.0.1:18500"}, // another agent on this address
		} {
			release, err := lockHost(k.cfg, k.agent)
			require.NoError(t, err, "%s on %s", k.cfg.ID, k.agent)
			defer release()
		}
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		assert.Len(t, entries, 4, "one file per key")
	})

	t.Run("directory-and-file-modes", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "svcwrap")
		cfg, _ := lockConfig(t, dir, "web")
		old := syscall.Umask(0o077) // the tightest umask a service runs under
		release, err := lockHost(cfg, testAgent)
		syscall.Umask(old)
		require.NoError(t, err)
		defer release()

		fi, err := os.Stat(dir)
		require.NoError(t, err)
		assert.Equal(t, os.ModeDir|os.ModeSticky|0o777, fi.Mode(), "sticky and writable by all, as /tmp")
		fi, err = os.Stat(lockPath(dir, testAgent, "web"))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o644), fi.Mode(), "readable by the svcwraps of other users")
		assert.Zero(t, fi.Size(), "nothing is written into the lock file")
	})

	t.Run("unusable-directory-runs-without-lock", func(t *testing.T) {
		// A directory beneath a regular file cannot be made, by root either.
		file := filepath.Join(t.TempDir(), "file")
		require.NoError(t, os.WriteFile(file, nil, 0o644))
		cfg, logs := lockConfig(t, filepath.Join(file, "svcwrap"), "web")

		first, err := lockHost(cfg, testAgent)
		require.NoError(t, err, "the service must not suffer for a missing lock")
		defer first()
		lines := logs.lines()
		require.Len(t, lines, 1, "one line: %q", lines)
		assert.Contains(t, lines[0], "level=ERROR+2", "at LevelNotice")
		assert.Contains(t, lines[0], "not atomic")
		assert.Contains(t, lines[0], "service=web")
		assert.Contains(t, lines[0], "not a directory", "says why")

		second, err := lockHost(cfg, testAgent)
		require.NoError(t, err, "without a lock, nothing is refused here")
		second()
	})

	t.Run("symlink-refused-without-lock", func(t *testing.T) {
		dir := t.TempDir()
		cfg, logs := lockConfig(t, dir, "web")
		target := filepath.Join(t.TempDir(), "target")
		require.NoError(t, os.Symlink(target, lockPath(dir, testAgent, "web")))

		release, err := lockHost(cfg, testAgent)
		require.NoError(t, err)
		release()
		assert.NoFileExists(t, target, "a planted link is not followed")
		require.Len(t, logs.lines(), 1)
		assert.Contains(t, logs.lines()[0], "not atomic")
	})

	t.Run("empty-agent-takes-no-lock", func(t *testing.T) {
		dir := t.TempDir()
		cfg, logs := lockConfig(t, dir, "web")
		first, err := lockHost(cfg, "")
		require.NoError(t, err)
		defer first()
		second, err := lockHost(cfg, "")
		require.NoError(t, err)
		second()
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		assert.Empty(t, entries)
		assert.Empty(t, logs.lines())
	})

	t.Run("not-inherited-by-children", func(t *testing.T) {
		dir := t.TempDir()
		cfg, _ := lockConfig(t, dir, "web")
		release, err := lockHost(cfg, testAgent)
		require.NoError(t, err)
		defer release()

		path := lockPath(dir, testAgent, "web")
		self, err := exec.Command("ls", "-l", "/proc/self/fd").Output()
		require.NoError(t, err)
		assert.NotContains(t, string(self), path, "the lock's descriptor must not reach a child")

		// The test would prove nothing if the descriptor were not open here.
		fds, err := os.ReadDir("/proc/self/fd")
		require.NoError(t, err)
		found := false
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && l == path {
				found = true
			}
		}
		assert.True(t, found, "the lock is held through an open descriptor")
	})
}

func TestLockPath(t *testing.T) {
	p := lockPath("/run/svcwrap", testAgent, "web")
	name := filepath.Base(p)
	assert.Equal(t, "/run/svcwrap", filepath.Dir(p))
	assert.Regexp(t, `^[0-9a-f]{16}\.lock$`, name)
	assert.NotContains(t, name, "web")
	// The separator keeps ("a", "bc") and ("ab", "c") apart.
	assert.NotEqual(t, lockPath("/d", "a", "bc"), lockPath("/d", "ab", "c"))
}

// The format of /proc/locks, pinned: the kernel's lock_get_status().
func TestFlockHolder(t *testing.T) {
	const locks = `1: POSIX  ADVISORY  WRITE 100 fd:01:4242 0 EOF
2: FLOCK  ADVISORY  WRITE 200 fd:01:4243 0 EOF
3: FLOCK  ADVISORY  WRITE 4242 103:02:4242 0 EOF
3: -> FLOCK  ADVISORY  WRITE 4343 103:02:4242 0 EOF
4: OFDLCK ADVISORY  READ  -1 00:1a:9 0 EOF
`
	dev := func(major, minor uint64) uint64 {
		return (major&0xfff)<<8 | (major&^0xfff)<<32 | minor&0xff | (minor&^0xff)<<12
	}
	holder := func(d, ino uint64) int {
		return flockHolder(bufio.NewScanner(strings.NewReader(locks)), d, ino)
	}
	assert.Equal(t, 4242, holder(dev(0x103, 2), 4242), "the holder, not the waiter")
	assert.Equal(t, 200, holder(dev(0xfd, 1), 4243))
	assert.Zero(t, holder(dev(0xfd, 1), 4242), "a POSIX lock is not an flock")
	assert.Zero(t, holder(dev(0xfd, 1), 1), "no such file")
}

// A FIFO planted at the lock's path (the directory is writable by all)
// must not hang svcwrap's start: it is no lock, and svcwrap says so and
// runs without one.
func TestHostLock_PlantedFIFO(t *testing.T) {
	cfg, logs := lockConfig(t, t.TempDir(), "web")
	require.NoError(t, syscall.Mkfifo(lockPath(cfg.LockDir, testAgent, "web"), 0o666))
	err := returnsWithin(t, "a FIFO at the lock's path hung lockHost", func() error {
		release, err := lockHost(cfg, testAgent)
		if err == nil {
			release()
		}
		return err
	})
	require.NoError(t, err)
	require.Len(t, logs.lines(), 1)
	assert.Contains(t, logs.lines()[0], "not atomic")
	assert.Contains(t, logs.lines()[0], "not a regular file")
}
