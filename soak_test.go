//go:build soak

package main

// The randomized fault soak: run after run, svcwrap wraps a child that ends in
// one of several ways, is itself signalled or killed, while its Consul agent
// is restarted, killed, paused, or (on a real cluster) lost and found again.
// After each run: svcwrap's exit code is the one the child's end implies, the
// catalog holds what it should, and no process of the run is left.
//
// It sits behind the build tag `soak` and runs alone, with -v, so that its
// counts are printed whether it passes or not:
//
//	SVCWRAP_SOAK_RUNS=12 go test -race -tags soak -run '^TestSoak$' -count=1 -v .
//
// Every run is drawn from its own seed. SVCWRAP_SOAK_SEED=S makes S the first
// run's seed (and the rest follow from it); with SVCWRAP_SOAK_RUNS=1 it
// replays that one run (its scenario, not the exact interleaving of svcwrap,
// the agents and the kernel). SVCWRAP_SOAK_DURATION (e.g. 30m) starts no run
// after that long; SVCWRAP_SOAK_AGENT=failover,paused-at-stop draws only
// those agent faults.

import (
	"bytes"
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// The timings every run uses: short, so that a run takes seconds.
const (
	soakService       = "soak"
	soakConsulTimeout = time.Second
	soakKillTimeout   = time.Second
	// soakStopSlack is what a stop may take beyond --consul-timeout +
	// --kill-timeout when the agent hangs: process start-up and exit, the
	// race detector, a loaded machine.
	soakStopSlack = time.Second
	// soakWait bounds what must happen promptly (a registration, an exit).
	soakWait = 20 * time.Second
	// soakGone bounds the time for a deregistration to reach every agent
	// and the catalog, and for the processes of a run to be gone.
	soakGone = 5 * time.Second
	// soakSettle bounds the time for svcwrap to be back to exactly one
	// passing entry once an agent it left has returned.
	soakSettle = 10 * time.Second
	// soakLapse is the margin past the TTL for the agent to mark an
	// abandoned check critical.
	soakLapse = 3 * time.Second
)

// soakEnd is how the child ends.
type soakEnd int

const (
	soakExit         soakEnd = iota // exits by itself with a code 0-3
	soakSignal                      // dies by itself from a signal
	soakUntilStopped                // runs until a stop signal kills it
	soakIgnoresTerm                 // ignores SIGTERM and SIGINT: only SIGKILL ends it
	numSoakEnds
)

var soakEndNames = [...]string{"exit", "signal", "until-stopped", "ignores-term"}

func (e soakEnd) String() string { return soakEndNames[e] }

// soakHit is what the soak does to svcwrap.
type soakHit int

const (
	hitNothing soakHit = iota // nothing (a child that does not end by itself is then stopped with SIGTERM)
	hitHUP                    // a SIGHUP, to be forwarded (then as hitNothing)
	hitUSR1                   // a SIGUSR1, to be forwarded (then as hitNothing)
	hitTERM                   // SIGTERM
	hitINT                    // SIGINT
	hitTERM2                  // SIGTERM, and a second one once the child has been sent the first
	hitKILL                   // SIGKILL of svcwrap itself
	numSoakHits
)

var soakHitNames = [...]string{"nothing", "SIGHUP", "SIGUSR1", "SIGTERM", "SIGINT", "SIGTERM twice", "SIGKILL"}

func (h soakHit) String() string { return soakHitNames[h] }

// soakFault is what happens to the agent while the child runs.
type soakFault int

const (
	faultNothing   soakFault = iota
	faultRestart             // the dev agent restarts (and forgets every service)
	faultKillStart           // the dev agent is SIGKILLed, then started again
	faultPauseRun            // the dev agent hangs (SIGSTOP) while the child runs, then resumes
	faultPauseStop           // the dev agent hangs while svcwrap stops, then resumes
	faultFailover            // cluster: the client agent svcwrap uses first is SIGKILLed, then returns
	numSoakFaults
)

var soakFaultNames = [...]string{"nothing", "restart", "kill+start", "pause+resume", "paused-at-stop", "failover"}

func (f soakFault) String() string { return soakFaultNames[f] }

// soakHits lists the hits that make sense for a child's end. A child that
// ends by itself is not also stopped (its end would be the stop's); a second
// SIGTERM goes only to a child the first one cannot kill, so that which of
// the two ended it is never a race.
func soakHits(e soakEnd) []soakHit {
	switch e {
	case soakExit, soakSignal:
		return []soakHit{hitNothing, hitHUP, hitUSR1, hitKILL}
	case soakUntilStopped:
		return []soakHit{hitNothing, hitHUP, hitUSR1, hitTERM, hitINT, hitKILL}
	default:
		return []soakHit{hitNothing, hitHUP, hitUSR1, hitTERM, hitINT, hitTERM2, hitKILL}
	}
}

// soakDeathSignals are the signals the child may die from by itself.
var soakDeathSignals = []syscall.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGKILL, syscall.SIGTERM}

// soakScenario is one run, drawn from its seed alone.
type soakScenario struct {
	seed  uint64
	fault soakFault
	end   soakEnd
	n     int  // the exit code (soakExit) or the signal (soakSignal)
	port  bool // svcwrap gets --port and the child listens on it
	hit   soakHit
	ttl   time.Duration
}

func newSoakScenario(seed uint64) soakScenario {
	r := rand.New(rand.NewPCG(seed, 0x736f616b))
	s := soakScenario{seed: seed}
	s.fault = soakFault(r.IntN(int(numSoakFaults)))
	s.end = soakEnd(r.IntN(int(numSoakEnds)))
	switch s.end {
	case soakExit:
		s.n = r.IntN(4)
	case soakSignal:
		s.n = int(soakDeathSignals[r.IntN(len(soakDeathSignals))])
	}
	s.port = r.IntN(2) == 0
	hits := soakHits(s.end)
	s.hit = hits[r.IntN(len(hits))]
	s.ttl = time.Duration(1000+250*r.IntN(5)) * time.Millisecond
	return s
}

// child names the child's behaviour for the report: "exit 2", "signal 15".
func (s soakScenario) child() string {
	switch s.end {
	case soakExit, soakSignal:
		return fmt.Sprintf("%s %d", s.end, s.n)
	}
	return s.end.String()
}

func (s soakScenario) String() string {
	port := ""
	if s.port {
		port = " --port"
	}
	return fmt.Sprintf("child %s%s, svcwrap %s, agent %s, ttl %s", s.child(), port, s.hit, s.fault, s.ttl)
}

// wantExit is the end svcwrap must report: "exit N", or "killed" when the
// soak SIGKILLed svcwrap itself.
func (s soakScenario) wantExit() string {
	switch {
	case s.hit == hitKILL:
		return "killed"
	case s.end == soakExit:
		return fmt.Sprintf("exit %d", s.n)
	case s.end == soakSignal:
		return fmt.Sprintf("exit %d", 128+s.n)
	case s.end == soakIgnoresTerm:
		return "exit 137" // SIGKILLed by svcwrap: after the kill timeout, or at the second SIGTERM
	case s.hit == hitINT:
		return "exit 130"
	default:
		return "exit 143"
	}
}

// soakPlan draws the runs: the first from seed, the rest from a generator
// seeded with it. The agent faults (those of only; nil: all) are dealt from
// shuffled decks, so that each comes up once in every len(only) runs, even
// in a short soak.
func soakPlan(seed uint64, runs int, only []soakFault) []soakScenario {
	if len(only) == 0 {
		for f := range numSoakFaults {
			only = append(only, f)
		}
	}
	r := rand.New(rand.NewPCG(seed, 0x706c616e))
	var plan []soakScenario
	if first := newSoakScenario(seed); slices.Contains(only, first.fault) {
		plan = append(plan, first)
	}
	var deck []soakFault
	for dealt := 0; len(plan) < runs; dealt++ {
		if len(deck) == 0 {
			for _, i := range r.Perm(len(only)) {
				if dealt > 0 || len(plan) == 0 || only[i] != plan[0].fault { // the first run dealt its own
					deck = append(deck, only[i])
				}
			}
			if len(deck) == 0 {
				continue
			}
		}
		want := deck[0]
		deck = deck[1:]
		for {
			if s := newSoakScenario(r.Uint64()); s.fault == want {
				plan = append(plan, s)
				break
			}
		}
	}
	return plan
}

func TestSoak(t *testing.T) {
	seed, runs, duration, only := soakSettings(t)
	plan := soakPlan(seed, runs, only)
	filter := ""
	if v := os.Getenv("SVCWRAP_SOAK_AGENT"); v != "" {
		filter = " SVCWRAP_SOAK_AGENT=" + v
	}
	fmt.Printf("soak: %d runs from seed %d (replay: SVCWRAP_SOAK_SEED=%d SVCWRAP_SOAK_RUNS=%d%s)\n", runs, seed, seed, runs, filter)

	env := &soakEnv{}
	if slices.ContainsFunc(plan, func(s soakScenario) bool { return s.fault != faultFailover }) {
		env.dev = consultest.StartAgent(t)
	}
	if slices.ContainsFunc(plan, func(s soakScenario) bool { return s.fault == faultFailover }) {
		env.startCluster(t)
	}

	rep := &soakReport{seed: seed, began: time.Now()}
	defer rep.print()
	for i, s := range plan {
		if duration > 0 && time.Since(rep.began) > duration {
			break
		}
		var res soakResult
		ok := t.Run(fmt.Sprintf("run%03d-seed%d", i, s.seed), func(t *testing.T) {
			res.stage = "start"
			env.run(t, i, s, &res)
		})
		rep.add(i, s, res, ok)
	}
}

// soakSettings reads SVCWRAP_SOAK_SEED, _RUNS, _DURATION and _AGENT (a
// comma-separated list of the agent faults to draw, e.g. "failover").
func soakSettings(t *testing.T) (seed uint64, runs int, duration time.Duration, only []soakFault) {
	seed, runs = rand.Uint64(), 12
	var err error
	if v := os.Getenv("SVCWRAP_SOAK_SEED"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SVCWRAP_SOAK_SEED=%q: %v", v, err)
		}
	}
	if v := os.Getenv("SVCWRAP_SOAK_RUNS"); v != "" {
		if runs, err = strconv.Atoi(v); err != nil || runs < 1 {
			t.Fatalf("SVCWRAP_SOAK_RUNS=%q: want a positive number", v)
		}
	}
	if v := os.Getenv("SVCWRAP_SOAK_DURATION"); v != "" {
		if duration, err = time.ParseDuration(v); err != nil {
			t.Fatalf("SVCWRAP_SOAK_DURATION=%q: %v", v, err)
		}
	}
	for _, name := range strings.FieldsFunc(os.Getenv("SVCWRAP_SOAK_AGENT"), func(r rune) bool { return r == ',' }) {
		i := slices.Index(soakFaultNames[:], strings.TrimSpace(name))
		if i < 0 {
			t.Fatalf("SVCWRAP_SOAK_AGENT: %q is none of %v", name, soakFaultNames)
		}
		only = append(only, soakFault(i))
	}
	return seed, runs, duration, only
}

// soakEnv is what lives for the whole soak: a dev agent for the faults of a
// single agent, and a cluster of 3 servers and 2 clients for failover, with a
// bystander service on each client: another instance of the same service,
// which no run may touch.
type soakEnv struct {
	dev        *consultest.Agent
	cluster    *consultest.Cluster
	bystanders []string // per client agent
	clients    map[*consultest.Agent]*api.Client
}

func (e *soakEnv) startCluster(t *testing.T) {
	e.cluster = consultest.StartCluster(t, 3, 2)
	for i := range e.cluster.Clients {
		a := e.cluster.ClientAgent(i)
		id := "soak-bystander-" + a.Node
		reg := &api.AgentServiceRegistration{ID: id, Name: soakService, Port: 1000 + i}
		if err := e.client(a).Agent().ServiceRegister(reg); err != nil {
			t.Fatalf("register bystander on %s: %v", a, err)
		}
		e.bystanders = append(e.bystanders, id)
	}
}

// soakTarget is what one run's svcwrap talks to.
type soakTarget struct {
	agents  []*consultest.Agent // in svcwrap's --consul order
	clients []*api.Client       // one per agent, each request bounded
	catalog *api.Client         // a server, never faulted: the catalog's truth
	start   func(t testing.TB, i int)
}

func (e *soakEnv) target(s soakScenario) *soakTarget {
	if s.fault != faultFailover {
		return &soakTarget{
			agents:  []*consultest.Agent{e.dev},
			clients: []*api.Client{e.client(e.dev)},
			catalog: e.client(e.dev),
			start:   func(t testing.TB, _ int) { e.dev.Restart(t) },
		}
	}
	c := e.cluster
	return &soakTarget{
		agents:  []*consultest.Agent{c.ClientAgent(0), c.ClientAgent(1)},
		clients: []*api.Client{e.client(c.ClientAgent(0)), e.client(c.ClientAgent(1))},
		catalog: e.client(c.Server(0)),
		start:   func(t testing.TB, i int) { c.StartAgent(t, c.Servers+i) },
	}
}

// client speaks to a's HTTP API with every request bounded, so that a
// paused agent cannot hang the soak. Built from scratch, like consultest's,
// so that no CONSUL_HTTP_* variable leaks in. An agent keeps its address
// when it restarts: one client per agent serves the whole soak.
func (e *soakEnv) client(a *consultest.Agent) *api.Client {
	if c, ok := e.clients[a]; ok {
		return c
	}
	c, err := api.NewClient(&api.Config{
		Address:    a.HTTPAddr,
		Scheme:     "http",
		HttpClient: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone(), Timeout: 2 * time.Second},
	})
	if err != nil {
		panic(err) // cannot happen for an http address
	}
	if e.clients == nil {
		e.clients = map[*consultest.Agent]*api.Client{}
	}
	e.clients[a] = c
	return c
}

// soakEntry is one place that holds a run's service: an agent's local state or
// the catalog, with its aggregated status.
type soakEntry struct{ where, status string }

func (e soakEntry) String() string { return e.where + "=" + e.status }

// entries lists where id is registered: on every agent that runs, and in the
// catalog. An agent that does not answer is reported as an error.
// soakIDOn is the service ID svcwrap registers id under on agent i of its
// list: its own on the first, a guest ID on the others (README: Several
// agents).
func soakIDOn(i int, id string) string {
	if i == 0 {
		return id
	}
	host, _ := os.Hostname()
	return id + "@" + host
}

func (tg *soakTarget) entries(id string) (local, catalog []soakEntry, err error) {
	for i, a := range tg.agents {
		if !a.Running() {
			continue
		}
		_, info, err := tg.clients[i].Agent().AgentHealthServiceByID(soakIDOn(i, id))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", a, err)
		}
		if info != nil {
			local = append(local, soakEntry{"agent " + a.Node, info.AggregatedStatus})
		}
	}
	svcs, _, err := tg.catalog.Health().Service(soakService, "", false, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: %w", err)
	}
	for _, s := range svcs {
		if s.Service.ID == id || s.Service.ID == soakIDOn(1, id) {
			catalog = append(catalog, soakEntry{"catalog " + s.Node.Node, s.Checks.AggregatedStatus()})
		}
	}
	return local, catalog, nil
}

// soakResult is what the report needs from a run.
type soakResult struct {
	stage    string   // the step under way, for a run that ended early
	outcome  string   // e.g. "exit 2, gone"
	failures []string // the failed assertions
}

// soakRun is one run under way.
type soakRun struct {
	t      *testing.T
	s      soakScenario
	tg     *soakTarget
	id     string
	marker string // SOAK_RUN=…, in the environment of svcwrap and the child
	res    *soakResult
	p      *soakProc
	paused *consultest.Agent
}

// fail records a failed assertion; the run goes on.
func (r *soakRun) fail(format string, args ...any) {
	r.t.Helper()
	msg := fmt.Sprintf(format, args...)
	r.res.failures = append(r.res.failures, msg)
	r.t.Errorf("%s: %s", r.s, msg)
}

// fatal records a failure the run cannot go on from.
func (r *soakRun) fatal(format string, args ...any) {
	r.t.Helper()
	msg := fmt.Sprintf(format, args...)
	r.res.failures = append(r.res.failures, msg)
	r.t.Fatalf("%s: %s", r.s, msg)
}

func (r *soakRun) stage(s string) { r.res.stage = s }

func (e *soakEnv) run(t *testing.T, i int, s soakScenario, res *soakResult) {
	t.Logf("%s", s)
	r := &soakRun{
		t: t, s: s, tg: e.target(s), res: res,
		id:     fmt.Sprintf("soak-%d-%d", os.Getpid(), i),
		marker: fmt.Sprintf("SOAK_RUN=%d-%d", os.Getpid(), i),
	}
	t.Cleanup(r.cleanup)
	first := r.tg.agents[0]

	// Start svcwrap and wait until the child is ready and passing.
	r.stage("start")
	r.start()
	if ok, state := soakWithin(soakWait, func() (bool, string) { return r.p.out.count("ready") > 0 || r.p.exited(), r.p.out.String() }); !ok || r.p.exited() {
		r.fatal("the child never said ready; stdout:\n%s\nstderr:\n%s", state, r.p.errOut)
	}
	r.waitPassing(0, "at start")

	// The agent's fault while the child runs.
	switch s.fault {
	case faultRestart:
		r.stage("agent restart")
		first.Restart(t)
		r.waitPassing(0, "after the agent restarted")
	case faultKillStart:
		r.stage("agent kill")
		first.Kill(t)
		r.tg.start(t, 0)
		r.waitPassing(0, "after the agent was killed and started again")
	case faultPauseRun:
		r.stage("agent pause")
		r.pauseUntilNoticed()
		r.resume()
		r.waitPassing(0, "after the agent resumed")
	case faultFailover:
		r.stage("failover")
		first.Kill(t)
		r.waitPassing(1, "on the second agent once the first was killed")
		r.stage("first agent back")
		r.tg.start(t, 0)
		r.waitOneEntry()
	}

	// A signal svcwrap forwards.
	if s.hit == hitHUP || s.hit == hitUSR1 {
		r.stage("forward")
		sig := syscall.SIGHUP
		if s.hit == hitUSR1 {
			sig = syscall.SIGUSR1
		}
		r.signal(sig)
		if ok, _ := soakWithin(soakWait, func() (bool, string) { return r.p.out.count("got "+sig.String()) > 0, "" }); !ok {
			r.fail("%s was not forwarded to the child within %s", sig, soakWait)
		}
	}

	// The end.
	r.stage("end")
	if s.fault == faultPauseStop {
		first.Pause(t)
		r.paused = first
	}
	began := time.Now()
	r.end()
	got := r.wait(soakWait)
	took := time.Since(began)
	bound := soakConsulTimeout + soakKillTimeout + soakStopSlack
	if s.fault == faultPauseStop {
		t.Logf("with the agent hung, svcwrap ended %s after the end began", took.Round(time.Millisecond))
	}
	if s.fault == faultPauseStop && s.hit != hitKILL && took > bound {
		r.fail("with the agent hung, the stop took %s: more than --consul-timeout + --kill-timeout + %s = %s",
			took.Round(time.Millisecond), soakStopSlack, bound)
	}
	lapseFrom := time.Now()
	if r.paused != nil {
		r.resume()
		lapseFrom = time.Now()
	}

	// svcwrap's exit code is the one the child's end implies.
	r.stage("assert")
	if want := s.wantExit(); got != want {
		r.fail("svcwrap ended with %s, want %s; stderr:\n%s", got, want, r.p.errOut)
	}
	if s.hit == hitHUP || s.hit == hitUSR1 {
		sig := syscall.SIGHUP
		if s.hit == hitUSR1 {
			sig = syscall.SIGUSR1
		}
		soakWithin(soakGone, func() (bool, string) { return soakEOF(r.p.out), "" })
		if n := r.p.out.count("got " + sig.String()); n != 1 {
			r.fail("the child got %s %d times, want once", sig, n)
		}
	}

	// No process of the run is left.
	if ok, state := soakWithin(soakGone, func() (bool, string) { return r.leftProcesses() == "", r.leftProcesses() }); !ok {
		r.fail("processes of the run still running %s after svcwrap ended: %s", soakGone, state)
	}

	// The catalog holds what it should.
	exitDesc := got
	if s.end == soakIgnoresTerm && s.hit != hitKILL {
		exitDesc += " (SIGKILLed)"
	}
	r.res.outcome = exitDesc + ", service " + r.checkCatalog(lapseFrom)
	if s.fault == faultFailover {
		r.checkBystanders(e)
	}
	r.stage("done")
}

// start runs svcwrap around the soak child.
func (r *soakRun) start() {
	s := r.s
	args := []string{"-vvv", "--id", r.id, "--ttl", s.ttl.String(),
		"--kill-timeout", soakKillTimeout.String(), "--consul-timeout", soakConsulTimeout.String()}
	var addrs []string
	for _, a := range r.tg.agents {
		addrs = append(addrs, a.HTTPAddr)
	}
	args = append(args, "--consul", strings.Join(addrs, ","))
	port := "0"
	if s.port {
		port = strconv.Itoa(freePort(r.t))
		args = append(args, "--port", port)
	}
	end := map[soakEnd]string{soakExit: "exit", soakSignal: "signal", soakUntilStopped: "run", soakIgnoresTerm: "ignore-term"}[s.end]
	args = append(args, soakService, "--")
	args = append(args, helperArgv("soak", end, strconv.Itoa(s.n), port)...)

	// svcwrap's own environment, without SVCWRAP_* (the soak's settings,
	// SVCWRAP_CONSUL) and CONSUL_* that would change what it does.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SVCWRAP_") && !strings.HasPrefix(kv, "CONSUL_") {
			env = append(env, kv)
		}
	}
	// svcwrap and the child are race-detector builds, which sleep a second
	// before an exit with status 0 (GORACE atexit_sleep_ms), and would
	// stretch every stop measured here.
	env = append(env, "GORACE=atexit_sleep_ms=0", r.marker)
	r.p = startSoakProc(r.t, env, args)
}

// end ends the run as the scenario says.
func (r *soakRun) end() {
	switch {
	case r.s.hit == hitKILL:
		r.signal(syscall.SIGKILL)
	case r.s.end == soakExit || r.s.end == soakSignal:
		if _, err := r.p.stdin.Write([]byte("end\n")); err != nil {
			r.fatal("tell the child to end: %v", err)
		}
	case r.s.hit == hitINT:
		r.signal(syscall.SIGINT)
	case r.s.hit == hitTERM2:
		// The second SIGTERM goes once the first has reached the child,
		// which ignores it: sent while the stop still waits for Consul, it
		// would give up on Consul (README: a second SIGTERM kills at once),
		// and whether the deregistration had been done by then would be a
		// race of milliseconds. That case has tests of its own
		// (TestFaultStop_SecondSignalKillsAtOnce and wrapper's).
		before := r.p.errOut.count("forwarded stop signal")
		r.signal(syscall.SIGTERM)
		if ok, _ := soakWithin(soakWait, func() (bool, string) { return r.p.errOut.count("forwarded stop signal") > before, "" }); !ok {
			r.fail("svcwrap did not log that it forwarded the stop signal within %s", soakWait)
		}
		r.signal(syscall.SIGTERM)
	default:
		r.signal(syscall.SIGTERM)
	}
}

func (r *soakRun) signal(sig syscall.Signal) {
	if err := r.p.cmd.Process.Signal(sig); err != nil {
		r.fatal("send %s to svcwrap: %v", sig, err)
	}
}

// wait returns how svcwrap ended: "exit N" or "killed".
func (r *soakRun) wait(timeout time.Duration) string {
	select {
	case <-r.p.done:
	case <-time.After(timeout):
		r.fatal("svcwrap still running %s after the end; stderr:\n%s", timeout, r.p.errOut)
	}
	ws := r.p.state.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled() && ws.Signal() == syscall.SIGKILL:
		return "killed"
	case ws.Signaled():
		return "signal " + ws.Signal().String()
	}
	return fmt.Sprintf("exit %d", ws.ExitStatus())
}

// waitPassing waits until agent i holds the run's service, passing.
func (r *soakRun) waitPassing(i int, when string) {
	r.t.Helper()
	ok, state := soakWithin(soakWait, func() (bool, string) {
		_, info, err := r.tg.clients[i].Agent().AgentHealthServiceByID(soakIDOn(i, r.id))
		switch {
		case err != nil:
			return false, err.Error()
		case info == nil:
			return false, "not registered"
		}
		return info.AggregatedStatus == api.HealthPassing, info.AggregatedStatus
	})
	if !ok {
		r.fatal("%s: not passing on %s within %s (%s); stderr:\n%s", when, r.tg.agents[i], soakWait, state, r.p.errOut)
	}
}

// pauseUntilNoticed pauses the first agent until svcwrap has seen a request
// to it fail (a log line that names the agent and an error).
func (r *soakRun) pauseUntilNoticed() {
	a := r.tg.agents[0]
	before := soakCount(r.p.errOut, a.HTTPAddr, "error")
	a.Pause(r.t)
	r.paused = a
	if ok, _ := soakWithin(soakWait, func() (bool, string) { return soakCount(r.p.errOut, a.HTTPAddr, "error") > before, "" }); !ok {
		r.fail("svcwrap logged no failed request to the paused agent within %s", soakWait)
	}
}

func (r *soakRun) resume() {
	if r.paused != nil {
		r.paused.Resume(r.t)
		r.paused = nil
	}
}

// waitOneEntry waits, once the first agent is back, until the service has
// exactly one entry, passing: the copy the returned agent restored from its
// data directory must not stay beside the one svcwrap keeps.
func (r *soakRun) waitOneEntry() {
	ok, state := soakWithin(soakSettle, func() (bool, string) {
		local, catalog, err := r.tg.entries(r.id)
		if err != nil {
			return false, err.Error()
		}
		state := fmt.Sprintf("%v %v", local, catalog)
		one := len(local) == 1 && len(catalog) == 1 && local[0].status == api.HealthPassing && catalog[0].status == api.HealthPassing
		return one, state
	})
	if !ok {
		r.fail("after the first agent returned: not exactly one passing entry within %s: %s", soakSettle, state)
	}
}

// checkCatalog checks what the catalog holds after the run and returns what
// became of the service: "gone", or "left for the reaper" when svcwrap could
// not deregister (it was SIGKILLed, or its agent hung while it stopped), in
// which case the soak deregisters the leftover itself: Consul's reaper needs
// a minute at least.
func (r *soakRun) checkCatalog(lapseFrom time.Time) string {
	mayLeave := r.s.hit == hitKILL || r.s.fault == faultPauseStop
	if !mayLeave {
		ok, state := soakWithin(soakGone, func() (bool, string) {
			local, catalog, err := r.tg.entries(r.id)
			if err != nil {
				return false, err.Error()
			}
			return len(local)+len(catalog) == 0, fmt.Sprintf("%v %v", local, catalog)
		})
		if !ok {
			r.fail("svcwrap exited normally, but %s later the service is still registered: %s; stderr:\n%s", soakGone, state, r.p.errOut)
			r.deregisterLeftovers()
			return "left"
		}
		return "gone"
	}
	// No entry may be passing once the TTL has lapsed.
	deadline := lapseFrom.Add(r.s.ttl + soakLapse)
	ok, state := soakWithin(time.Until(deadline), func() (bool, string) {
		local, catalog, err := r.tg.entries(r.id)
		if err != nil {
			return false, err.Error()
		}
		for _, e := range append(local, catalog...) {
			if e.status == api.HealthPassing {
				return false, fmt.Sprintf("%v %v", local, catalog)
			}
		}
		return true, fmt.Sprintf("%v %v", local, catalog)
	})
	if !ok {
		r.fail("an entry still passing %s after the TTL (%s) could have lapsed: %s", soakLapse, r.s.ttl, state)
	}
	if local, catalog, err := r.tg.entries(r.id); err == nil && len(local)+len(catalog) == 0 {
		return "gone"
	}
	r.deregisterLeftovers()
	return "left for the reaper"
}

// deregisterLeftovers removes the run's service from every agent, as
// Consul's reaper would a minute later, and waits until the catalog agrees.
func (r *soakRun) deregisterLeftovers() {
	for i, a := range r.tg.agents {
		if a.Running() && a != r.paused {
			_ = r.tg.clients[i].Agent().ServiceDeregister(soakIDOn(i, r.id))
		}
	}
	ok, state := soakWithin(soakGone, func() (bool, string) {
		local, catalog, err := r.tg.entries(r.id)
		if err != nil {
			return false, err.Error()
		}
		return len(local)+len(catalog) == 0, fmt.Sprintf("%v %v", local, catalog)
	})
	if !ok {
		r.t.Errorf("the soak could not remove the leftovers of %s: %s", r.id, state)
	}
}

// checkBystanders checks that the other instances on the cluster's client
// agents are untouched.
func (r *soakRun) checkBystanders(e *soakEnv) {
	for i, id := range e.bystanders {
		a := e.cluster.ClientAgent(i)
		ok, state := soakWithin(soakGone, func() (bool, string) {
			svc, _, err := e.client(a).Agent().Service(id, nil)
			if err != nil {
				return false, err.Error()
			}
			return svc.Port == 1000+i, fmt.Sprintf("port %d", svc.Port)
		})
		if !ok {
			r.fail("the bystander %s on %s was touched: %s", id, a, state)
		}
	}
}

// leftProcesses lists the processes whose environment holds the run's
// marker, svcwrap included, as "pid cmdline; …".
func (r *soakRun) leftProcesses() string {
	var left []string
	for _, pid := range soakPIDs(r.marker) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		left = append(left, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(bytes.TrimRight(cmdline, "\x00"), []byte{0}, []byte{' '})))
	}
	return strings.Join(left, "; ")
}

// soakPIDs returns the processes whose environment holds kv exactly.
// (A zombie's environment reads empty: it is gone but for its status.)
func soakPIDs(kv string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		for _, v := range bytes.Split(data, []byte{0}) {
			if string(v) == kv {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// cleanup leaves the soak as the run found it, whatever happened: agents
// resumed and running, no process of the run, the service deregistered.
func (r *soakRun) cleanup() {
	r.resume()
	if r.p != nil && r.t.Failed() {
		r.t.Logf("svcwrap's stdout:\n%s\nstderr:\n%s", r.p.out, r.p.errOut)
	}
	if r.p != nil {
		select {
		case <-r.p.done:
		default:
			_ = r.p.cmd.Process.Kill()
			<-r.p.done
		}
		r.p.close()
	}
	for _, pid := range soakPIDs(r.marker) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	for i, a := range r.tg.agents {
		if !a.Running() {
			r.tg.start(r.t, i)
		}
		_ = r.tg.clients[i].Agent().ServiceDeregister(soakIDOn(i, r.id))
	}
}

// soakProc is one svcwrap of the soak, with its standard streams.
type soakProc struct {
	cmd         *exec.Cmd
	stdin       *os.File
	out, errOut *lines
	outR, errR  *os.File
	done        chan struct{}
	state       *os.ProcessState // valid after done
}

func startSoakProc(t *testing.T, env, args []string) *soakProc {
	cmd := exec.Command(svcwrapBin, args...)
	cmd.Env = env
	// svcwrap dies with the test binary, and its child with it. The
	// parent-death signal fires when the forking thread ends, so fork from
	// a thread that never does.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	inR, inW, err1 := os.Pipe()
	outR, outW, err2 := os.Pipe()
	errR, errW, err3 := os.Pipe()
	if err := cmp.Or(err1, err2, err3); err != nil {
		t.Fatalf("pipes: %v", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	var err error
	onSoakThread(func() { err = cmd.Start() })
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		t.Fatalf("start svcwrap: %v", err)
	}
	p := &soakProc{cmd: cmd, stdin: inW, out: newLines(outR), errOut: newLines(errR), outR: outR, errR: errR, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(p.done)
	}()
	return p
}

func (p *soakProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *soakProc) close() {
	p.stdin.Close()
	p.outR.Close()
	p.errR.Close()
}

// soakCount counts the lines that hold every one of words.
func soakCount(l *lines, words ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.all {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			n++
		}
	}
	return n
}

// soakEOF reports whether every writer of the stream has closed it.
func soakEOF(l *lines) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.eof
}

var (
	soakThreadOnce sync.Once
	soakThreadReq  = make(chan func())
)

// onSoakThread runs f on an OS thread that lives as long as the process.
func onSoakThread(f func()) {
	soakThreadOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread is never retired
			for f := range soakThreadReq {
				f()
			}
		}()
	})
	done := make(chan struct{})
	soakThreadReq <- func() { defer close(done); f() }
	<-done
}

// soakWithin polls cond until it holds or timeout passes, and returns its last
// result. cond is called at least once.
func soakWithin(timeout time.Duration, cond func() (bool, string)) (bool, string) {
	deadline := time.Now().Add(timeout)
	interval := 5 * time.Millisecond
	for {
		ok, state := cond()
		left := time.Until(deadline)
		if ok || left <= 0 {
			return ok, state
		}
		time.Sleep(min(interval, left))
		interval = min(2*interval, 100*time.Millisecond)
	}
}

// soakReport counts the runs by scenario and outcome.
type soakReport struct {
	seed     uint64
	began    time.Time
	runs     int
	failed   []string
	byChild  soakTally
	byPort   soakTally
	byHit    soakTally
	byFault  soakTally
	outcomes soakTally
}

// soakTally counts runs and failures per name.
type soakTally struct {
	runs, fails map[string]int
}

func (t *soakTally) add(name string, failed bool) {
	if t.runs == nil {
		t.runs, t.fails = map[string]int{}, map[string]int{}
	}
	t.runs[name]++
	if failed {
		t.fails[name]++
	}
}

// print writes one line per name: runs, and failures if any.
func (t *soakTally) print(title string) {
	names := slices.Sorted(maps.Keys(t.runs))
	for i, n := range names {
		if i > 0 {
			title = ""
		}
		line := fmt.Sprintf("  %-9s %4d  %s", title, t.runs[n], n)
		if f := t.fails[n]; f > 0 {
			line += fmt.Sprintf("  (%d failed)", f)
		}
		fmt.Println(line)
	}
}

func (rep *soakReport) add(i int, s soakScenario, res soakResult, ok bool) {
	rep.runs++
	failed := !ok
	rep.byChild.add(s.end.String(), failed)
	rep.byPort.add(map[bool]string{true: "with --port", false: "without --port"}[s.port], failed)
	rep.byHit.add(s.hit.String(), failed)
	rep.byFault.add(s.fault.String(), failed)
	outcome := res.outcome
	if outcome == "" {
		outcome = "ended early, at " + res.stage
	}
	rep.outcomes.add(outcome, failed)
	if failed {
		why := strings.Join(res.failures, "\n")
		if why == "" {
			why = "failed at " + res.stage + " (see the log above)"
		}
		if len(why) > 1000 {
			why = why[:1000] + "…"
		}
		rep.failed = append(rep.failed, fmt.Sprintf("run %d, seed %d (replay: SVCWRAP_SOAK_SEED=%d SVCWRAP_SOAK_RUNS=1)\n      %s\n      %s",
			i, s.seed, s.seed, s, strings.ReplaceAll(why, "\n", "\n      ")))
	}
}

func (rep *soakReport) print() {
	fmt.Printf("\nsoak: %d runs in %s, %d failed; first seed %d\n", rep.runs, time.Since(rep.began).Round(time.Second), len(rep.failed), rep.seed)
	rep.byChild.print("child")
	rep.byPort.print("port")
	rep.byHit.print("svcwrap")
	rep.byFault.print("agent")
	rep.outcomes.print("outcome")
	if len(rep.failed) > 0 {
		fmt.Printf("  failures:\n")
		for _, f := range rep.failed {
			fmt.Printf("    %s\n", f)
		}
	}
}
