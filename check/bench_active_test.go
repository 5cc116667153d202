//go:build linux

package check_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	psnet "github.com/shirou/gopsutil/v3/net"
	"github.com/shirou/gopsutil/v3/process"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/check"
)

// BenchmarkActiveChecks measures one run of each kind of check as svcwrap
// makes it, against a real server on loopback in another process (the test
// binary as a helper child): "http" a GET to a Go HTTP server answering
// 200, "tcp" a connect, "script" `/bin/sh -c 'exit 0'`, and "listen" the
// listen check of --port for comparison. Every run is a new connection or
// process, as svcwrap's are. Run it with
//
//	go test -run '^$' -bench BenchmarkActiveChecks -benchmem ./check/
func BenchmarkActiveChecks(b *testing.B) {
	srv := startChild(b, "http", "127.0.0.1:0")
	port := srv.ready()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		c    interface {
			Check(context.Context) check.Result
		}
	}{
		{"http", check.NewHTTP("http://"+addr+"/health", check.HTTPOptions{Timeout: 5 * time.Second})},
		{"tcp", check.TCP{Addr: addr, Timeout: 5 * time.Second}},
		{"script", check.Script{Command: "exit 0", Timeout: 5 * time.Second}},
		{"listen", check.NewPort(srv.pid(), port)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			self, kids := cpuTime(syscall.RUSAGE_SELF), cpuTime(syscall.RUSAGE_CHILDREN)
			for b.Loop() {
				if r := c.c.Check(ctx); r.Status != check.Passing {
					b.Fatalf("%+v", r)
				}
			}
			// CPU of svcwrap's side (this process, every thread) and of the
			// scripts it waited for; the server's side is not counted.
			b.ReportMetric(float64((cpuTime(syscall.RUSAGE_SELF)-self).Microseconds())/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64((cpuTime(syscall.RUSAGE_CHILDREN)-kids).Microseconds())/float64(b.N), "script-cpu-µs/op")
		})
	}
}

// BenchmarkProcessFacts compares what gopsutil offers for the facts the
// listen check reads by hand with the hand-written code, on a child that
// listens: "children" lists a process's children (gopsutil runs
// `pgrep -P`; svcwrap reads /proc/PID/task/TID/children), "sockets" finds
// the listening sockets of the process (gopsutil's ConnectionsPid reads
// /proc/PID/net/tcp{,6} and every descriptor; svcwrap asks sock_diag for
// the port, then one descriptor), and "cmdline" is what Describe reads at
// each status change (the same file either way: Describe reads it by hand
// to keep gopsutil's package inits out of svcwrap's start, check/process.go).
func BenchmarkProcessFacts(b *testing.B) {
	c := startChild(b, "listen", "tcp4", "127.0.0.1:0")
	port := c.ready()
	ctx := context.Background()
	self, err := process.NewProcess(int32(os.Getpid()))
	require.NoError(b, err)
	b.Run("children/gopsutil", func(b *testing.B) {
		for b.Loop() {
			if kids, err := self.ChildrenWithContext(ctx); err != nil || len(kids) == 0 {
				b.Fatal(kids, err)
			}
		}
	})
	b.Run("children/proc", func(b *testing.B) {
		for b.Loop() {
			if kids, err := check.Children(os.Getpid()); err != nil || len(kids) == 0 {
				b.Fatal(kids, err)
			}
		}
	})
	b.Run("sockets/gopsutil", func(b *testing.B) {
		for b.Loop() {
			conns, err := psnet.ConnectionsPidWithContext(ctx, "tcp", int32(c.pid()))
			require.NoError(b, err)
			found := false
			for _, cs := range conns {
				found = found || (cs.Status == "LISTEN" && int(cs.Laddr.Port) == port)
			}
			if !found {
				b.Fatal("not found")
			}
		}
	})
	b.Run("sockets/svcwrap", func(b *testing.B) {
		p := check.NewPort(c.pid(), port)
		for b.Loop() {
			if r := p.Check(ctx); r.Status != check.Passing {
				b.Fatal(r)
			}
		}
	})
	b.Run("cmdline/gopsutil", func(b *testing.B) {
		p := &process.Process{Pid: int32(c.pid())}
		for b.Loop() {
			if _, err := p.CmdlineSliceWithContext(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cmdline/svcwrap", func(b *testing.B) {
		for b.Loop() {
			_ = check.Describe(c.pid())
		}
	})
}

// helperHTTP serves 200 on every path at address, prints "ready PORT", and
// exits when stdin closes.
func helperHTTP(address string) error {
	l, err := net.Listen("tcp", address)
	if err != nil {
		return err
	}
	defer l.Close()
	go func() { _ = http.Serve(l, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }()
	fmt.Printf("ready %d\n", l.Addr().(*net.TCPAddr).Port)
	return serveCommands(nil)
}

// cpuTime is the user and system CPU time of who (RUSAGE_SELF or
// RUSAGE_CHILDREN).
func cpuTime(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
