package main

// End-to-end tests of svcwrap against agents in trouble: hung (SIGSTOP), gone,
// refusing with ACLs, speaking TLS with a CA svcwrap does not trust, and
// rejecting a registration. Real agents throughout; a proxy that turns one
// answer into a 400 stands in for the one fault a real agent will not produce
// on demand.

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// stopSlack is what a loaded two-core machine running -race binaries may add
// to a stop's bound: exec, signal delivery, reaping. It stays below what
// today's double deregistration costs (a whole --consul-timeout).
const stopSlack = time.Second

// pause hangs the agent (SIGSTOP) and waits until every thread of it has
// stopped: the signal is delivered asynchronously.
func pause(t *testing.T, a *consultest.Agent) {
	t.Helper()
	a.Pause(t) // returns once every thread of the agent is stopped
}

// A. A stop is bounded in every agent state: SIGTERM → exit within
// --consul-timeout + --drain + --kill-timeout, the Consul part of the stop
// sharing one --consul-timeout (never two deregistrations in series). A hung
// agent may take the deregistration when it comes back, so svcwrap goes on
// trying while the child stops, up to that bound, even when the child is
// quicker; an agent that is gone is not waited for.
func TestFaultStop_BoundedWhateverTheAgentState(t *testing.T) {
	states := []struct {
		name  string
		fault func(t *testing.T, a *consultest.Agent)
	}{
		{"hung", pause},
		{"gone", func(t *testing.T, a *consultest.Agent) { a.Stop(t) }},
	}
	children := []struct {
		name  string
		args  []string // svcwrap's flags
		argv  []string
		code  int
		bound time.Duration // --consul-timeout (+ --kill-timeout when the child ignores SIGTERM)
	}{
		{"child-ignores-sigterm", []string{"--consul-timeout", "2s", "--kill-timeout", "1s"}, helperArgv("ignore-term"), 128 + 9, 3 * time.Second},
		{"child-exits-on-sigterm", []string{"--consul-timeout", "2s", "--kill-timeout", "1s"}, helperArgv("signals"), 0, 3 * time.Second},
	}
	for _, st := range states {
		for _, ch := range children {
			t.Run(st.name+"/"+ch.name, func(t *testing.T) {
				agent := consultest.StartAgent(t)
				args := append(append([]string{"-vvv"}, ch.args...), append([]string{"bounded", "--"}, ch.argv...)...)
				w := start(t, agent, args...)
				w.out.waitFor(t, "ready", wait)
				consultest.WaitServiceStatus(t, agent.Client, "bounded", api.HealthPassing, wait)
				st.fault(t, agent)

				sent := time.Now()
				w.signal(syscall.SIGTERM)
				code := w.wait(ch.bound + stopSlack + 10*time.Second) // fails only if svcwrap hangs for good
				took := time.Since(sent)
				t.Logf("SIGTERM to exit: %s", took.Round(time.Millisecond))
				assert.Equal(t, ch.code, code, "exit code; stderr:\n%s", w.errOut)
				assert.LessOrEqual(t, took, ch.bound+stopSlack,
					"SIGTERM to exit took %s with the agent %s; bound %s + %s slack; stderr:\n%s",
					took.Round(time.Millisecond), st.name, ch.bound, stopSlack, w.errOut)
			})
		}
	}
}

// A deregistration a hung agent has not answered when --consul-timeout runs
// out is waited for while the child stops: the agent that comes back answers
// it, and the entry is gone when svcwrap exits, not left for the reaper. (A
// thousand wrappers stopped at once meet an agent that answers them one
// catalog sync at a time, the last after more than --consul-timeout.)
func TestFaultStop_HungAgentTakesTheDeregistrationWhenItComesBack(t *testing.T) {
	agent := consultest.StartAgent(t)
	w := start(t, agent, append([]string{"-vv", "--consul-timeout", "1s", "--kill-timeout", "20s", "comeback", "--"}, helperArgv("signals")...)...)
	w.out.waitFor(t, "ready", wait)
	consultest.WaitServiceStatus(t, agent.Client, "comeback", api.HealthPassing, wait)
	pause(t, agent)

	w.signal(syscall.SIGTERM)
	w.errOut.waitFor(t, "deregistration not done yet: waiting for it while the command stops", wait)
	agent.Resume(t)
	code := w.wait(21*time.Second + stopSlack)
	assert.Equal(t, 0, code, "exit code; stderr:\n%s", w.errOut)
	assert.Contains(t, w.errOut.String(), "msg=deregistered", "stderr:\n%s", w.errOut)
	assert.NotContains(t, w.errOut.String(), "deregister failed", "stderr:\n%s", w.errOut)
	services, err := agent.Client.Agent().Services()
	require.NoError(t, err)
	assert.NotContains(t, services, "comeback", "the entry is gone when svcwrap has exited")
}

// A second stop signal kills the child's whole group at once, even while the
// stop's request to a hung agent is still in flight.
func TestFaultStop_SecondSignalKillsAtOnce(t *testing.T) {
	states := []struct {
		name  string
		fault func(t *testing.T, a *consultest.Agent)
	}{
		{"hung", pause},
		{"gone", func(t *testing.T, a *consultest.Agent) { a.Stop(t) }},
	}
	for _, st := range states {
		t.Run(st.name, func(t *testing.T) {
			agent := consultest.StartAgent(t)
			w := start(t, agent, append([]string{"-vvv", "--consul-timeout", "10s", "--kill-timeout", "1h", "twice", "--"},
				helperArgv("ignore-term-group")...)...)
			w.out.waitFor(t, "ready", wait)
			pgid := childPid(t, w) // the child leads a process group of its own
			gpid := grandchildPid(t, w)
			require.ElementsMatch(t, []int{pgid, gpid}, groupMembers(pgid), "the child's group: the child and its grandchild")
			consultest.WaitServiceStatus(t, agent.Client, "twice", api.HealthPassing, wait)
			st.fault(t, agent)

			w.signal(syscall.SIGTERM)
			w.errOut.waitFor(t, "msg=stopping", wait)
			second := time.Now()
			w.signal(syscall.SIGTERM)
			code := w.wait(2*time.Second + 10*time.Second)
			took := time.Since(second)
			t.Logf("second SIGTERM to exit: %s", took.Round(time.Millisecond))
			assert.Equal(t, 128+9, code, "the group is SIGKILLed; stderr:\n%s", w.errOut)
			assert.LessOrEqual(t, took, 2*time.Second,
				"second SIGTERM to exit took %s with the agent %s; stderr:\n%s", took.Round(time.Millisecond), st.name, w.errOut)
			consultest.Eventually(t, time.Second, func() (bool, string) {
				left := groupMembers(pgid)
				return len(left) == 0, fmt.Sprintf("group %d still has %v", pgid, left)
			}, "the child's process group to be dead when svcwrap has exited")
		})
	}
}

// groupMembers lists the live (not zombie) processes of process group pgid.
func groupMembers(pgid int) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		// After the command: state ppid pgrp ...
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(f[2]); g == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// B. At the default verbosity, a failure that persists gets one NOTICE line
// naming the agent and the operation, and its end gets one; never a line per
// retry. The child runs on throughout.

const noticeLevel = "level=NOTICE"

// operationRE matches the operations a NOTICE names. \b keeps "deregister"
// from counting as "register".
var operationRE = regexp.MustCompile(`\b(register|heartbeat|deregister|look up)\b`)

// noticeLines returns the NOTICE lines of svcwrap's stderr.
func noticeLines(w *wrapped) []string {
	var out []string
	for _, l := range strings.Split(w.errOut.String(), "\n") {
		if strings.Contains(l, noticeLevel) {
			out = append(out, l)
		}
	}
	return out
}

// failureNotices and healedNotices split notices into failures and heals
// (a heal says "again").
func splitNotices(w *wrapped) (failures, heals []string) {
	for _, l := range noticeLines(w) {
		if strings.Contains(l, "again") {
			heals = append(heals, l)
		} else {
			failures = append(failures, l)
		}
	}
	return failures, heals
}

// waitForAttempts waits until attempts() has grown by n, failing the test at
// once if svcwrap prints a second failure NOTICE meanwhile or exits.
func waitForAttempts(t *testing.T, w *wrapped, attempts func() int, n int, what string) {
	t.Helper()
	base := attempts()
	consultest.Eventually(t, 30*time.Second, func() (bool, string) {
		select {
		case <-w.done:
			t.Fatalf("svcwrap exited (%d) while the agent failed; stderr:\n%s", w.code, w.errOut)
		default:
		}
		if f, _ := splitNotices(w); len(f) > 1 {
			t.Fatalf("a NOTICE line per retry: %d failure lines after %d more %s:\n%s", len(f), attempts()-base, what, w.errOut)
		}
		got := attempts() - base
		return got >= n, fmt.Sprintf("%d more %s", got, what)
	}, fmt.Sprintf("%d more %s", n, what))
}

// logNotices shows the NOTICE lines in the test's log.
func logNotices(t *testing.T, w *wrapped) {
	t.Helper()
	t.Logf("NOTICE lines:\n%s", strings.Join(noticeLines(w), "\n"))
}

// childRuns asserts that svcwrap and its child are still running.
func childRuns(t *testing.T, w *wrapped, pid int) {
	t.Helper()
	select {
	case <-w.done:
		t.Fatalf("svcwrap exited (%d); stderr:\n%s", w.code, w.errOut)
	default:
	}
	assert.True(t, alive(pid), "the child (pid %d) keeps running", pid)
}

// agentLogCount counts the lines of the agent's log that contain every one of
// subs: the agent logs each request it answers with an error.
func agentLogCount(a *consultest.Agent, subs ...string) int {
	b, _ := os.ReadFile(a.LogPath)
	n := 0
lines:
	for _, l := range strings.Split(string(b), "\n") {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue lines
			}
		}
		n++
	}
	return n
}

// A 403 is reported at once, and once: svcwrap has no token, the agent's
// default policy is deny.
func TestFaultNotice_ACLDeniesRegistration(t *testing.T) {
	agent := consultest.StartAgent(t, consultest.WithACL(consultest.NewUUID(t)))
	w := start(t, agent, append([]string{"--ttl", "1s", "denied", "--"}, helperArgv("pid")...)...)
	w.out.waitFor(t, "ready", wait)
	pid := childPid(t, w)

	// Registration is retried with backoff (100 ms doubling): five more
	// refused attempts, as the agent logs them, and still one line.
	attempts := func() int { return agentLogCount(agent, "Request error", "url=/v1/agent/service/register") }
	saidOnceWhileRetried(t, w, pid, agent.HTTPAddr, `\bregister\b`, attempts, "refused registrations")
}

// saidOnceWhileRetried checks the NOTICE of a persistent failure: it names
// the agent (addr) and the operation (op, a regexp), and it is still the only
// NOTICE line after attempts() has grown by five; the child runs on all the
// while. Then it stops svcwrap.
func saidOnceWhileRetried(t *testing.T, w *wrapped, pid int, addr, op string, attempts func() int, what string) {
	t.Helper()
	w.errOut.waitFor(t, noticeLevel, wait)
	line := noticeLines(w)[0]
	assert.Contains(t, line, addr, "the NOTICE names the agent")
	assert.Regexp(t, op, line, "the NOTICE names the operation")
	waitForAttempts(t, w, attempts, 5, what)
	assert.Len(t, noticeLines(w), 1, "one NOTICE line, not one per retry:\n%s", w.errOut)
	childRuns(t, w, pid)

	logNotices(t, w)
	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+15, w.wait(wait))
}

// A TLS error is reported at once, and once: the agent's certificate is
// signed by a CA svcwrap was not told to trust, or by none it knows.
func TestFaultNotice_TLSUntrustedAgent(t *testing.T) {
	good := consultest.NewTLS(t)
	agent := consultest.StartAgent(t, consultest.WithTLS(good))
	other := consultest.NewTLS(t)
	cases := map[string][]string{
		"wrong-ca": {"--ca-file", other.CAFile},
		"no-ca":    nil,
	}
	for name, flags := range cases {
		t.Run(name, func(t *testing.T) {
			id := "tls-" + name
			args := append([]string{"--consul", good.URL(agent), "--ttl", "1s"}, flags...)
			w := start(t, nil, append(append(args, id, "--"), helperArgv("pid")...)...)
			w.out.waitFor(t, "ready", wait)
			pid := childPid(t, w)

			// Retried with backoff: a few seconds' worth of handshakes
			// the agent turned down (it logs each), and still one line.
			attempts := func() int { return agentLogCount(agent, "TLS handshake error") }
			saidOnceWhileRetried(t, w, pid, agent.HTTPAddr, operationRE.String(), attempts, "failed handshakes")
		})
	}
}

// An agent that does not answer is reported after a few heartbeats, once, and
// its return once ("again").
func TestFaultNotice_UnreachableAgentThenHeals(t *testing.T) {
	t.Run("never-reached", func(t *testing.T) {
		agent := consultest.StartAgent(t)
		agent.Stop(t) // nothing listens at its address now
		w := start(t, agent, append([]string{"--ttl", "1s", "away", "--"}, helperArgv("pid")...)...)
		w.out.waitFor(t, "ready", wait)
		pid := childPid(t, w)

		w.errOut.waitFor(t, noticeLevel, wait)
		line := noticeLines(w)[0]
		assert.Contains(t, line, agent.HTTPAddr, "the NOTICE names the agent")
		assert.Regexp(t, operationRE, line, "the NOTICE names the operation")
		childRuns(t, w, pid)

		agent.Restart(t)
		consultest.WaitServiceStatus(t, agent.Client, "away", api.HealthPassing, wait)
		w.errOut.waitFor(t, "again", wait)
		stayPassing(t, agent, "away", 3*time.Second) // three TTLs of heartbeats
		failures, heals := splitNotices(w)
		assert.Len(t, failures, 1, "one failure line:\n%s", w.errOut)
		assert.Len(t, heals, 1, "one line when it heals:\n%s", w.errOut)
		childRuns(t, w, pid)

		logNotices(t, w)
		w.signal(syscall.SIGTERM)
		assert.Equal(t, 128+15, w.wait(wait))
	})

	t.Run("lost-after-passing", func(t *testing.T) {
		agent := consultest.StartAgent(t)
		w := start(t, agent, append([]string{"--ttl", "1s", "lost", "--"}, helperArgv("pid")...)...)
		w.out.waitFor(t, "ready", wait)
		pid := childPid(t, w)
		consultest.WaitServiceStatus(t, agent.Client, "lost", api.HealthPassing, wait)
		assert.Empty(t, noticeLines(w), "nothing to report while the agent answers")

		agent.Stop(t)
		w.errOut.waitFor(t, noticeLevel, wait)
		line := noticeLines(w)[0]
		assert.Contains(t, line, agent.HTTPAddr, "the NOTICE names the agent")
		assert.Regexp(t, operationRE, line, "the NOTICE names the operation")

		agent.Restart(t) // a -dev agent comes back empty: svcwrap registers again
		consultest.WaitServiceStatus(t, agent.Client, "lost", api.HealthPassing, wait)
		w.errOut.waitFor(t, "again", wait)
		stayPassing(t, agent, "lost", 3*time.Second)
		failures, heals := splitNotices(w)
		assert.Len(t, failures, 1, "one failure line:\n%s", w.errOut)
		assert.Len(t, heals, 1, "one line when it heals:\n%s", w.errOut)
		childRuns(t, w, pid)

		logNotices(t, w)
		w.signal(syscall.SIGTERM)
		assert.Equal(t, 128+15, w.wait(wait))
	})
}

// stayPassing samples the agent's check of id every 50 ms for d and fails the
// test on the first sample that is not passing.
func stayPassing(t *testing.T, agent *consultest.Agent, id string, d time.Duration) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	samples := 0
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		status, output := checkStatus(t, agent.Client, id)
		require.Equal(t, api.HealthPassing, status, "check of %q after %d samples: %s", id, samples, output)
		samples++
	}
}

// proxied starts a proxy in front of agent and returns its address. Each
// request goes to intercept first, which may answer it itself (true), with
// the proxy to the agent at hand; the rest go on to the agent. It stands
// in for the faults a real agent will not produce on demand.
func proxied(t *testing.T, agent *consultest.Agent, intercept func(http.ResponseWriter, *http.Request, http.Handler) bool) string {
	t.Helper()
	target, err := url.Parse("http://" + agent.HTTPAddr)
	require.NoError(t, err)
	proxy := httputil.NewSingleHostReverseProxy(target)
	fake := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !intercept(rw, r, proxy) {
			proxy.ServeHTTP(rw, r)
		}
	}))
	t.Cleanup(fake.Close)
	return strings.TrimPrefix(fake.URL, "http://")
}

// A registration the agent answers with 400 is reported at once, and once. A
// real agent does not reject a valid registration, so a proxy in front of one
// answers 400 to PUT /v1/agent/service/register and passes everything else
// on (the look-up of a free ID gets the agent's own 404).
func TestFaultNotice_RegistrationRejected(t *testing.T) {
	agent := consultest.StartAgent(t)
	var registrations atomic.Int64
	addr := proxied(t, agent, func(rw http.ResponseWriter, r *http.Request, _ http.Handler) bool {
		if r.Method != http.MethodPut || r.URL.Path != "/v1/agent/service/register" {
			return false
		}
		registrations.Add(1)
		http.Error(rw, "Invalid check: TTL must be > 0 for TTL checks", http.StatusBadRequest)
		return true
	})

	w := start(t, nil, append([]string{"--consul", addr, "--ttl", "1s", "rejected", "--"}, helperArgv("pid")...)...)
	w.out.waitFor(t, "ready", wait)
	pid := childPid(t, w)

	attempts := func() int { return int(registrations.Load()) }
	saidOnceWhileRetried(t, w, pid, addr, `\bregister\b`, attempts, "rejected registrations")
}

// C. A rotated token file is read again when the agent rejects the token
// (403), so the new token takes over within a heartbeat: for heartbeats,
// re-registration and the deregistration at stop. No token is ever logged.
func TestFaultToken_RotatedFileIsReadAgain(t *testing.T) {
	mgmt := consultest.NewUUID(t)
	agent := consultest.StartAgent(t, consultest.WithACL(mgmt))

	// setup registers id with a token of its own policy, read from a file,
	// and returns the file, the token and the policy's name.
	setup := func(t *testing.T, id string, ttl string) (*wrapped, string, *api.ACLToken, string) {
		t.Helper()
		policy := "svc-" + id
		// Registration needs service:write on the service (its check
		// included); node read is what a real deployment grants besides.
		agent.CreatePolicy(t, policy, fmt.Sprintf(`
service %q { policy = "write" }
node_prefix "" { policy = "read" }`, id))
		t1 := agent.CreateToken(t, policy)
		file := filepath.Join(t.TempDir(), "token")
		require.NoError(t, os.WriteFile(file, []byte(t1.SecretID+"\n"), 0o600))
		w := start(t, agent, append([]string{"--token-file", file, "--ttl", ttl, "-vvv", id, "--"}, helperArgv("pid")...)...)
		w.out.waitFor(t, "ready", wait)
		consultest.WaitServiceStatus(t, agent.Client, id, api.HealthPassing, wait)
		return w, file, t1, policy
	}
	// rotate puts a new token of the same policy in the file, as a secrets
	// manager would (a new file renamed over the old), and deletes the old.
	rotate := func(t *testing.T, file string, old *api.ACLToken, policy string) *api.ACLToken {
		t.Helper()
		t2 := agent.CreateToken(t, policy)
		tmp := file + ".new"
		require.NoError(t, os.WriteFile(tmp, []byte(t2.SecretID+"\n"), 0o600))
		require.NoError(t, os.Rename(tmp, file))
		agent.DeleteToken(t, old)
		return t2
	}
	noSecrets := func(t *testing.T, w *wrapped, toks ...*api.ACLToken) {
		t.Helper()
		w.errOut.waitEOF(t, wait)
		for _, tok := range toks {
			assert.NotContains(t, w.errOut.String(), tok.SecretID, "a token in svcwrap's log")
		}
		assert.NotContains(t, w.errOut.String(), mgmt)
	}
	catalogHas := func(id string) (bool, string) {
		svcs, _, err := agent.Client.Catalog().Service(id, "", nil)
		if err != nil {
			return false, err.Error()
		}
		return len(svcs) == 1, fmt.Sprintf("%d entries in the catalog", len(svcs))
	}

	t.Run("heartbeats", func(t *testing.T) {
		const id = "web"
		w, file, t1, policy := setup(t, id, "2s")
		t2 := rotate(t, file, t1, policy)

		// Three TTLs after the old token is gone, sampled every 50 ms:
		// a heartbeat with the old one is refused, and the TTL would lapse.
		stayPassing(t, agent, id, 3*2*time.Second)
		ok, state := catalogHas(id)
		assert.True(t, ok, "the servers' catalog keeps the service: %s", state)

		w.signal(syscall.SIGTERM)
		assert.Equal(t, 128+15, w.wait(wait))
		// Only the new token may deregister it: the old one is deleted.
		consultest.WaitServiceGone(t, agent.Client, id, wait)
		consultest.Eventually(t, wait, func() (bool, string) {
			ok, state := catalogHas(id)
			return !ok && !strings.Contains(state, "error"), state
		}, "the service to leave the servers' catalog")
		noSecrets(t, w, t1, t2)
	})

	t.Run("re-registration", func(t *testing.T) {
		const id = "web-again"
		w, file, t1, policy := setup(t, id, "2s")
		t2 := rotate(t, file, t1, policy)
		// The agent forgets the service, as after a restart: svcwrap
		// registers it again, which only the new token may do.
		require.NoError(t, agent.Client.Agent().ServiceDeregister(id))
		consultest.WaitServiceStatus(t, agent.Client, id, api.HealthPassing, wait)
		stayPassing(t, agent, id, 3*2*time.Second)

		w.signal(syscall.SIGTERM)
		assert.Equal(t, 128+15, w.wait(wait))
		consultest.WaitServiceGone(t, agent.Client, id, wait)
		noSecrets(t, w, t1, t2)
	})

	t.Run("deregistration", func(t *testing.T) {
		const id = "web-stop"
		// A long TTL: no heartbeat between the rotation and the stop, so
		// the deregistration is the first request with the old token.
		w, file, t1, policy := setup(t, id, "1m")
		t2 := rotate(t, file, t1, policy)
		w.signal(syscall.SIGTERM)
		assert.Equal(t, 128+15, w.wait(wait))
		consultest.WaitServiceGone(t, agent.Client, id, 5*time.Second)
		noSecrets(t, w, t1, t2)
	})
}

// D. A registration the agent applied but answered too late, after
// --consul-timeout (an agent starved of CPU while a host starts a thousand
// services), is the registration: the next attempt finds the check on the
// agent and keeps it. The entry stays, passing, from its first moment to
// the stop. (Taking the unanswered registration for a stray copy, sweeping
// it and registering again made the service vanish for a moment, a flap.)
// A real agent answers as soon as it has applied a registration, so a
// proxy in front of one passes the first registration on and holds the
// answer until svcwrap has given up on it; everything else goes through.
func TestFaultLateAnswer_AppliedRegistrationIsKept(t *testing.T) {
	agent := consultest.StartAgent(t)
	var held atomic.Bool
	applied := make(chan int, 1)
	addr := proxied(t, agent, func(_ http.ResponseWriter, r *http.Request, proxy http.Handler) bool {
		if r.Method != http.MethodPut || r.URL.Path != "/v1/agent/service/register" || !held.CompareAndSwap(false, true) {
			return false
		}
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		applied <- rec.Code
		<-r.Context().Done() // svcwrap hung up: its --consul-timeout ran out
		return true
	})

	const (
		id      = "late"
		checkID = "service:" + id
		ttl     = 2 * time.Second
	)
	watch := consultest.WatchService(t, agent.Client, id)
	w := start(t, nil, append([]string{"-v", "--consul", addr, "--consul-timeout", "1s", "--ttl", ttl.String(), id, "--"}, helperArgv("pid")...)...)
	select {
	case code := <-applied:
		require.Equal(t, http.StatusOK, code, "the agent's answer to the first registration")
	case <-time.After(wait):
		t.Fatal("svcwrap sent no registration")
	}
	w.out.waitFor(t, "ready", wait)

	var first consultest.ServiceSnapshot
	consultest.Eventually(t, wait, func() (bool, string) {
		for _, s := range watch.Snapshots() {
			if e := s.Entry(agent.Node, id); e != nil && consultest.CheckStatus(e, checkID) == api.HealthPassing {
				first = s
				return true, ""
			}
		}
		return false, describe(watch.Last())
	}, "the service, passing, in the catalog")
	created := first.Entry(agent.Node, id).Service.CreateIndex
	fault := holdsFor(t, watch, first.At, 4*ttl, func(s consultest.ServiceSnapshot) string {
		e := s.Entry(agent.Node, id)
		switch {
		case e == nil:
			return "the entry is gone"
		case e.Service.CreateIndex != created:
			return fmt.Sprintf("the entry was removed and registered again (created at index %d, first at %d)", e.Service.CreateIndex, created)
		case consultest.CheckStatus(e, checkID) != api.HealthPassing:
			return "the check is " + consultest.CheckStatus(e, checkID)
		}
		return ""
	})
	assert.Empty(t, fault, "from the first passing state on, for two TTLs and more")
	logged := w.errOut.String()
	assert.Equal(t, 1, strings.Count(logged, "msg=registered"), "one registration, found on the agent:\n%s", logged)
	assert.Contains(t, logged, `found="the agent had applied the registration it did not answer in time"`)
	assert.NotContains(t, logged, "msg=deregistered", "nothing removed while the child runs")

	w.signal(syscall.SIGTERM)
	assert.Equal(t, 128+int(syscall.SIGTERM), w.wait(wait))
	consultest.Eventually(t, wait, func() (bool, string) {
		return watch.Last().Entry(agent.Node, id) == nil, describe(watch.Last())
	}, "the service gone after the stop")
}
