package main

// Failover between Consul agents, end to end, on a real cluster: three
// servers and two client agents, c1 and c2, each on its own loopback address.
// The first agent of --consul is svcwrap's local one. The tests kill it as a
// crash would (SIGKILL, data directory kept, so that it comes back with what it
// had) and watch the servers' catalog with blocking queries, so that a state
// that lasts only a moment is seen as well as one that lasts.

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// clusterTiming makes heartbeats frequent, so that many of them fit in a few
// seconds of watching, and a dead agent is given up on quickly.
var clusterTiming = []string{"--ttl", "2s", "--heartbeat", "300ms", "--consul-timeout", "1s"}

// tenHeartbeats is a window that holds ten heartbeats of clusterTiming.
const tenHeartbeats = 3 * time.Second

// agentList is a --consul value: the agents' addresses in order.
func agentList(agents ...*consultest.Agent) string {
	addrs := make([]string, len(agents))
	for i, a := range agents {
		addrs[i] = a.HTTPAddr
	}
	return strings.Join(addrs, ",")
}

// notices returns the lines svcwrap logged at level NOTICE that hold word as
// a word (so that "moved" is not found in "removed") and each of also.
func notices(l *lines, word string, also ...string) []string {
	re := regexp.MustCompile(`\b` + regexp.QuoteMeta(word) + `\b`)
	var out []string
next:
	for _, line := range strings.Split(l.String(), "\n") {
		if !strings.Contains(line, "level=NOTICE") || !re.MatchString(line) {
			continue
		}
		for _, s := range also {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		out = append(out, line)
	}
	return out
}

var msgField = regexp.MustCompile(`\bmsg=("(?:[^"\\]|\\.)*"|\S+)`)

// saidOnce checks that svcwrap said something at level NOTICE with word and
// each of also, and said it once: each message among those lines appears
// once, not once per retry. (Another condition logged once, such as a
// persistent failure whose error quotes the same words, is a message of its
// own.)
func saidOnce(t *testing.T, l *lines, word string, also ...string) {
	t.Helper()
	found := notices(l, word, also...)
	if len(found) == 0 {
		t.Errorf("no NOTICE line with %q and %q; stderr:\n%s", word, also, l)
		return
	}
	seen := map[string]int{}
	for _, line := range found {
		msg := line
		if m := msgField.FindStringSubmatch(line); m != nil {
			msg = m[1]
		}
		seen[msg]++
	}
	for msg, n := range seen {
		if n != 1 {
			t.Errorf("NOTICE %s said %d times, want once; lines with %q and %q:\n%s", msg, n, word, also, strings.Join(found, "\n"))
		}
	}
}

// instancePID is the PID in a svcwrap_instance meta value,
// host/pid/start/pidns.
func instancePID(v string) int {
	parts := strings.Split(v, "/")
	if len(parts) != 4 {
		return 0
	}
	pid, _ := strconv.Atoi(parts[1])
	return pid
}

// describe says what a snapshot holds, node by node, for failure messages.
func describe(s consultest.ServiceSnapshot) string {
	if len(s.Entries) == 0 {
		return fmt.Sprintf("index %d: no instance", s.Index)
	}
	var parts []string
	for _, e := range s.Entries {
		var checks []string
		for _, c := range e.Checks {
			checks = append(checks, c.CheckID+"="+c.Status)
		}
		parts = append(parts, fmt.Sprintf("%s: address %q, checks %v, instance %q, created at %d",
			e.Node.Node, e.Service.Address, checks, e.Service.Meta["svcwrap_instance"], e.Service.CreateIndex))
	}
	return fmt.Sprintf("index %d: %s", s.Index, strings.Join(parts, "; "))
}

// holdsFor watches the catalog from now for d and returns the first fault
// that bad finds in a state recorded since from, "" if none. Every state
// up to the end of the window is looked at: the watch catches up first.
func holdsFor(t *testing.T, w *consultest.ServiceWatch, from time.Time, d time.Duration, bad func(consultest.ServiceSnapshot) string) string {
	t.Helper()
	find := func() string {
		for _, s := range w.Since(from) {
			if fault := bad(s); fault != "" {
				return fmt.Sprintf("%s (%s after the window opened; %s)", fault, s.At.Sub(from).Round(time.Millisecond), describe(s))
			}
		}
		return ""
	}
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if fault := find(); fault != "" {
			return fault
		}
		time.Sleep(20 * time.Millisecond) // polls the recorded states until the window ends
	}
	w.CatchUp(t, wait)
	return find()
}

// within polls cond until it holds or timeout passes. On timeout it reports
// the failure and the last state, and returns false; the test goes on, so
// that one run shows every finding.
func within(t *testing.T, timeout time.Duration, cond func() (bool, string), what string) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			t.Errorf("not within %s: %s; last state: %s", timeout, what, state)
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// agentHolds reports whether the agent has an instance of service
// registered, under its own ID or a guest ID (ID@host, see README: Several
// agents).
func agentHolds(a *consultest.Agent, service string) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	svcs, err := a.Client.Agent().ServicesWithFilterOpts("", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, err
	}
	for _, svc := range svcs {
		if svc.Service == service {
			return true, nil
		}
	}
	return false, nil
}

// guest is the service ID a svcwrap of this host registers under on agents
// other than the first of its --consul list.
func guest(id string) string {
	host, _ := os.Hostname()
	return id + "@" + host
}

// catalogCount is the number of instances of service in the servers' catalog.
func catalogCount(c *consultest.Cluster, service string) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	entries, _, err := c.Server(0).Client.Catalog().Service(service, "", (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return -1, err.Error()
	}
	var nodes []string
	for _, e := range entries {
		nodes = append(nodes, e.Node)
	}
	return len(entries), fmt.Sprintf("%d instances, on %v", len(entries), nodes)
}

// noCopyLeft checks that nothing of service is left anywhere: not in the
// catalog, not on either client agent; and that the child is gone.
func noCopyLeft(t *testing.T, c *consultest.Cluster, service string, childPID int) {
	t.Helper()
	for i := range c.Clients {
		a := c.ClientAgent(i)
		within(t, 10*time.Second, func() (bool, string) {
			held, err := agentHolds(a, service)
			if err != nil {
				return false, err.Error()
			}
			return !held, fmt.Sprintf("%s holds %s", a, service)
		}, fmt.Sprintf("%s to hold no copy of %s", a, service))
	}
	within(t, 10*time.Second, func() (bool, string) {
		n, state := catalogCount(c, service)
		return n == 0, state
	}, "no instance of "+service+" in the catalog")
	within(t, 10*time.Second, func() (bool, string) {
		return !alive(childPID), fmt.Sprintf("pid %d alive", childPID)
	}, fmt.Sprintf("the child (pid %d) to be gone", childPID))
}

// waitSettled waits until the check of service id on agent a is passing
// with svcwrap's output: the registration there is complete (a registration
// is two requests, the service and then the check's output), so that killing
// the agent next interrupts a heartbeat at worst, never the registration.
func waitSettled(t *testing.T, a *consultest.Agent, id string) {
	t.Helper()
	consultest.Eventually(t, wait, func() (bool, string) {
		status, output := checkStatus(t, a.Client, id)
		return status == api.HealthPassing && output != "", fmt.Sprintf("check %s %q", status, output)
	}, fmt.Sprintf("service %s on %s passing, with svcwrap's output", id, a))
}

// Finding 1. A (local agent c1) and B (local agent c2) wrap the same service
// with the same ID. When c1 dies, the ID on c2 is B's: A must leave it alone
// and registers there as a guest, under another ID. B's entry is B's alone:
// passing while B's child listens, critical when it does not however often
// A heartbeats, and still there after A's child exits.
func TestCluster_FailoverNeverTouchesAnotherInstance(t *testing.T) {
	c := consultest.StartCluster(t, 3, 2)
	c1, c2 := c.ClientAgent(0), c.ClientAgent(1)
	const checkID = "service:web"

	// B: passing while its child listens on port.
	port := strconv.Itoa(freePort(t))
	bArgs := append([]string{"--consul", agentList(c2, c1)}, clusterTiming...)
	bArgs = append(bArgs, "--port", port, "--check-interval", "100ms", "web", "--")
	b := start(t, nil, append(bArgs, helperArgv("listener", port)...)...)
	b.out.waitFor(t, "ready", wait)
	b.signal(syscall.SIGUSR1) // forwarded: B's child listens
	b.out.waitFor(t, "listening <nil>", wait)
	consultest.WaitServiceStatus(t, c2.Client, "web", api.HealthPassing, wait)

	// A: its child runs until told, then exits 7.
	aArgs := append([]string{"--consul", agentList(c1, c2)}, clusterTiming...)
	a := start(t, nil, append(append(aArgs, "web", "--"), helperArgv("exit-on-usr1", "7")...)...)
	a.out.waitFor(t, "ready", wait)
	waitSettled(t, c1, "web")

	watch := consultest.WatchService(t, c.Server(0).Client, "web")
	consultest.Eventually(t, wait, func() (bool, string) {
		s := watch.Last()
		ea, eb := s.Entry(c1.Node, "web"), s.Entry(c2.Node, "web")
		return ea != nil && eb != nil &&
			consultest.CheckStatus(ea, checkID) == api.HealthPassing &&
			consultest.CheckStatus(eb, checkID) == api.HealthPassing, describe(s)
	}, "A's and B's instances of web, passing, in the catalog")
	bEntry := watch.Last().Entry(c2.Node, "web")
	bInstance := bEntry.Service.Meta["svcwrap_instance"]
	require.Equal(t, b.cmd.Process.Pid, instancePID(bInstance), "B's entry names B: %q", bInstance)
	bCreated := bEntry.Service.CreateIndex
	// bIntact finds what is wrong with B's entry: gone, taken over, or
	// removed and registered again (which moves its CreateIndex, even if
	// the watch saw no moment without it).
	bIntact := func(s consultest.ServiceSnapshot) string {
		e := s.Entry(c2.Node, "web")
		switch {
		case e == nil:
			return "B's entry is gone"
		case e.Service.Meta["svcwrap_instance"] != bInstance:
			return fmt.Sprintf("B's entry names instance %q, not B (%q)", e.Service.Meta["svcwrap_instance"], bInstance)
		case e.Service.CreateIndex != bCreated:
			return fmt.Sprintf("B's entry was removed and registered again (created at index %d, first at %d)", e.Service.CreateIndex, bCreated)
		}
		return ""
	}
	bStatus := func(want, why string) func(consultest.ServiceSnapshot) string {
		return func(s consultest.ServiceSnapshot) string {
			if fault := bIntact(s); fault != "" {
				return fault
			}
			if got := consultest.CheckStatus(s.Entry(c2.Node, "web"), checkID); got != want {
				return fmt.Sprintf("B's check is %s %s", got, why)
			}
			return ""
		}
	}

	killed := time.Now()
	c1.Kill(t)

	// While B's child listens, B's check never leaves passing.
	if fault := holdsFor(t, watch, killed, tenHeartbeats,
		bStatus(api.HealthPassing, "while B's child listens")); fault != "" {
		t.Errorf("after c1 died: %s", fault)
	}

	// Once B's child stops listening, B's check turns critical and stays
	// so: A's heartbeats would turn it passing again.
	closed := time.Now()
	b.signal(syscall.SIGUSR2)
	b.out.waitFor(t, "closed", wait)
	var critical time.Time
	consultest.Eventually(t, wait, func() (bool, string) {
		for _, s := range watch.Since(closed) {
			if e := s.Entry(c2.Node, "web"); e != nil && consultest.CheckStatus(e, checkID) == api.HealthCritical {
				critical = s.At
				return true, ""
			}
		}
		return false, describe(watch.Last())
	}, "B's check to turn critical once B's child stops listening")
	if fault := holdsFor(t, watch, critical, tenHeartbeats,
		bStatus(api.HealthCritical, "though B's child no longer listens (A's heartbeat drives B's check)")); fault != "" {
		t.Errorf("after B's child stopped listening: %s", fault)
	}

	// A's child has run on all along, unregistered; it exits, and so does A,
	// with its code, leaving B's entry where it is.
	select {
	case <-a.done:
		t.Fatalf("A exited (code %d) while its child should run on; stderr:\n%s", a.code, a.errOut)
	default:
	}
	a.signal(syscall.SIGUSR1) // forwarded: A's child exits 7
	assert.Equal(t, 7, a.wait(wait), "A exits with its child's code; stderr:\n%s", a.errOut)
	watch.CatchUp(t, wait)
	for _, s := range watch.Snapshots() {
		if fault := bIntact(s); fault != "" {
			t.Errorf("%s, %s after c1 died: %s", fault, s.At.Sub(killed).Round(time.Millisecond), describe(s))
			break
		}
	}
	svc, _, err := c2.Client.Agent().Service("web", nil)
	if assert.NoError(t, err, "B's service on c2 after A exited") {
		assert.Equal(t, bInstance, svc.Meta["svcwrap_instance"], "B's service on c2 after A exited")
	}

	// A was on c2 meanwhile, as a guest: its own entry, A's instance, with
	// c1's address; and it said, once, that it moved.
	var guestSeen bool
	for _, s := range watch.Snapshots() {
		if e := s.Entry(c2.Node, guest("web")); e != nil {
			guestSeen = true
			assert.Equal(t, a.cmd.Process.Pid, instancePID(e.Service.Meta["svcwrap_instance"]), "the guest entry on c2 names A")
			assert.Equal(t, c1.BindIP(), e.Service.Address, "the guest entry on c2 has c1's address")
			break
		}
	}
	assert.True(t, guestSeen, "A registered through c2 as %s", guest("web"))
	a.errOut.waitEOF(t, wait)
	saidOnce(t, a.errOut, "moved", c1.HTTPAddr, c2.HTTPAddr)

	b.signal(syscall.SIGTERM)
	b.wait(wait)
	consultest.WaitServiceGone(t, c2.Client, "web", wait)
}

// Findings 2, 3 and 4. svcwrap alone, local agent c1. When c1 dies it moves
// to c2, says so, and its entry there keeps c1's address. When c1 comes back
// with the copy it had, svcwrap removes that copy and says so, and stays with
// c2: one instance in the catalog, whatever --deregister-after; none once it
// has stopped.
func TestCluster_FailoverLeavesOneEntry(t *testing.T) {
	c := consultest.StartCluster(t, 3, 2)
	c1, c2 := c.ClientAgent(0), c.ClientAgent(1)
	c1Index := c.Servers // c1 is the first client agent

	for _, after := range []string{"1m", "0"} {
		t.Run("deregister-after-"+after, func(t *testing.T) {
			if !c1.Running() { // left down by a run that failed half-way
				c.StartAgent(t, c1Index)
			}
			service := "web-" + after // each run its own service: nothing left by another
			guestCheck := "service:" + guest(service)
			args := append([]string{"--consul", agentList(c1, c2), "--deregister-after", after}, clusterTiming...)
			a := start(t, nil, append(append(args, service, "--"), helperArgv("pid")...)...)
			a.out.waitFor(t, "ready", wait)
			child := childPid(t, a)

			watch := consultest.WatchService(t, c.Server(0).Client, service)
			consultest.Eventually(t, wait, func() (bool, string) {
				s := watch.Last()
				e := s.OnNode(c1.Node)
				return len(s.Entries) == 1 && e != nil && e.Checks.AggregatedStatus() == api.HealthPassing, describe(s)
			}, "one instance, through c1, passing in the catalog")
			waitSettled(t, c1, service)

			// c1 dies: the entry appears through c2, passing, with c1's
			// address from its first moment.
			killed := time.Now()
			c1.Kill(t)
			consultest.Eventually(t, wait, func() (bool, string) {
				s := watch.Last()
				e := s.Entry(c2.Node, guest(service))
				return e != nil && consultest.CheckStatus(e, guestCheck) == api.HealthPassing, describe(s)
			}, "the instance through c2, passing, after c1 died")
			for _, s := range watch.Since(killed) {
				if e := s.Entry(c2.Node, guest(service)); e != nil {
					assert.Equal(t, c1.BindIP(), e.Service.Address, "the address of the entry through c2 is c1's node's, not c2's (%s)", c2.BindIP())
					assert.Equal(t, a.cmd.Process.Pid, instancePID(e.Service.Meta["svcwrap_instance"]), "the entry through c2 names A")
					break
				}
			}

			// c1 comes back with the copy it had: exactly one instance soon,
			// and from then on, through c2 (no failback).
			c.StartAgent(t, c1Index)
			var one time.Time
			if within(t, 15*time.Second, func() (bool, string) {
				s := watch.Last()
				one = s.At
				return len(s.Entries) == 1, describe(s)
			}, "exactly one instance of "+service+" once c1 is back") {
				if fault := holdsFor(t, watch, one, tenHeartbeats, func(s consultest.ServiceSnapshot) string {
					switch e := s.Entry(c2.Node, guest(service)); {
					case len(s.Entries) != 1:
						return fmt.Sprintf("%d instances", len(s.Entries))
					case e == nil:
						return "the instance is not the one through c2"
					case e.Service.Address != c1.BindIP():
						return fmt.Sprintf("the instance's address is %q, not c1's %s", e.Service.Address, c1.BindIP())
					}
					return ""
				}); fault != "" {
					t.Errorf("once c1 was back: %s", fault)
				}
				held, err := agentHolds(c1, service)
				if assert.NoError(t, err) {
					assert.False(t, held, "c1 still holds its copy of %s", service)
				}
			}

			// Stopped: nothing left anywhere.
			a.signal(syscall.SIGTERM)
			assert.Equal(t, 128+int(syscall.SIGTERM), a.wait(wait), "stderr:\n%s", a.errOut)
			noCopyLeft(t, c, service, child)

			// It said so, once each: moved (naming both agents), removed
			// (naming c1).
			a.errOut.waitEOF(t, wait)
			saidOnce(t, a.errOut, "moved", c1.HTTPAddr, c2.HTTPAddr)
			saidOnce(t, a.errOut, "removed", c1.HTTPAddr)
		})
	}
}

// At stop, svcwrap deregisters from every agent that may hold a copy, not
// only the one it is registered with. Here c1, the agent svcwrap left, is
// back with svcwrap's old copy when the stop signal arrives, before svcwrap
// has looked at c1 again: svcwrap is frozen (SIGSTOP) while c1 comes back, so
// that its sweep of c1 (about every second) cannot come first, and the stop
// signal is pending when it resumes. (The order kill, move, return, removal,
// stop is TestCluster_FailoverLeavesOneEntry's.)
func TestCluster_StopRemovesEveryCopy(t *testing.T) {
	c := consultest.StartCluster(t, 3, 2)
	c1, c2 := c.ClientAgent(0), c.ClientAgent(1)
	c1Index := c.Servers

	args := append([]string{"--consul", agentList(c1, c2), "--deregister-after", "0"}, clusterTiming...)
	a := start(t, nil, append(append(args, "web", "--"), helperArgv("pid")...)...)
	a.out.waitFor(t, "ready", wait)
	child := childPid(t, a)
	waitSettled(t, c1, "web")

	c1.Kill(t)
	waitSettled(t, c2, guest("web")) // moved, and not frozen mid-registration below

	// Freeze svcwrap, bring c1 back with the old copy.
	pid := a.cmd.Process.Pid
	a.signal(syscall.SIGSTOP)
	consultest.Eventually(t, wait, func() (bool, string) {
		state := procState(pid)
		return state == "T", "state " + state
	}, "svcwrap to be stopped")
	c.StartAgent(t, c1Index)
	consultest.Eventually(t, wait, func() (bool, string) {
		held, err := agentHolds(c1, "web")
		return err == nil && held, fmt.Sprintf("held %v, error %v", held, err)
	}, "c1 to come back with svcwrap's old copy")

	// The stop signal, then the thaw: svcwrap stops with the copy on c1.
	a.signal(syscall.SIGTERM)
	a.signal(syscall.SIGCONT)
	assert.Equal(t, 128+int(syscall.SIGTERM), a.wait(wait), "stderr:\n%s", a.errOut)

	// svcwrap has exited: no agent holds a copy, at once.
	for _, ag := range []*consultest.Agent{c1, c2} {
		held, err := agentHolds(ag, "web")
		if assert.NoError(t, err) {
			assert.False(t, held, "%s still holds a copy of web after svcwrap exited; stderr:\n%s", ag, a.errOut)
		}
	}
	noCopyLeft(t, c, "web", child)
}

// procState is the state letter of process pid (R, S, T, Z, ...), "" if it
// is gone.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+3 > len(s) {
		return ""
	}
	return s[i+2 : i+3]
}
