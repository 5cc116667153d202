package main

// The active checks of --check end to end: the svcwrap binary, a real agent,
// real children (this test binary in its "health" helper mode, sh, sleep).

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// helperHealth serves GET /health on 127.0.0.1:args[0] with the status code
// written in the file args[1], read at each request; "503 once" serves one
// 503 and then 200; "503 then hang" one 503, and then leaves every request
// unanswered ("hanging"). It prints "served CODE" per request answered.
func helperHealth(args []string) int {
	l, err := net.Listen("tcp", "127.0.0.1:"+args[0])
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	err = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := os.ReadFile(args[1])
		word := strings.TrimSpace(string(b))
		switch word {
		case "503 once":
			_ = os.WriteFile(args[1], []byte("200"), 0o644)
			word = "503"
		case "503 then hang":
			_ = os.WriteFile(args[1], []byte("hang"), 0o644)
			word = "503"
		case "hang":
			fmt.Println("hanging")
			<-r.Context().Done()
			return
		}
		code, err := strconv.Atoi(word)
		if err != nil {
			code = 200
		}
		w.WriteHeader(code)
		fmt.Println("served", code)
	}))
	fmt.Println("error", err)
	return 1
}

// writeWhole replaces file's content at once (a rename): a check that
// reads it meanwhile sees the old content or the new, never an empty file.
func writeWhole(t *testing.T, file, content string) {
	t.Helper()
	tmp := file + ".new"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o644))
	require.NoError(t, os.Rename(tmp, file))
}

// healthChild is the argv of a health helper on port, its code in a file
// the test writes with set.
func healthChild(t *testing.T, port int, code string) (argv []string, set func(string)) {
	file := filepath.Join(t.TempDir(), "code")
	set = func(code string) { writeWhole(t, file, code) }
	set(code)
	return helperArgv("health", strconv.Itoa(port), file), set
}

// waitCheck waits until the service's check has status and its output
// contains want, and returns the output.
func waitCheck(t *testing.T, agent *consultest.Agent, id, status, want string) string {
	t.Helper()
	var output string
	consultest.Eventually(t, wait, func() (bool, string) {
		var got string
		got, output = checkStatus(t, agent.Client, id)
		return got == status && strings.Contains(output, want), got + ": " + output
	}, fmt.Sprintf("%s %q", status, want))
	return output
}

// The status follows /health's code (200, 429, 503) and the output names
// the code and the child.
func TestCheckHTTP_FollowsTheCode(t *testing.T) {
	agent := consultest.StartAgent(t)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/health", port)
	child, set := healthChild(t, port, "200")
	w := start(t, agent, append([]string{"--check", "http:" + url, "--check-interval", "100ms", "web", "--"}, child...)...)

	out := waitCheck(t, agent, "web", api.HealthPassing, "GET "+url+": 200")
	assert.Contains(t, out, "(pid ", "the output names the child")
	set("429")
	waitCheck(t, agent, "web", api.HealthWarning, "GET "+url+": 429")
	set("503")
	waitCheck(t, agent, "web", api.HealthCritical, "GET "+url+": 503")
	set("200")
	waitCheck(t, agent, "web", api.HealthPassing, "GET "+url+": 200")

	w.signal(syscall.SIGTERM)
	w.wait(wait)
	consultest.WaitServiceGone(t, agent.Client, "web", wait)
}

// A tcp check against a listener that goes away turns critical, and says so.
func TestCheckTCP_ListenerGoesAway(t *testing.T) {
	agent := consultest.StartAgent(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	w := start(t, agent, "--check", "tcp:"+addr, "--check-interval", "100ms", "redis", "--", "sleep", "1000")

	waitCheck(t, agent, "redis", api.HealthPassing, "connected to "+addr)
	require.NoError(t, l.Close())
	waitCheck(t, agent, "redis", api.HealthCritical, "connect "+addr+": connection refused")

	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// A script's exit code decides: 0 passing, 1 warning, 2 critical, with its
// first line as the reason.
func TestCheckScript_ExitCodes(t *testing.T) {
	agent := consultest.StartAgent(t)
	file := filepath.Join(t.TempDir(), "code")
	set := func(code string) { writeWhole(t, file, code) }
	set("0")
	script := fmt.Sprintf(`c=$(cat %s); echo "disk 97%% full"; exit $c`, file)
	w := start(t, agent, "--check", "script:"+script, "--check-interval", "100ms", "disk", "--", "sleep", "1000")

	waitCheck(t, agent, "disk", api.HealthPassing, "script exited 0: disk 97% full")
	set("1")
	waitCheck(t, agent, "disk", api.HealthWarning, "script exited 1: disk 97% full")
	set("2")
	waitCheck(t, agent, "disk", api.HealthCritical, "script exited 2: disk 97% full")

	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// A script that hangs: signals are forwarded while it runs, it is killed at
// its timeout (critical), and a stop while it runs leaves no process of it.
func TestCheckScript_Hangs(t *testing.T) {
	agent := consultest.StartAgent(t)
	t.Run("timeout", func(t *testing.T) {
		pids := filepath.Join(t.TempDir(), "pids")
		script := fmt.Sprintf("echo $$ >> %s; sleep 1000 & echo $! >> %s; wait", pids, pids)
		w := start(t, agent, "--check", "script:"+script, "--check-timeout", "300ms", "--id", "hang-timeout", "hang", "--", "sleep", "1000")
		// Critical from the start; the timeout, once the first run has
		// one, is the reason it reads.
		waitCheck(t, agent, "hang-timeout", api.HealthCritical, "script timed out after 300ms")
		first := readPIDs(t, pids, 2)[:2]
		waitAllGone(t, first...) // killed at the timeout, svcwrap running on
		w.signal(syscall.SIGTERM)
		w.wait(wait)
	})
	t.Run("signals and stop", func(t *testing.T) {
		pids := filepath.Join(t.TempDir(), "pids")
		script := fmt.Sprintf("echo $$ >> %s; sleep 1000 & echo $! >> %s; wait", pids, pids)
		w := start(t, agent, append([]string{"--check", "script:" + script, "--check-timeout", "1h", "--id", "hang-stop", "hang", "--"},
			helperArgv("signals")...)...)
		w.out.waitFor(t, "ready", wait)
		running := readPIDs(t, pids, 2)

		w.signal(syscall.SIGUSR1)
		w.out.waitFor(t, "got user defined signal 1", wait)
		for _, pid := range running {
			assert.True(t, processAlive(pid), "the script still hangs while the signal is forwarded")
		}
		// Registered though its one check has not reported: critical.
		waitCheck(t, agent, "hang-stop", api.HealthCritical, "script:"+script+": not passing yet")

		w.signal(syscall.SIGTERM)
		assert.Equal(t, 0, w.wait(wait))
		waitAllGone(t, running...)
		consultest.WaitServiceGone(t, agent.Client, "hang-stop", wait)
	})
}

// A script that hangs past its --check-timeout while svcwrap forwards a
// signal: the child reports the signal while the script's run is still
// under way (its processes alive, no "timed out" from svcwrap or the
// agent yet); then the run times out, critical, and no process of the
// script's group is left.
func TestCheckScript_SignalWhileItHangsPastTimeout(t *testing.T) {
	agent := consultest.StartAgent(t)
	dir := t.TempDir()
	state, pids := filepath.Join(dir, "state"), filepath.Join(dir, "pids")
	require.NoError(t, os.WriteFile(state, []byte("pass"), 0o644))
	script := fmt.Sprintf(`if [ "$(cat %s)" = hang ]; then echo $$ >> %s; sleep 1000 & echo $! >> %s; wait; fi`, state, pids, pids)
	w := start(t, agent, append([]string{"--check", "script:" + script, "--check-interval", "100ms", "--check-timeout", "3s",
		"-v", "hangsig", "--"}, helperArgv("signals")...)...)
	w.out.waitFor(t, "ready", wait)
	waitCheck(t, agent, "hangsig", api.HealthPassing, "script exited 0")

	require.NoError(t, os.WriteFile(state, []byte("hang"), 0o644))
	running := readPIDs(t, pids, 2)
	group := processGroup(t, running[0])

	w.signal(syscall.SIGUSR1)
	w.out.waitFor(t, "got user defined signal 1", wait)
	// The events in order: the child's line came first, the timeout is
	// still to come.
	for _, pid := range running {
		assert.True(t, processAlive(pid), "pid %d of the script: its run has not ended", pid)
	}
	assert.NotContains(t, w.errOut.String(), "timed out", "svcwrap has not reported a timeout yet")
	status, out := checkStatus(t, agent.Client, "hangsig")
	assert.Equal(t, api.HealthPassing, status, out)

	waitCheck(t, agent, "hangsig", api.HealthCritical, "script timed out after 3s")
	w.errOut.waitFor(t, "script timed out after 3s", wait)
	waitAllGone(t, running...)
	assert.Empty(t, groupMembers(group), "no process of the script's group is left")

	w.signal(syscall.SIGTERM)
	w.out.waitFor(t, "got terminated", wait)
	assert.Equal(t, 0, w.wait(wait))
}

// processGroup is the process group of pid, from /proc/PID/stat.
func processGroup(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // state ppid pgrp ...
	require.GreaterOrEqual(t, len(fields), 3, s)
	pgrp, err := strconv.Atoi(fields[2])
	require.NoError(t, err, s)
	return pgrp
}

// With --port and --check, the worst status wins: critical while the child
// does not listen, warning (the script's 1) once it does.
func TestChecks_WorstWinsWithPort(t *testing.T) {
	agent := consultest.StartAgent(t)
	port := freePort(t)
	w := start(t, agent, append([]string{"--port", strconv.Itoa(port), "--check", "script:echo degraded; exit 1",
		"--check-interval", "100ms", "mixed", "--"}, helperArgv("listener", strconv.Itoa(port))...)...)
	w.out.waitFor(t, "ready", wait)
	out := waitCheck(t, agent, "mixed", api.HealthCritical, "not listening on port "+strconv.Itoa(port))
	assert.NotContains(t, out, "script exited 1", "only the worst results are named")

	w.signal(syscall.SIGUSR1) // the child listens
	out = waitCheck(t, agent, "mixed", api.HealthWarning, "script exited 1: degraded")
	assert.NotContains(t, out, "listening on port")

	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// checkIndex is the ModifyIndex of the service's check in the catalog: it
// moves with every status or output the servers write.
func checkIndex(t *testing.T, agent *consultest.Agent, service, status string) uint64 {
	t.Helper()
	checks, _, err := agent.Client.Health().Checks(service, nil)
	require.NoError(t, err)
	require.Len(t, checks, 1)
	require.Equal(t, status, checks[0].Status, checks[0].Output)
	return checks[0].ModifyIndex
}

// A one-run 503 is absorbed by --fail-after 3: the check in the catalog is
// never written; without it, the same blip is.
func TestCheck_FailAfterAbsorbsBlip(t *testing.T) {
	agent := consultest.StartAgent(t)
	for _, tc := range []struct {
		name    string
		flags   []string
		written bool
	}{
		{"fail-after-3", []string{"--fail-after", "3"}, false},
		{"default", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePort(t)
			child, set := healthChild(t, port, "200")
			args := append([]string{"--check", fmt.Sprintf("http:127.0.0.1:%d/health", port), "--check-interval", "100ms", "--ttl", "30s", tc.name}, tc.flags...)
			w := start(t, agent, append(append(args, "--"), child...)...)
			waitCheck(t, agent, tc.name, api.HealthPassing, ": 200")
			w.out.waitFor(t, "served 200", wait)
			before := checkIndex(t, agent, tc.name, api.HealthPassing)

			set("503 once")
			w.out.waitFor(t, "served 503", wait)
			n := w.out.count("served 200")
			consultest.Eventually(t, wait, func() (bool, string) {
				return w.out.count("served 200") >= n+3, w.out.String()
			}, "three passes after the blip")
			consultest.WaitServiceStatus(t, agent.Client, tc.name, api.HealthPassing, wait)
			after := checkIndex(t, agent, tc.name, api.HealthPassing)
			if tc.written {
				assert.NotEqual(t, before, after, "without --fail-after the blip is written")
			} else {
				assert.Equal(t, before, after, "--fail-after 3 absorbs the blip")
			}
			w.signal(syscall.SIGTERM)
			w.wait(wait)
		})
	}
}

// --grace: warning instead of critical while the service has never passed,
// until the grace period ends; then critical, never the other way round.
func TestCheck_Grace(t *testing.T) {
	agent := consultest.StartAgent(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	t.Run("warning while it lasts", func(t *testing.T) {
		w := start(t, agent, "--check", "tcp:"+addr, "--grace", "1h", "--id", "grace-long", "slow", "--", "sleep", "1000")
		waitCheck(t, agent, "grace-long", api.HealthWarning, "starting (--grace 1h0m0s): connect "+addr+": connection refused")
		w.signal(syscall.SIGTERM)
		w.wait(wait)
	})
	t.Run("warning before critical", func(t *testing.T) {
		// Every state the catalog takes, through a blocking query begun
		// before svcwrap starts: the first status it ever holds is seen.
		watch := consultest.WatchService(t, agent.Client, "graceful")
		w := start(t, agent, "--check", "tcp:"+addr, "--check-interval", "100ms", "--grace", "2s", "graceful", "--", "sleep", "1000")
		waitCheck(t, agent, "graceful", api.HealthCritical, "connect "+addr+": connection refused")
		watch.CatchUp(t, wait)

		// The catalog's outputs are only a message here: the agent writes
		// an output that changes under the same status to the servers at
		// its check_update_interval, so the registration's empty one stays
		// for the warning.
		var seen, outputs []string // each status as it first appears, in order
		for _, snap := range watch.Snapshots() {
			e := snap.Entry(agent.Node, "graceful")
			if e == nil {
				continue
			}
			for _, c := range e.Checks {
				if c.CheckID == "service:graceful" && (len(seen) == 0 || seen[len(seen)-1] != c.Status) {
					seen, outputs = append(seen, c.Status), append(outputs, c.Output)
				}
			}
		}
		require.Equal(t, []string{api.HealthWarning, api.HealthCritical}, seen, "outputs: %q", outputs)
		assert.False(t, strings.HasPrefix(outputs[1], "starting"), outputs[1])
		w.signal(syscall.SIGTERM)
		w.wait(wait)
	})
}

// While the status stays, heartbeats carry the same output: the catalog's
// check is never written, though the http check runs every 50 ms.
func TestCheck_OutputStableAcrossHeartbeats(t *testing.T) {
	agent := consultest.StartAgent(t)
	port := freePort(t)
	child, _ := healthChild(t, port, "200")
	w := start(t, agent, append([]string{"--check", fmt.Sprintf("http:127.0.0.1:%d/health", port),
		"--check-interval", "50ms", "--ttl", "1s", "--heartbeat", "100ms", "-vvv", "stable", "--"}, child...)...)
	waitCheck(t, agent, "stable", api.HealthPassing, ": 200")
	w.errOut.waitFor(t, "heartbeat", wait)
	before := checkIndex(t, agent, "stable", api.HealthPassing)
	first := w.errOut.count("heartbeat")
	consultest.Eventually(t, wait, func() (bool, string) {
		n := w.errOut.count("heartbeat") - first
		return n >= 10, fmt.Sprintf("%d heartbeats", n)
	}, "ten heartbeats")
	assert.Equal(t, before, checkIndex(t, agent, "stable", api.HealthPassing))
	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// readPIDs waits until path holds at least n PIDs, one a line.
func readPIDs(t *testing.T, path string, n int) []int {
	t.Helper()
	var pids []int
	consultest.Eventually(t, wait, func() (bool, string) {
		b, _ := os.ReadFile(path)
		pids = nil
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
		return len(pids) >= n, string(b)
	}, fmt.Sprintf("%d PIDs in %s", n, path))
	return pids
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool { return alive(pid) }

// waitAllGone waits until none of pids runs.
func waitAllGone(t *testing.T, pids ...int) {
	t.Helper()
	for _, p := range pids {
		waitGone(t, p)
	}
}

// SVCWRAP_CHECK takes a list, split only where a new check begins, so that
// a comma inside a command stays there; every check of it runs.
func TestCheck_FromEnvironment(t *testing.T) {
	agent := consultest.StartAgent(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	t.Setenv("SVCWRAP_CHECK", "script:echo a,b; exit 1,tcp:"+l.Addr().String())
	w := start(t, agent, "--check-interval", "100ms", "envchecks", "--", "sleep", "1000")
	out := waitCheck(t, agent, "envchecks", api.HealthWarning, "script exited 1: a,b")
	assert.NotContains(t, out, "connected to", "only the worst is named")
	require.NoError(t, l.Close())
	waitCheck(t, agent, "envchecks", api.HealthCritical, "connect "+l.Addr().String()+": connection refused")
	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// The status follows the code at the first run after the switch, never
// later: the child answers one 503 and no request after it, so a status
// decided by a later run would read "timeout", not 503.
func TestCheckHTTP_StatusAtFirstRunAfterSwitch(t *testing.T) {
	agent := consultest.StartAgent(t)
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/health", port)
	child, set := healthChild(t, port, "200")
	w := start(t, agent, append([]string{"--check", "http:" + url, "--check-interval", "100ms", "--check-timeout", "1h", "first", "--"}, child...)...)
	waitCheck(t, agent, "first", api.HealthPassing, "GET "+url+": 200")
	set("503 then hang")
	waitCheck(t, agent, "first", api.HealthCritical, "GET "+url+": 503")
	assert.Equal(t, 1, w.out.count("served 503"), "one request answered 503")
	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// The password of an http check's URL reaches neither the agent's check
// output (the placeholder before the first run included) nor stderr at -vvv.
func TestCheck_PasswordNotShown(t *testing.T) {
	agent := consultest.StartAgent(t)
	port := freePort(t)
	url := fmt.Sprintf("http://admin:s3cret@127.0.0.1:%d/health", port)
	child, set := healthChild(t, port, "hang")
	w := start(t, agent, append([]string{"--check", url, "--check-timeout", "1h", "-vvv", "secret", "--"}, child...)...)
	out := waitCheck(t, agent, "secret", api.HealthCritical, "admin:xxxxx@") // the placeholder, or the first run's reason
	assert.NotContains(t, out, "s3cret")
	set("200")
	w.signal(syscall.SIGTERM)
	w.wait(wait)
	assert.NotContains(t, w.errOut.String(), "s3cret")
	assert.Contains(t, w.errOut.String(), "admin:xxxxx@", "the start line names the check")
}

// While the status stays, so does the output: a script's reason changing
// under critical, then under warning, writes nothing to the catalog for
// three runs with the new reason.
func TestCheck_OutputStableUnderStatus(t *testing.T) {
	agent := consultest.StartAgent(t)
	dir := t.TempDir()
	file, runs := filepath.Join(dir, "state"), filepath.Join(dir, "runs")
	set := func(s string) { writeWhole(t, file, s+"\n") }
	countRuns := func() int { b, _ := os.ReadFile(runs); return strings.Count(string(b), "\n") }
	set("2 first")
	script := fmt.Sprintf(`read c why < %s; echo "$why"; echo run >> %s; exit $c`, file, runs)
	w := start(t, agent, "--check", "script:"+script, "--check-interval", "50ms", "--ttl", "30s", "stable", "--", "sleep", "1000")
	for _, tc := range []struct{ status, code string }{{api.HealthCritical, "2"}, {api.HealthWarning, "1"}} {
		set(tc.code + " first")
		out := waitCheck(t, agent, "stable", tc.status, "script exited "+tc.code+": first")
		before := checkIndex(t, agent, "stable", tc.status)
		set(tc.code + " second")
		n := countRuns()
		consultest.Eventually(t, wait, func() (bool, string) {
			return countRuns() >= n+3, strconv.Itoa(countRuns() - n)
		}, "three runs with the new reason")
		_, after := checkStatus(t, agent.Client, "stable")
		assert.Equal(t, out, after, tc.status)
		assert.Equal(t, before, checkIndex(t, agent, "stable", tc.status), tc.status)
	}
	w.signal(syscall.SIGTERM)
	w.wait(wait)
}

// svcwrap killed by SIGKILL leaves no process of a hanging script: its
// keeper hears of the death and kills the script's group.
func TestCheckScript_NothingLeftAfterSIGKILL(t *testing.T) {
	agent := consultest.StartAgent(t)
	pids := filepath.Join(t.TempDir(), "pids")
	script := fmt.Sprintf("echo $$ >> %s; sleep 1000 & echo $! >> %s; wait", pids, pids)
	w := start(t, agent, "--check", "script:"+script, "--check-timeout", "1h", "killed", "--", "sleep", "1000")
	running := readPIDs(t, pids, 2)
	w.signal(syscall.SIGKILL)
	w.wait(wait)
	waitAllGone(t, running...)
}
