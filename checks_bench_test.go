package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// BenchmarkHTTPCheck_HealthyToPassing measures "becomes healthy → passing"
// for an http check: the child's /health turns from 503 to 200 (the moment
// the file it reads is written), and the benchmark polls the agent's own view
// of the check every millisecond until it reads passing. Between runs it
// turns 503 again and waits, untimed, for critical. Default --check-interval
// (1s): the check is critical, so svcwrap runs it at its fast pace. The
// figure includes up to one poll period and one agent round trip. Run it
// with
//
//	go test -run '^$' -bench BenchmarkHTTPCheck_HealthyToPassing -benchtime 50x .
func BenchmarkHTTPCheck_HealthyToPassing(b *testing.B) {
	agent := consultest.StartAgent(b)
	l, err := freeLoopbackPort()
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(b.TempDir(), "code")
	set := func(code string) {
		if err := os.WriteFile(file, []byte(code), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/health", l)
	// start runs a svcwrap whose child answers 503 and waits until Consul
	// has it critical: the service is starting, before its first pass.
	start := func() *exec.Cmd {
		set("503")
		cmd := exec.Command(svcwrapBin, append([]string{"--consul", agent.HTTPAddr, "--check", url, "bench", "--"},
			helperArgv("health", strconv.Itoa(l), file)...)...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		return cmd
	}
	stop := func(cmd *exec.Cmd) {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	await := func(status string) {
		deadline := time.Now().Add(wait)
		for {
			if got, _ := checkStatusB(agent.Client, "bench"); got == status {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("not %s after %s", status, wait)
			}
			time.Sleep(time.Millisecond)
		}
	}
	var samples []time.Duration
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		cmd := start()
		await(api.HealthCritical)
		b.StartTimer()
		t0 := time.Now()
		set("200")
		await(api.HealthPassing)
		samples = append(samples, time.Since(t0))
		b.StopTimer()
		stop(cmd)
		consultestGone(b, agent, "bench")
		b.StartTimer()
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	n := len(samples)
	b.ReportMetric(float64(samples[n/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(samples[(n*9+9)/10-1].Microseconds())/1000, "p90-ms")
	b.ReportMetric(float64(samples[n-1].Microseconds())/1000, "max-ms")
}

// freeLoopbackPort is freePort for a benchmark.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// consultestGone waits until the agent no longer has service id.
func consultestGone(b *testing.B, agent *consultest.Agent, id string) {
	deadline := time.Now().Add(wait)
	for {
		svcs, err := agent.Client.Agent().Services()
		if _, ok := svcs[id]; err == nil && !ok {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s still registered after %s", id, wait)
		}
		time.Sleep(time.Millisecond)
	}
}

func checkStatusB(c *api.Client, id string) (string, string) {
	checks, err := c.Agent().Checks()
	if err != nil {
		return "", err.Error()
	}
	chk, ok := checks["service:"+id]
	if !ok {
		return "", "absent"
	}
	return chk.Status, chk.Output
}
