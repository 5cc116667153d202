package examples_test

// The example files are run, not just read: supervisord.conf under a real
// supervisord, the systemd unit's ExecStart line and the Dockerfile's
// ENTRYPOINT + CMD as the processes those managers would start, each against a
// real Consul agent. Only what a test machine must supply is replaced: the
// svcwrap binary (built in TestMain), the agent's address, a free port, and
// the wrapped command, which is this test binary acting as "web" (webMain).
// The settings a manager itself applies (KillMode, TimeoutStopSec, STOPSIGNAL)
// are read from the files and checked against svcwrap's stop budget.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// wait bounds every wait for a process, supervisord or the agent. The longest
// legitimate one is a stop: the examples drain for 5s.
const wait = 30 * time.Second

// dockerStopGrace is how long `docker stop` waits, by default, between
// STOPSIGNAL and SIGKILL.
const dockerStopGrace = 10 * time.Second

// svcwrapBin is the svcwrap under test, built by TestMain.
var svcwrapBin string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "web" {
		os.Exit(webMain(os.Args[1:]))
	}
	os.Exit(buildAndRun(m))
}

// buildAndRun builds svcwrap from the module root (the parent of examples/),
// with the race detector when the tests have it, then runs the tests.
func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "svcwrap-examples-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	svcwrapBin = filepath.Join(dir, "svcwrap")
	args := []string{"build", "-o", svcwrapBin}
	if raceEnabled() {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build svcwrap:", err)
		return 1
	}
	return m.Run()
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// What supervisord applies itself, read from the program section.
func TestSupervisordConf_Settings(t *testing.T) {
	conf := readINI(t, "supervisord.conf")
	get := func(key string) string { return conf.last(supervisordProgram, key) }
	assert.Equal(t, "TERM", get("stopsignal"), "svcwrap's stop sequence starts on SIGTERM")
	assert.Equal(t, "false", get("stopasgroup"), "the stop signal goes to svcwrap alone")
	assert.Equal(t, "false", get("killasgroup"))
	assert.Equal(t, "unexpected", get("autorestart"))
	assert.Equal(t, "0", get("exitcodes"))
	assert.Equal(t, "true", get("redirect_stderr"))

	argv := splitCommandLine(t, get("command"))
	env := supervisorEnv(t, get("environment"))
	assert.Contains(t, env, "CONSUL_HTTP_ADDR")
	stopwait, err := strconv.Atoi(get("stopwaitsecs"))
	require.NoError(t, err, "stopwaitsecs")
	assert.Greater(t, time.Duration(stopwait)*time.Second, stopBudget(t, argv, env),
		"stopwaitsecs must outlast svcwrap's stop (consul-timeout + drain + kill-timeout)")
}

// supervisorctl stop returns once web is stopped; svcwrap deregisters first,
// and web hears SIGTERM only then. Nothing of web is left.
func TestSupervisord_StopDeregistersFirst(t *testing.T) {
	t.Parallel()
	agent := consultest.StartAgent(t)
	port := freePort(t)
	dir := t.TempDir()
	rep := report(filepath.Join(dir, "web.report"))
	sv := startSupervisord(t, dir, agent.HTTPAddr, port,
		webArgv("-listen", loopback(port), "-report", string(rep), "-agent", agent.HTTPAddr, "-service", "web"))

	sv.waitState(t, "RUNNING")
	consultest.WaitServiceStatus(t, agent.Client, "web", api.HealthPassing, wait)
	assertHTTPCheck(t, agent, port)

	// The registration carries what environment= set.
	svc, _, err := agent.Client.Agent().Service("web", nil)
	require.NoError(t, err)
	assert.Equal(t, port, svc.Port)
	assert.Equal(t, []string{"v1", "http"}, svc.Tags, "SVCWRAP_TAG from environment=")
	assert.Equal(t, "web", svc.Meta["team"], "SVCWRAP_META from environment=")

	// supervisord → svcwrap → web, and web is not in svcwrap's process
	// group, which is what stopasgroup/killasgroup would signal.
	wrapper := sv.pid(t)
	web := rep.pid(t)
	tree := waitDescendants(t, wrapper, web)
	assert.Equal(t, wrapper, tree[web].ppid, "web is svcwrap's child")
	wrapperProc, ok := readProc(wrapper)
	require.True(t, ok)
	assert.Equal(t, wrapper, wrapperProc.pgid, "supervisord makes svcwrap a group leader")
	assert.NotEqual(t, wrapperProc.pgid, tree[web].pgid, "web must not share svcwrap's process group")
	sv.track(wrapperProc)
	sv.track(values(tree)...)

	out := sv.ctl(t, "stop", "web")
	assert.Contains(t, out, "web: stopped")
	rep.waitFor(t, "term ")
	assert.Equal(t, 1, rep.count("term registered=false"), "web heard SIGTERM while still registered:\n%s", rep)
	consultest.WaitServiceGone(t, agent.Client, "web", wait)
	waitAllGone(t, append(values(tree), wrapperProc))
	assert.Equal(t, "STOPPED", sv.state(t))
	assert.Contains(t, sv.log(), "stopped: web (exit status 0)", "svcwrap passed on web's 0")
}

// autorestart=unexpected with exitcodes=0 works because svcwrap exits with
// web's status: a crash (3) is restarted, and so is a SIGKILLed svcwrap
// (taking web with it); a clean exit (0) is not.
func TestSupervisord_AutorestartUnexpected(t *testing.T) {
	t.Parallel()
	agent := consultest.StartAgent(t)
	port := freePort(t)
	dir := t.TempDir()
	rep := report(filepath.Join(dir, "web.report"))
	sv := startSupervisord(t, dir, agent.HTTPAddr, port,
		webArgv("-listen", loopback(port), "-report", string(rep)))

	sv.waitState(t, "RUNNING")
	consultest.WaitServiceStatus(t, agent.Client, "web", api.HealthPassing, wait)
	sv.trackTree(t)
	require.Equal(t, 1, rep.count("start "))

	// A crash: web exits 3 (SIGUSR1 reaches it through svcwrap).
	assert.Contains(t, sv.ctl(t, "signal", "USR1", "web"), "web: signalled")
	rep.waitFor(t, "exit 3")
	consultest.Eventually(t, wait, func() (bool, string) {
		return rep.count("start ") == 2, rep.String()
	}, "supervisord to start web again")
	assert.Contains(t, sv.log(), "exited: web (exit status 3; not expected)")
	sv.waitState(t, "RUNNING")
	consultest.WaitServiceStatus(t, agent.Client, "web", api.HealthPassing, wait)
	sv.trackTree(t)

	// svcwrap itself killed (supervisord's SIGKILL after stopwaitsecs with
	// killasgroup=false, or the OOM killer): web dies with it, supervisord
	// starts both again, and the new svcwrap takes over the registration the
	// dead one could not remove.
	before := instance(t, agent)
	wrapper := sv.pid(t)
	tree := waitDescendants(t, wrapper, rep.pid(t))
	require.NoError(t, syscall.Kill(wrapper, syscall.SIGKILL))
	waitAllGone(t, values(tree))
	consultest.Eventually(t, wait, func() (bool, string) {
		return rep.count("start ") == 3, rep.String()
	}, "supervisord to start web again")
	sv.waitState(t, "RUNNING")
	consultest.Eventually(t, wait, func() (bool, string) {
		now := instance(t, agent)
		return now != "" && now != before, now
	}, "the new svcwrap to take the registration over")
	consultest.WaitServiceStatus(t, agent.Client, "web", api.HealthPassing, wait)
	sv.trackTree(t)

	// A clean exit of its own: web exits 0 and stays down, out of Consul.
	assert.Contains(t, sv.ctl(t, "signal", "USR2", "web"), "web: signalled")
	rep.waitFor(t, "exit 0")
	sv.waitState(t, "EXITED")
	consultest.WaitServiceGone(t, agent.Client, "web", wait)
	assert.Contains(t, sv.log(), "exited: web (exit status 0; expected)")
	// supervisord restarts in the main-loop pass after the one that reaped
	// the exit, and serves requests between passes. So the answer after the
	// one that showed EXITED comes from a pass that already decided; a few
	// more make the point without a sleep.
	for range 3 {
		assert.Equal(t, "EXITED", sv.state(t), "web was restarted after exiting 0")
	}
	assert.Equal(t, 3, rep.count("start "), "starts:\n%s", rep)
}

// instance returns the svcwrap_instance meta of the "web" registration
// (host/pid/start of the svcwrap holding it), "" if there is none.
func instance(t *testing.T, agent *consultest.Agent) string {
	t.Helper()
	svc, _, err := agent.Client.Agent().Service("web", nil)
	if err != nil || svc == nil {
		return ""
	}
	return svc.Meta["svcwrap_instance"]
}

// What systemd applies itself, read from the unit.
func TestSystemdUnit_Settings(t *testing.T) {
	unit := readUnit(t, "svcwrap-web.service")
	assert.Equal(t, "mixed", unit.last("Service", "KillMode"),
		"SIGTERM must reach svcwrap alone, not web at the same time")
	assert.Contains(t, []string{"", "SIGTERM", "TERM", "15"}, unit.last("Service", "KillSignal"),
		"svcwrap's stop sequence starts on SIGTERM")
	assert.Equal(t, "on-failure", unit.last("Service", "Restart"))

	argv := splitCommandLine(t, unit.last("Service", "ExecStart"))
	budget := stopBudget(t, argv, unit.environment())
	timeout := systemdSeconds(t, unit.last("Service", "TimeoutStopSec"))
	assert.Greater(t, timeout, budget, "TimeoutStopSec must outlast svcwrap's stop (consul-timeout + drain + kill-timeout)")

	// The agent is wanted and started first, never required.
	assert.Contains(t, unit.list("Unit", "Wants"), "consul.service")
	assert.Contains(t, unit.list("Unit", "After"), "consul.service")
	for _, key := range []string{"Requires", "Requisite", "BindsTo", "PartOf"} {
		assert.NotContains(t, unit.list("Unit", key), "consul.service",
			"%s= would take web down with the agent", key)
	}

	// A stop leaves svcwrap with status 0 (web exits cleanly) or 143 (web
	// dies of the SIGTERM); both must count as success.
	clean := unit.cleanExitStatuses(t)
	assert.True(t, clean[0])
	assert.True(t, clean[128+int(syscall.SIGTERM)], "SuccessExitStatus= must list 143")
}

// ExecStart is a working svcwrap command line; it tells systemd READY=1 once
// web passes and STOPPING=1 at the stop, on a notify socket as systemd
// gives a Type=notify unit; SIGTERM to svcwrap alone (what KillMode=mixed
// sends) deregisters before web hears it, leaves nothing for the final
// SIGKILL, and ends in a status systemd counts as clean.
func TestSystemdUnit_ExecStart(t *testing.T) {
	t.Parallel()
	unit := readUnit(t, "svcwrap-web.service")
	clean := unit.cleanExitStatuses(t)
	argv := splitCommandLine(t, unit.last("Service", "ExecStart"))
	agent := consultest.StartAgent(t)

	for _, tc := range []struct {
		name     string
		termExit string // web's -term-exit
		want     int
	}{
		{"web-exits-0-on-SIGTERM", "0", 0},
		{"web-dies-of-SIGTERM", "-1", 128 + int(syscall.SIGTERM)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePort(t)
			rep := report(filepath.Join(t.TempDir(), "web.report"))
			web := webArgv("-listen", loopback(port), "-report", string(rep),
				"-agent", agent.HTTPAddr, "-service", "web", "-term-exit", tc.termExit)
			env := withAgent(t, unit.environment(), agent.HTTPAddr)
			notify := consultest.ListenNotify(t, nil)
			watchdog := systemdSeconds(t, unit.last("Service", "WatchdogSec"))
			env = append(env, "NOTIFY_SOCKET="+notify.Path, "WATCHDOG_USEC="+strconv.FormatInt(watchdog.Microseconds(), 10))
			// systemd starts a service in a session of its own, stdin /dev/null.
			svcwrap := startProcess(t, localArgv(t, argv, port, web), env)

			consultest.WaitServiceStatus(t, agent.Client, "web", api.HealthPassing, wait)
			notify.WaitFor(t, wait, func(f string) bool { return f == "READY=1" }, "READY=1 on the notify socket")
			assertHTTPCheck(t, agent, port)
			svc, _, err := agent.Client.Agent().Service("web", nil)
			require.NoError(t, err)
			assert.Equal(t, []string{"v1", "http"}, svc.Tags, "SVCWRAP_TAG from Environment=")
			tree := waitDescendants(t, svcwrap.pid(), rep.pid(t))

			svcwrap.signal(t, syscall.SIGTERM)
			code := svcwrap.wait(t)
			assert.Equal(t, tc.want, code, "svcwrap's stderr:\n%s", svcwrap.out)
			assert.Contains(t, notify.Fields(), "STOPPING=1")
			assert.True(t, clean[code], "status %d is a failure to systemd: Restart=on-failure would restart a stopped unit", code)
			assert.Equal(t, 1, rep.count("term registered=false"), "web heard SIGTERM while still registered:\n%s", rep)
			consultest.WaitServiceGone(t, agent.Client, "web", wait)
			waitAllGone(t, values(tree))
		})
	}
}

// What the container runtime applies itself, read from the Dockerfile.
func TestDockerfile_Settings(t *testing.T) {
	df := readDockerfile(t, "Dockerfile")
	require.NotEmpty(t, df.entrypoint, "ENTRYPOINT must be in exec form (a JSON array), so svcwrap is PID 1")
	assert.Equal(t, "/usr/local/bin/svcwrap", df.entrypoint[0])
	assert.Equal(t, "--", df.entrypoint[len(df.entrypoint)-1], "CMD is the wrapped command: `docker run IMAGE cmd...` replaces web alone")
	assert.NotEmpty(t, df.cmd)
	assert.Contains(t, []string{"", "SIGTERM", "TERM", "15"}, df.stopSignal, "svcwrap's stop sequence starts on SIGTERM")
	assert.False(t, df.healthcheck, "Consul's check is the health check")
	assert.NotEmpty(t, df.env["CONSUL_HTTP_ADDR"])

	budget := stopBudget(t, append(df.entrypoint, df.cmd...), df.env)
	assert.Less(t, budget, dockerStopGrace, "svcwrap's stop must fit in docker stop's default grace period")
	port := flagValue(t, df.entrypoint, "--port")
	assert.Contains(t, df.expose, port, "EXPOSE the port svcwrap checks")
}

// ENTRYPOINT + CMD as PID 1 of a new PID namespace, as a container runtime
// runs it: registered and passing, orphans reaped, and `docker stop`'s
// SIGTERM deregisters before web hears it; the status is web's.
func TestDockerfile_PID1(t *testing.T) {
	t.Parallel()
	need(t, "unshare")
	df := readDockerfile(t, "Dockerfile")
	require.NotEmpty(t, df.entrypoint)
	agent := consultest.StartAgent(t)

	for _, tc := range []struct {
		name     string
		termExit string
		want     int
	}{
		{"web-exits-0-on-SIGTERM", "0", 0},
		{"web-dies-of-SIGTERM", "-1", 128 + int(syscall.SIGTERM)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := freePort(t)
			rep := report(filepath.Join(t.TempDir(), "web.report"))
			web := webArgv("-listen", loopback(port), "-report", string(rep),
				"-agent", agent.HTTPAddr, "-service", "web", "-term-exit", tc.termExit, "-orphan")
			argv := localArgv(t, append(df.entrypoint, df.cmd...), port, web)
			env := withAgent(t, df.env, agent.HTTPAddr)
			// --kill-child only so that a crashed test leaves no namespace behind.
			unshare := startProcess(t, append([]string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child"}, argv...), env)

			// svcwrap is unshare's child, and PID 1 in its namespace.
			var pid1 proc
			consultest.Eventually(t, wait, func() (bool, string) {
				for _, p := range descendants(unshare.pid()) {
					if p.ppid == unshare.pid() && p.comm == "svcwrap" {
						pid1 = p
						return true, ""
					}
				}
				return false, fmt.Sprintf("descendants of unshare: %v", descendants(unshare.pid()))
			}, "svcwrap to start under unshare")
			assert.Equal(t, []int{pid1.pid, 1}, nsPids(t, pid1.pid), "svcwrap is PID 1 of the new namespace")

			consultest.WaitServiceStatus(t, agent.Client, "web", api.HealthPassing, wait)
			rep.waitFor(t, "orphaned")
			tree := waitDescendants(t, pid1.pid)

			// web left a sleep behind; it was reparented to PID 1. When it
			// exits, svcwrap reaps it: no zombie stays.
			var orphan proc
			for _, p := range tree {
				if p.ppid == pid1.pid && p.comm == "sleep" {
					orphan = p
				}
			}
			require.NotZero(t, orphan.pid, "no orphaned sleep under svcwrap: %v", tree)
			require.NoError(t, syscall.Kill(orphan.pid, syscall.SIGKILL))
			consultest.Eventually(t, wait, func() (bool, string) {
				p, ok := readProc(orphan.pid)
				return !ok || p.start != orphan.start, fmt.Sprintf("%+v", p)
			}, "the orphan to be reaped by svcwrap")

			// docker stop: STOPSIGNAL to PID 1.
			require.NoError(t, syscall.Kill(pid1.pid, syscall.SIGTERM))
			code := unshare.wait(t)
			assert.Equal(t, tc.want, code, "output:\n%s", unshare.out)
			assert.Equal(t, 1, rep.count("term registered=false"), "web heard SIGTERM while still registered:\n%s", rep)
			consultest.WaitServiceGone(t, agent.Client, "web", wait)
			waitAllGone(t, values(tree))
		})
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// need fails the test if a tool is missing: these tests are about the real
// managers, so they do not skip.
func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: run `make deps` (scripts/deps.sh installs it)", tool)
		}
	}
}

func values(m map[int]proc) []proc {
	out := make([]proc, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	return out
}
