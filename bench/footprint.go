package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

const groupFootprint = "footprint: one idle wrapper at default settings"

// The idle window samples the check every footprintSample and the
// wrapper's CPU time every footprintSlice.
const (
	footprintSample = 100 * time.Millisecond
	footprintSlice  = 10 * time.Second
)

// footprint measures what one idle wrapper costs at default settings (TTL,
// heartbeat, check interval): its RSS, its CPU time per idle minute, and the
// requests it sends to the agent, counted by a reverse proxy the wrapper is
// pointed at. With withPort, the wrapper runs with --port and a child that
// listens, so its readiness check reads the kernel's sockets every check
// interval; without, the child only runs. Meanwhile the harness asks the
// agent directly, every footprintSample, for the check's status: a TTL that
// lapsed would show as critical for several samples.
func (b *bench) footprint(w wrapper, withPort bool) {
	g := groupFootprint + ", no --port"
	if withPort {
		g = groupFootprint + ", --port and a listening child"
	}
	rss := b.figure(g, "RSS (VmRSS) at the end of the window", w, "MiB", &target{12, "value"}, "")
	hwm := b.figure(g, "peak RSS (VmHWM)", w, "MiB", nil, "")
	pss := b.figure(g, "PSS (shared pages divided)", w, "MiB", nil, "")
	cpuNS := b.figure(g, "CPU per idle minute (schedstat, ns)", w, "s/min", &target{0.05, "median"}, "")
	cpuTicks := b.figure(g, "CPU per idle minute (utime+stime, 10 ms ticks)", w, "s/min", nil, "")
	rate := b.figure(g, "requests to the agent per second", w, "req/s", &target{0.5, "value"}, "")
	lapses := b.figure(g, "check samples not passing (TTL lapses)", w, "count", &target{0, "value"}, "")
	figs := []*figure{rss, hwm, pss, cpuNS, cpuTicks, rate, lapses}
	fail := func(err error) {
		for _, f := range figs {
			f.Error = err.Error()
		}
		b.progress("  %v", err)
	}

	proxy, err := startCountingProxy(b.agent.addr)
	if err != nil {
		fail(err)
		return
	}
	defer proxy.close()
	var wflags, child []string
	id := b.id(w, "idle", 0)
	if withPort {
		port, err := freePort()
		if err != nil {
			fail(err)
			return
		}
		wflags = []string{"--port", strconv.Itoa(port)}
		child = []string{"-listen", strconv.Itoa(port)}
		id = b.id(w, "idle-port", 0)
	}
	p, err := b.startWrapped(w, id, proxy.addr, wflags, child)
	if err != nil {
		fail(err)
		return
	}
	defer b.end(p, id)
	if _, err := b.agent.track(b.ctx, id, passTimeout, is(passing), nil); err != nil {
		fail(err)
		return
	}

	// The idle window: from passing, b.cfg.Idle long, cut into slices of
	// footprintSlice whose CPU times give the distribution: one busy moment
	// of the machine then shows as one slow slice, not as the whole figure.
	cpu0, err := readCPU(p.pid())
	if err != nil {
		fail(err)
		return
	}
	busy0 := readBusy()
	n0, t0 := proxy.count(), time.Now()
	samples, bad := 0, map[string]int{}
	sliceCPU, sliceStart := cpu0, t0
	slice := min(footprintSlice, b.cfg.Idle)
	complete := true
	for end := t0.Add(b.cfg.Idle); time.Now().Before(end) && b.ctx.Err() == nil; {
		time.Sleep(min(footprintSample, time.Until(end))) // the sampling period, not a synchronisation
		o, err := b.agent.status(b.ctx, id)
		if err != nil {
			fail(err)
			return
		}
		samples++
		if o.status != passing {
			bad[o.status]++
		}
		if now := time.Now(); now.Sub(sliceStart) >= slice || !now.Before(end) {
			c, err := readCPU(p.pid())
			if err != nil {
				fail(fmt.Errorf("the wrapper is gone during the idle window: %w", err))
				return
			}
			_, nsSec, all := c.since(sliceCPU)
			cpuNS.add(nsSec * time.Minute.Seconds() / now.Sub(sliceStart).Seconds())
			complete = complete && all
			sliceCPU, sliceStart = c, now
		}
	}
	cpu1, err := readCPU(p.pid())
	if err != nil {
		fail(fmt.Errorf("the wrapper is gone during the idle window: %w", err))
		return
	}
	n1, t1 := proxy.count(), time.Now()
	busy := readBusy().since(busy0)
	mem, err := readMem(p.pid())
	if err != nil {
		fail(err)
		return
	}

	window := t1.Sub(t0)
	tickSec, _, _ := cpu1.since(cpu0)
	rss.add(mb(mem.rss))
	hwm.add(mb(mem.hwm))
	pss.add(mb(mem.pss))
	cpuTicks.add(tickSec * time.Minute.Seconds() / window.Seconds())
	rate.add(float64(n1-n0) / window.Seconds())
	nonPassing := 0
	for _, n := range bad {
		nonPassing += n
	}
	lapses.add(float64(nonPassing))

	cpuNS.Note = fmt.Sprintf("one sample per %s slice of the %s window; %d threads; the machine was %.0f%% busy meanwhile (all processes)",
		slice, window.Round(time.Millisecond), len(cpu1.tids), 100*busy)
	if !complete {
		cpuNS.Note += "; a thread exited during the window, so this under-counts: see the ticks figure"
	}
	cpuTicks.Note = "the whole window"
	rate.Note = fmt.Sprintf("%d requests in the window, counted by a proxy: %s", n1-n0, proxy.summary(t0, t1))
	lapses.Note = fmt.Sprintf("%d samples of the agent's own view, one every %s", samples, footprintSample)
	if nonPassing > 0 {
		lapses.Note += fmt.Sprintf("; not passing: %v", bad)
	}
}

// countingProxy is a reverse proxy on loopback in front of the agent that
// records every request it forwards.
type countingProxy struct {
	addr string
	srv  *http.Server

	mu   sync.Mutex
	reqs []proxied
}

type proxied struct {
	at   time.Time
	what string // "METHOD /path"
}

func startCountingProxy(agentAddr string) (*countingProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	target := &url.URL{Scheme: "http", Host: agentAddr}
	cp := &countingProxy{addr: ln.Addr().String()}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) }}
	cp.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cp.mu.Lock()
		cp.reqs = append(cp.reqs, proxied{time.Now(), r.Method + " " + r.URL.Path})
		cp.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go cp.srv.Serve(ln)
	return cp, nil
}

func (cp *countingProxy) close() { cp.srv.Close() }

// count is the number of requests forwarded so far.
func (cp *countingProxy) count() int {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return len(cp.reqs)
}

// summary lists the requests made between from and to, by kind.
func (cp *countingProxy) summary(from, to time.Time) string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	kinds := map[string]int{}
	for _, r := range cp.reqs {
		if !r.at.Before(from) && r.at.Before(to) {
			kinds[r.what]++
		}
	}
	var parts []string
	for k, n := range kinds {
		parts = append(parts, fmt.Sprintf("%d× %s", n, k))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
