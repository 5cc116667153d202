package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Sampling periods of the scale scenario: the figures they time are seconds
// long. A full listing of the agent's checks grows with N (about 0.6 kB a
// check), and the agent's time spent on it is time taken from the wrappers,
// so until all are passing it is read only every rampSample per wrapper
// (0.5 s for 1000); after that, only the checks that are not passing are
// asked for, a small answer, every scaleSample.
const (
	scaleSample = 100 * time.Millisecond
	rampSample  = 500 * time.Microsecond
	scaleIdle   = 5 * time.Second // the agent's baseline, before any wrapper
)

// scale runs n wrappers, each around `sleep 1000000`, against a fresh dev
// agent: how long until all are passing, what the agent and the wrappers
// cost while they all idle for b.cfg.Hold, whether any check flapped, and
// how long until all are gone after a SIGTERM to each. The wrappers run with
// -vv (warnings, errors, NOTICE and EVENT lines: five or so per wrapper's
// start and stop when all is well) and their output goes to one log, whose
// lines are counted (-keep keeps it).
//
// With hogs > 0, that many busy loops compete for the cores from the first
// fork until every wrapper has exited: a host that boots or shuts down with
// its CPUs taken, where the agent and the wrappers wait for their turn. That
// is where the start storm's flaps and the mass stop's leftovers came from
// in runs on an idle host only now and then (BENCHMARKS.md, section 9).
func (b *bench) scale(w wrapper, n, hogs int) {
	g := fmt.Sprintf("scale: %d wrappers of `sleep` on one dev agent", n)
	if hogs > 0 {
		g += fmt.Sprintf(", %d busy loops on the cores", hogs)
	}
	fig := func(name, unit string, t *target) *figure { return b.figure(g, name, w, unit, t, "") }
	var (
		spawn      = fig("time to fork/exec all wrappers", "s", nil)
		allPass    = fig("first start → all passing", "s", nil)
		flaps      = fig("checks that flapped (passing → not passing)", "count", &target{0, "value"})
		agentIdle  = fig("agent CPU before (no wrappers)", "%", nil)
		agentRamp  = fig("agent CPU while they start", "%", nil)
		agentHold  = fig("agent CPU while all idle", "%", nil)
		agentRSS0  = fig("agent RSS before", "MiB", nil)
		agentRSS   = fig("agent RSS with all registered", "MiB", nil)
		wrapRSS    = fig("wrappers' RSS, summed", "MiB", nil)
		wrapPSS    = fig("wrappers' PSS, summed", "MiB", nil)
		wrapCPU    = fig("wrappers' CPU per idle minute, summed", "s/min", nil)
		allGone    = fig("mass SIGTERM → all gone from the agent", "s", nil)
		allExited  = fig("mass SIGTERM → all wrappers exited", "s", nil)
		logLines   = fig("lines the wrappers logged at -vv", "count", nil)
		refusals   = fig("log lines quoting the agent's refusal (429)", "count", nil)
		figs       = []*figure{spawn, allPass, flaps, agentIdle, agentRamp, agentHold, agentRSS0, agentRSS, wrapRSS, wrapPSS, wrapCPU, allGone, allExited, logLines, refusals}
		percentOne = func(sec float64, d time.Duration) float64 { return 100 * sec / d.Seconds() }
	)
	agentIdle.Note = "% of one core; the harness's own sampling of the agent is included"
	fail := func(f *figure, err error) {
		f.Error = err.Error()
		b.progress("  %s: %v", f.Name, err)
	}

	run := fmt.Sprintf("%d-%d", w.index, n) // names this run's agent and log
	if hogs > 0 {
		run += "-hogged"
	}
	a, err := startAgent(b.procs, b.cfg.Consul, b.dir, "svcbench-scale-"+run, b.cfg.AgentHCL, b.cfg.Poll)
	if err != nil {
		for _, f := range figs {
			f.Error = err.Error()
		}
		return
	}
	defer a.stop()
	apid := a.proc.pid()

	// The agent alone, as a baseline.
	idle := scaleIdle
	if b.cfg.Quick {
		idle = time.Second
	}
	c0, _ := readCPU(apid)
	if !b.pause(idle) {
		return
	}
	c1, _ := readCPU(apid)
	m0, _ := readMem(apid)
	tickSec, _, _ := c1.since(c0)
	agentIdle.add(percentOne(tickSec, idle))
	agentRSS0.add(mb(m0.rss))

	logPath := filepath.Join(b.dir, "scale-"+run+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		fail(spawn, err)
		return
	}
	defer logf.Close()

	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	prefix := fmt.Sprintf("svcbench-w%d-scale-", w.index)
	watch := newCheckWatch(prefix, n)
	var watchers sync.WaitGroup
	watchers.Add(2)
	go func() { defer watchers.Done(); watch.sampleAgent(ctx, a) }()
	go func() { defer watchers.Done(); watch.followCatalog(ctx, a) }()
	defer watchers.Wait()
	defer cancel()

	// Start them all, as fast as the harness can fork or at -scale-rate.
	sleep := []string{"sleep", "1000000"}
	var ps []*proc
	defer func() {
		for _, p := range ps {
			if !p.exited() {
				_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
			}
		}
	}()
	for range hogs {
		p, err := b.procs.start([]string{"sh", "-c", "while :; do :; done"}, startOpts{})
		if err != nil {
			fail(spawn, fmt.Errorf("busy loop: %w", err))
			return
		}
		defer func() { _ = syscall.Kill(-p.pid(), syscall.SIGKILL); _ = p.waitExit(5 * time.Second) }()
	}
	cr0, _ := readCPU(apid)
	t0 := time.Now()
	for i := range n {
		if b.cfg.Rate > 0 {
			// Pacing, not a synchronisation: wrapper i starts i/rate s in.
			time.Sleep(time.Until(t0.Add(time.Duration(float64(i) / b.cfg.Rate * float64(time.Second)))))
		}
		argv := slices.Concat(w.argv, []string{"--consul-agent", a.addr, "-vv", prefix + strconv.Itoa(i), "--"}, sleep)
		p, err := b.procs.start(argv, startOpts{output: logf})
		if err != nil {
			fail(spawn, fmt.Errorf("wrapper %d: %w", i, err))
			break
		}
		ps = append(ps, p)
	}
	spawn.add(time.Since(t0).Seconds())
	if b.cfg.Rate > 0 {
		spawn.Note = fmt.Sprintf("paced at %g a second", b.cfg.Rate)
	}

	// Until all are passing.
	rampTimeout := max(60*time.Second, time.Duration(n)*100*time.Millisecond)
	select {
	case <-watch.allPassing:
		allPass.add(watch.allPassingAt.Sub(t0).Seconds())
	case <-time.After(rampTimeout):
		fail(allPass, fmt.Errorf("after %s, %d of %d passing", rampTimeout, watch.passingNow(), n))
	case <-b.ctx.Done():
		return
	}
	cr1, _ := readCPU(apid)
	tickSec, _, _ = cr1.since(cr0)
	agentRamp.add(percentOne(tickSec, time.Since(t0)))
	agentRamp.Note = fmt.Sprintf("over %s; includes the harness's full listing of the agent's checks every %s", time.Since(t0).Round(time.Millisecond), watch.rampEvery)

	// All idle for the hold window.
	ch0, _ := readCPU(apid)
	w0 := sumCPU(ps)
	h0 := time.Now()
	if !b.pause(b.cfg.Hold) {
		return
	}
	hold := time.Since(h0)
	ch1, _ := readCPU(apid)
	w1 := sumCPU(ps)
	tickSec, _, _ = ch1.since(ch0)
	agentHold.add(percentOne(tickSec, hold))
	agentHold.Note = fmt.Sprintf("over %s", hold.Round(time.Millisecond))
	if m, err := readMem(apid); err == nil {
		agentRSS.add(mb(m.rss))
	}
	wrapCPU.add((w1 - w0) * time.Minute.Seconds() / hold.Seconds())
	var rss, pss int64
	alive := 0
	for _, p := range ps {
		if m, err := readMem(p.pid()); err == nil && !p.exited() {
			rss, pss, alive = rss+m.rss, pss+m.pss, alive+1
		}
	}
	wrapRSS.add(mb(rss))
	wrapPSS.add(mb(pss))
	if alive != len(ps) {
		wrapRSS.Note = fmt.Sprintf("only %d of %d wrappers still running", alive, len(ps))
	}

	// Stop them all at once.
	watch.stopping()
	t1 := time.Now()
	for _, p := range ps {
		_ = p.signal(syscall.SIGTERM)
	}
	goneTimeout := max(60*time.Second, time.Duration(n)*50*time.Millisecond)
	if at, err := waitAllGone(b.ctx, a, prefix, goneTimeout); err != nil {
		fail(allGone, err)
	} else {
		allGone.add(at.Sub(t1).Seconds())
	}
	// The exits were stamped as they happened; waiting for them only
	// collects the stamps, with a deadline of its own.
	exitDeadline := time.Now().Add(goneTimeout)
	var last time.Time
	codes := map[int]int{}
	stuck := 0
	for _, p := range ps {
		if err := p.waitExit(time.Until(exitDeadline)); err != nil {
			stuck++
			continue
		}
		codes[p.exitCode()]++
		if p.exitedAt.After(last) {
			last = p.exitedAt
		}
	}
	if stuck > 0 {
		fail(allExited, fmt.Errorf("%d wrappers still running %s after SIGTERM", stuck, time.Since(t1).Round(time.Second)))
	} else {
		allExited.add(last.Sub(t1).Seconds())
	}
	allExited.Note = fmt.Sprintf("exit codes: %v", codes)

	cancel()
	watchers.Wait()
	flapped, duringStart := watch.flappedList()
	flaps.add(float64(len(flapped)))
	flaps.Note = fmt.Sprintf("%d while they started, %d while all idle; watched by sampling the agent's checks (every %s, then %s) and a blocking query on the catalog's critical checks",
		duringStart, len(flapped)-duringStart, watch.rampEvery, scaleSample)
	if len(flapped) > 0 {
		flaps.Note += "; first: " + strings.Join(flapped[:min(3, len(flapped))], "; ")
	}
	lines, first, refused := countLines(logPath)
	logLines.add(float64(lines))
	if lines > 0 {
		logLines.Note = "first: " + strings.Join(first, " | ")
	}
	refusals.add(float64(refused))
	refusals.Note = "\"" + agentRefusal + "\": a request the agent turned away at its connection limit, as far as the wrapper logs it (svcwrap at -vv: the first of each run of failures)"
}

// pause waits d as a measurement window; false if the run was cancelled.
func (b *bench) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// sumCPU is the CPU seconds used so far by every process of ps that still
// runs (schedstat).
func sumCPU(ps []*proc) float64 {
	var ns int64
	for _, p := range ps {
		if u, err := readCPU(p.pid()); err == nil {
			ns += u.ns
		}
	}
	return float64(ns) / 1e9
}

// checkWatch follows the status of the TTL checks of the services whose IDs
// start with prefix, and records every one that turns from passing to
// anything else before stopping is called.
type checkWatch struct {
	prefix string
	n      int

	rampEvery    time.Duration // period of the full listings
	allPassing   chan struct{} // closed when all n were passing in one sample
	allPassingAt time.Time     // valid once allPassing is closed

	mu          sync.Mutex
	status      map[string]string // service ID → its status in the last full sample
	seenPass    map[string]bool
	flapped     map[string]string // service ID → what was seen
	duringStart int               // flaps seen before all were passing
	allUp       bool              // all were passing once
	stopped     bool
}

func newCheckWatch(prefix string, n int) *checkWatch {
	return &checkWatch{
		prefix: prefix, n: n,
		rampEvery:  max(scaleSample, time.Duration(n)*rampSample),
		allPassing: make(chan struct{}),
		status:     map[string]string{},
		seenPass:   map[string]bool{},
		flapped:    map[string]string{},
	}
}

// agentCheck is the part of an agent or catalog check the watch reads.
type agentCheck struct {
	ServiceID string
	Status    string
	Output    string
}

// observe records one check status seen by source.
func (cw *checkWatch) observe(c agentCheck, source string) {
	if !strings.HasPrefix(c.ServiceID, cw.prefix) {
		return
	}
	cw.mu.Lock()
	defer cw.mu.Unlock()
	if c.Status == passing {
		cw.seenPass[c.ServiceID] = true
		return
	}
	if cw.seenPass[c.ServiceID] && !cw.stopped {
		if _, ok := cw.flapped[c.ServiceID]; !ok {
			cw.flapped[c.ServiceID] = fmt.Sprintf("%s %s: %s %q", source, c.ServiceID, c.Status, c.Output)
			if !cw.allUp {
				cw.duringStart++
			}
		}
	}
}

// stopping tells the watch that the wrappers are being stopped: from now on a
// check that leaves passing is expected.
func (cw *checkWatch) stopping() {
	cw.mu.Lock()
	cw.stopped = true
	cw.mu.Unlock()
}

func (cw *checkWatch) passingNow() int {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	k := 0
	for _, s := range cw.status {
		if s == passing {
			k++
		}
	}
	return k
}

// flappedList describes every check that flapped, and says how many did
// before all were passing.
func (cw *checkWatch) flappedList() ([]string, int) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	var out []string
	for _, s := range cw.flapped {
		out = append(out, s)
	}
	slices.Sort(out)
	return out, cw.duringStart
}

// sampleAgent reads the agent's own view of the checks. Until all n are
// passing it reads them all (to count) every rampEvery; after that only the
// checks that are not passing (a small answer), every scaleSample, since any
// of ours is a flap.
func (cw *checkWatch) sampleAgent(ctx context.Context, a *agent) {
	notPassing := "/v1/agent/checks?filter=" + url.QueryEscape(`Status != "passing"`)
	tick := time.NewTicker(cw.rampEvery)
	defer tick.Stop()
	all := false
	for {
		path := "/v1/agent/checks"
		if all {
			path = notPassing
		}
		var checks map[string]agentCheck
		if err := a.getJSON(path, &checks); err == nil {
			at := time.Now()
			for _, c := range checks {
				cw.observe(c, "agent")
			}
			if !all {
				cw.mu.Lock()
				clear(cw.status)
				k := 0
				for _, c := range checks {
					if strings.HasPrefix(c.ServiceID, cw.prefix) {
						cw.status[c.ServiceID] = c.Status
						if c.Status == passing {
							k++
						}
					}
				}
				if k == cw.n {
					cw.allUp = true
				}
				cw.mu.Unlock()
				if k == cw.n {
					all = true
					cw.allPassingAt = at
					close(cw.allPassing)
					tick.Reset(scaleSample)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// followCatalog follows the catalog's critical checks with blocking queries:
// every change of that list wakes it, so a check that goes critical between
// two samples of the agent is seen too (unless it is passing again before
// the query is renewed, a millisecond later).
func (cw *checkWatch) followCatalog(ctx context.Context, a *agent) {
	index := "0"
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet,
			"http://"+a.addr+"/v1/health/state/critical?wait=10s&index="+index, nil)
		resp, err := a.http.Do(req)
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				time.Sleep(scaleSample) // the agent is overloaded or restarting: back off, then renew
			}
			continue
		}
		var checks []agentCheck
		err = json.NewDecoder(resp.Body).Decode(&checks)
		resp.Body.Close()
		cancel()
		if err == nil {
			for _, c := range checks {
				cw.observe(c, "catalog")
			}
		}
		if i := resp.Header.Get("X-Consul-Index"); i != "" {
			index = i
		}
	}
}

// waitAllGone polls the agent's services every scaleSample until none with
// prefix is left, and returns when it saw that.
func waitAllGone(ctx context.Context, a *agent, prefix string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	left := -1
	for {
		var services map[string]json.RawMessage
		if err := a.getJSON("/v1/agent/services", &services); err == nil {
			left = 0
			for id := range services {
				if strings.HasPrefix(id, prefix) {
					left++
				}
			}
			if left == 0 {
				return time.Now(), nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("%d services still registered after %s", left, timeout)
		}
		time.Sleep(scaleSample)
	}
}

// logTime matches the timestamps of log lines, so that equal messages from
// different wrappers count as one in the summary.
var logTime = regexp.MustCompile(`time=\S+ |\d{4}-\d\d-\d\d[T ][\d:.]+Z? ?|pid=\d+ ?`)

// agentRefusal is what a Consul agent answers, with HTTP 429, to a request
// beyond limits.http_max_conns_per_client.
const agentRefusal = "too many concurrent connections"

// countLines counts the lines of a log and those that quote agentRefusal,
// and returns the first three distinct messages, timestamps removed.
func countLines(path string) (n int, first []string, refused int) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		n++
		if strings.Contains(sc.Text(), agentRefusal) {
			refused++
		}
		msg := logTime.ReplaceAllString(sc.Text(), "")
		if len(first) < 3 && !slices.Contains(first, msg) {
			first = append(first, msg)
		}
	}
	return n, first, refused
}
