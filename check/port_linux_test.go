//go:build linux

package check_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/check"
)

// listen listens on address in the test process itself, as an unrelated
// process would, until the end of the test.
func listen(tb testing.TB, network, address string) int {
	tb.Helper()
	ln, err := net.Listen(network, address)
	require.NoError(tb, err)
	tb.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// freePort returns a port that nothing listened on a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// requireIPv6Loopback fails (rather than skips) when ::1 is unusable: IPv6
// listeners are part of the contract, and a machine without ::1 would silently
// leave the tcp6 table untested.
func requireIPv6Loopback(tb testing.TB) {
	tb.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	require.NoError(tb, err, "IPv6 loopback ::1 is not available on this machine; the IPv6 cases need it")
	ln.Close()
}

// socketStates returns the TCP states (hex, as the kernel prints them) of the
// sockets on local port in pid's network namespace, to check a test's setup.
func socketStates(tb testing.TB, pid, port int) []string {
	tb.Helper()
	var states []string
	hexPort := fmt.Sprintf(":%04X", port)
	for _, table := range []string{"tcp", "tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		require.NoError(tb, err)
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 3 && strings.HasSuffix(fields[1], hexPort) {
				states = append(states, fields[3])
			}
		}
	}
	return states
}

// useVariant makes Listening work in one of its ways until the end of the
// test: reading socket tables with "sock_diag" or from "proc", or with
// sock_diag but finding children without the kernel's children files
// ("children-scan").
func useVariant(t *testing.T, variant string) {
	t.Helper()
	switch variant {
	case "proc":
		check.UseProcTables(t)
	case "children-scan":
		check.UseChildrenScan(t)
	case "sock_diag":
		_, err := check.Listening(os.Getpid(), freePort(t))
		require.NoError(t, err)
		if check.DiagDisabled() {
			t.Skip("sock_diag netlink does not work here; Listening reads /proc instead, which the proc variant covers")
		}
	default:
		t.Fatalf("unknown variant %q", variant)
	}
}

func TestListening(t *testing.T) {
	requireIPv6Loopback(t)
	for _, variant := range []string{"sock_diag", "proc", "children-scan"} {
		t.Run(variant, func(t *testing.T) {
			useVariant(t, variant)
			testListening(t)
		})
	}
}

// testListening is TestListening for one variant of Listening.
func testListening(t *testing.T) {
	t.Run("child listens", func(t *testing.T) {
		for _, tc := range []struct{ network, address string }{
			{"tcp4", "127.0.0.1:0"},
			{"tcp4", "0.0.0.0:0"},
			{"tcp6", "[::1]:0"},
			{"tcp6", "[::]:0"},
			{"tcp", "[::]:0"}, // dual stack: one socket, in the tcp6 table only
		} {
			t.Run(tc.network+" "+tc.address, func(t *testing.T) {
				c := startChild(t, "listen", tc.network, tc.address)
				port := c.ready()

				ok, err := check.Listening(c.pid(), port)
				require.NoError(t, err)
				assert.True(t, ok)
			})
		}
	})

	t.Run("child does not listen", func(t *testing.T) {
		c := startChild(t, "idle")
		c.ready()

		ok, err := check.Listening(c.pid(), freePort(t))
		require.NoError(t, err)
		assert.False(t, ok)
	})

	t.Run("child listens on another port", func(t *testing.T) {
		c := startChild(t, "listen", "tcp4", "127.0.0.1:0")
		port := c.ready()
		other := listen(t, "tcp4", "127.0.0.1:0")
		require.NotEqual(t, port, other)

		ok, err := check.Listening(c.pid(), other)
		require.NoError(t, err)
		assert.False(t, ok)
	})

	t.Run("unrelated process listens on the port", func(t *testing.T) {
		// The test process listens on the port, v4 and v6; the child, in
		// the same network namespace, does not.
		port := listen(t, "tcp4", "127.0.0.1:0")
		listen(t, "tcp6", "[::1]:"+strconv.Itoa(port))
		c := startChild(t, "idle")
		c.ready()

		ok, err := check.Listening(c.pid(), port)
		require.NoError(t, err)
		assert.False(t, ok)

		// And the test process itself does count.
		ok, err = check.Listening(os.Getpid(), port)
		require.NoError(t, err)
		assert.True(t, ok)
	})

	t.Run("grandchild listens", func(t *testing.T) {
		c := startChild(t, "spawn", "listen", "tcp4", "127.0.0.1:0")
		var grandchild int
		_, err := fmt.Sscanf(c.readLine(), "spawned %d", &grandchild)
		require.NoError(t, err)
		port := c.ready()

		ok, err := check.Listening(c.pid(), port)
		require.NoError(t, err)
		assert.True(t, ok)

		// The helper forked from a thread other than its main one, so this
		// case also proves that all threads' children lists are read.
		mainChildren, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.pid(), c.pid()))
		require.NoError(t, err)
		assert.NotContains(t, strings.Fields(string(mainChildren)), strconv.Itoa(grandchild),
			"the grandchild should have been forked by another thread")
	})

	t.Run("grandchild does not listen, unrelated process does", func(t *testing.T) {
		port := listen(t, "tcp4", "127.0.0.1:0")
		c := startChild(t, "spawn", "idle")
		c.readLine() // spawned
		c.ready()

		ok, err := check.Listening(c.pid(), port)
		require.NoError(t, err)
		assert.False(t, ok)
	})

	t.Run("child exited and was reaped", func(t *testing.T) {
		c := startChild(t, "listen", "tcp4", "127.0.0.1:0")
		port := c.ready()
		c.exit()
		c.wait()

		ok, err := check.Listening(c.pid(), port)
		require.ErrorIs(t, err, os.ErrNotExist)
		assert.False(t, ok)
	})

	t.Run("child exited, not yet reaped", func(t *testing.T) {
		// A zombie has closed all its files: it listens on nothing, and
		// the kernel no longer shows it a network namespace.
		c := startUnreapedChild(t, "listen", "tcp4", "127.0.0.1:0")
		port := c.ready()
		c.exit()
		eventually(t, func() bool { return processState(t, c.pid()) == "Z" }, "child becomes a zombie")

		ok, err := check.Listening(c.pid(), port)
		require.ErrorIs(t, err, os.ErrNotExist)
		assert.False(t, ok)
	})

	t.Run("child holds an accepted connection on the port, no listener", func(t *testing.T) {
		c := startChild(t, "listen", "tcp4", "127.0.0.1:0")
		port := c.ready()
		conn, err := net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(port))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		eventually(t, func() bool { return c.request("count") == "accepts 1" }, "child accepts the connection")
		require.Equal(t, "closed", c.request("close"))
		// Others' TIME_WAIT sockets may share the port; what matters is an
		// ESTABLISHED socket on it and no listener.
		states := socketStates(t, c.pid(), port)
		require.Contains(t, states, "01", "the accepted connection, ESTABLISHED")
		require.NotContains(t, states, "0A", "no listener")

		ok, err := check.Listening(c.pid(), port)
		require.NoError(t, err)
		assert.False(t, ok)
	})

	t.Run("child connected to the port", func(t *testing.T) {
		port := listen(t, "tcp4", "127.0.0.1:0")
		c := startChild(t, "dial", "127.0.0.1:"+strconv.Itoa(port))
		c.ready()

		ok, err := check.Listening(c.pid(), port)
		require.NoError(t, err)
		assert.False(t, ok)
	})

	t.Run("never connects", func(t *testing.T) {
		c := startChild(t, "listen", "tcp", "[::]:0")
		port := c.ready()

		for range 500 {
			ok, err := check.Listening(c.pid(), port)
			require.NoError(t, err)
			require.True(t, ok)
		}
		assert.Equal(t, "accepts 0", c.request("count"))

		// The counter does count: one real connection shows up.
		conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		require.NoError(t, err)
		defer conn.Close()
		eventually(t, func() bool { return c.request("count") == "accepts 1" }, "child counts a real connection")
	})

	t.Run("invalid arguments", func(t *testing.T) {
		for _, tc := range []struct{ pid, port int }{
			{0, 80}, {-1, 80}, {os.Getpid(), 0}, {os.Getpid(), -1}, {os.Getpid(), 65536},
		} {
			ok, err := check.Listening(tc.pid, tc.port)
			assert.ErrorIs(t, err, os.ErrInvalid, "pid %d, port %d", tc.pid, tc.port)
			assert.False(t, ok)
		}
	})
}

func TestListening_otherNetworkNamespace(t *testing.T) {
	// A child in its own network namespace: its sockets are not in ours, so
	// only /proc/<pid>/net can show them.
	probe := helperCmd("idle")
	probe.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	if err := probe.Run(); err != nil {
		t.Skipf("cannot start a child in a new network namespace here (needs CAP_SYS_ADMIN): %v", err)
	}

	// Ours has a listener on a port that the child's namespace lacks.
	ours := listen(t, "tcp4", "127.0.0.1:0")
	cmd := helperCmd("listen", "tcp4", "0.0.0.0:0") // its loopback is down
	cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	c := startChildCmd(t, cmd)
	c.letReap()
	port := c.ready()

	ok, err := check.Listening(c.pid(), port)
	require.NoError(t, err)
	assert.True(t, ok, "listening in its own namespace")

	ok, err = check.Listening(c.pid(), ours)
	require.NoError(t, err)
	assert.False(t, ok, "port of our namespace")
}

// processState returns the state letter of /proc/<pid>/stat ("R", "S", "Z"...).
func processState(tb testing.TB, pid int) string {
	tb.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(tb, err)
	// The command name is in parentheses and may hold spaces.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	require.NotEmpty(tb, fields)
	return fields[0]
}

func TestPort_Check(t *testing.T) {
	ctx := context.Background()

	t.Run("listening", func(t *testing.T) {
		c := startChild(t, "listen", "tcp4", "0.0.0.0:0")
		port := c.ready()
		p := check.Port{PID: c.pid(), Port: port}

		want := check.Result{Status: check.Passing, Output: "listening on port " + strconv.Itoa(port)}
		assert.Equal(t, want, p.Check(ctx))
		assert.Equal(t, want, p.Check(ctx))
	})

	t.Run("not listening", func(t *testing.T) {
		port := listen(t, "tcp4", "127.0.0.1:0") // unrelated
		c := startChild(t, "idle")
		c.ready()
		p := check.Port{PID: c.pid(), Port: port}

		want := check.Result{Status: check.Critical, Output: "not listening on port " + strconv.Itoa(port)}
		assert.Equal(t, want, p.Check(ctx))
		assert.Equal(t, want, p.Check(ctx))
	})

	t.Run("process gone", func(t *testing.T) {
		// Two different dead processes, same configuration: same output,
		// and no PID in it.
		port := freePort(t)
		var outputs []string
		for range 2 {
			c := startChild(t, "idle")
			c.ready()
			c.exit()
			c.wait()

			r := check.Port{PID: c.pid(), Port: port}.Check(ctx)
			assert.Equal(t, check.Critical, r.Status)
			assert.NotContains(t, r.Output, strconv.Itoa(c.pid()))
			outputs = append(outputs, r.Output)
		}
		assert.Equal(t, "process not running, not listening on port "+strconv.Itoa(port), outputs[0])
		assert.Equal(t, outputs[0], outputs[1])
	})

	t.Run("remembered socket", func(t *testing.T) {
		// NewPort looks first where it found the socket last time; that
		// memory never vouches for a socket that is gone, even when an
		// unrelated process listens on the same port afterwards.
		c := startChild(t, "listen", "tcp4", "127.0.0.1:0")
		port := c.ready()
		p := check.NewPort(c.pid(), port)
		passing := check.Result{Status: check.Passing, Output: "listening on port " + strconv.Itoa(port)}
		critical := check.Result{Status: check.Critical, Output: "not listening on port " + strconv.Itoa(port)}
		assert.Equal(t, passing, p.Check(ctx))
		assert.Equal(t, passing, p.Check(ctx), "from memory")

		require.Equal(t, "closed", c.request("close"))
		assert.Equal(t, critical, p.Check(ctx))
		listen(t, "tcp4", "127.0.0.1:"+strconv.Itoa(port)) // unrelated
		assert.Equal(t, critical, p.Check(ctx), "another process's socket on the port")
	})

	t.Run("remembered socket in the IPv6 table", func(t *testing.T) {
		// A dual-stack listener (Go's ":0") is in the IPv6 dump only, which
		// the memory then asks first; closed, it is critical at once.
		c := startChild(t, "listen", "tcp", ":0")
		port := c.ready()
		p := check.NewPort(c.pid(), port)
		passing := check.Result{Status: check.Passing, Output: "listening on port " + strconv.Itoa(port)}
		for i := range 3 {
			assert.Equal(t, passing, p.Check(ctx), "check %d", i)
		}
		assert.True(t, check.RememberedInIPv6(p), "found by the remembered look in the IPv6 dump (does this host have IPv6 on loopback?)")
		require.Equal(t, "closed", c.request("close"))
		assert.Equal(t, check.Critical, p.Check(ctx).Status)
	})

	t.Run("invalid configuration", func(t *testing.T) {
		for _, p := range []check.Port{{}, {PID: os.Getpid()}, {PID: os.Getpid(), Port: 70000}, {Port: 80}} {
			r := p.Check(ctx)
			assert.Equal(t, check.Critical, r.Status, "%+v", p)
			assert.Contains(t, r.Output, "invalid port check", "%+v", p)
			assert.Equal(t, r, p.Check(ctx), "%+v", p)
		}
	})

	t.Run("cancelled context", func(t *testing.T) {
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		r := check.Port{PID: os.Getpid(), Port: 9999}.Check(cancelled)
		assert.Equal(t, check.Result{Status: check.Critical, Output: "port 9999 check cancelled"}, r)
	})
}

// BenchmarkListening measures one Listening call in the two cases that matter
// for a machine running many wrappers: "listening" (a ready child, checked
// about once a second) and "not-listening" (a child not yet ready, checked
// every ~20 ms, which never walks the process tree), with each source of
// socket tables: "sock_diag" (used when the child shares svcwrap's network
// namespace) and "proc" (/proc/<pid>/net/tcp and tcp6, used otherwise). The
// "crowded" variants add 1,000 unrelated listening sockets to the namespace,
// as on a machine with 1,000 wrapped services. The child is a real helper
// process, so the figures include the real kernel work, which for "proc"
// grows with the size of the kernel's connection hash table (thus with the
// machine's memory) rather than with the number of sockets. Run it with
//
//	go test -run '^$' -bench BenchmarkListening -benchmem -count 5 ./check/
//
// and compare runs with benchstat.
func BenchmarkListening(b *testing.B) {
	c := startChild(b, "listen", "tcp4", "127.0.0.1:0")
	listening := c.ready()
	notListening := freePort(b)

	run := func(b *testing.B, source string, port int, want bool) {
		if source == "proc" {
			check.UseProcTables(b)
		}
		_, err := check.Listening(c.pid(), port)
		require.NoError(b, err)
		if source == "sock_diag" && check.DiagDisabled() {
			b.Skip("sock_diag does not work here; Listening reads /proc, see the proc case")
		}
		b.ReportAllocs()
		for b.Loop() {
			ok, err := check.Listening(c.pid(), port)
			if err != nil || ok != want {
				b.Fatalf("Listening(%d, %d) = %v, %v; want %v", c.pid(), port, ok, err, want)
			}
		}
	}
	cases := func(suffix string) {
		for _, source := range []string{"sock_diag", "proc"} {
			b.Run(source+"/listening"+suffix, func(b *testing.B) { run(b, source, listening, true) })
			b.Run(source+"/not-listening"+suffix, func(b *testing.B) { run(b, source, notListening, false) })
		}
	}

	cases("")
	for range 1000 {
		listen(b, "tcp4", "127.0.0.1:0")
	}
	cases("-crowded")
}

// BenchmarkPortCheck measures the check of a ready child, as svcwrap runs it
// every check interval: "fresh" is a Port literal, which walks the child's
// open files each time; "remembered" is NewPort, which looks first at the
// descriptor that held the socket last time.
func BenchmarkPortCheck(b *testing.B) {
	c := startChild(b, "listen", "tcp4", "127.0.0.1:0")
	port := c.ready()
	ctx := context.Background()
	for name, p := range map[string]check.Port{
		"fresh":      {PID: c.pid(), Port: port},
		"remembered": check.NewPort(c.pid(), port),
	} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if r := p.Check(ctx); r.Status != check.Passing {
					b.Fatalf("%+v", r)
				}
			}
		})
	}
}
