package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Table names.
const (
	groupLatency = "latency: one wrapper, fine polling of the agent"
	groupSignals = "signals: kill() → the child's handler"
	groupStop    = "stop: SIGTERM to the wrapper"
)

// Bounds on waits for things that take milliseconds when all is well; they
// only matter when a wrapper misbehaves.
const (
	passTimeout = 15 * time.Second // registered and passing
	goneTimeout = 15 * time.Second // deregistered after the child's exit or a stop
	exitTimeout = 20 * time.Second // the wrapper exits after its child
	evTimeout   = 5 * time.Second  // the child reports something it was told to do
)

// startWrapped starts wrapper w around the benchmark child, registering
// service id with the agent at agentAddr:
//
//	WRAPPER --consul-agent ADDR [wflags] ID -- SVCBENCH [child flags]
//
// --consul-agent is the one agent flag svcwrap and ianitor both accept, so
// the same line runs either. The wrapper's stderr goes to the harness's
// wrapper log; the child's events come back on its stdout, and its commands
// go to its stdin, both passed through the wrapper.
func (b *bench) startWrapped(w wrapper, id, agentAddr string, wflags, child []string) (*proc, error) {
	argv := slices.Concat(w.argv, []string{"--consul-agent", agentAddr}, wflags, []string{id, "--", b.self}, child)
	fmt.Fprintf(b.wlog, "== %s %v\n", time.Now().Format(time.RFC3339Nano), argv)
	return b.procs.start(argv, startOpts{
		env:    []string{envChild + "=1"},
		events: true,
		stdin:  true,
		errlog: b.wlog,
	})
}

// end stops a wrapper whose ending is not being measured, and removes its
// service if it left one, so the next run starts on a clean agent.
func (b *bench) end(p *proc, id string) {
	p.stop(15 * time.Second)
	if o, err := b.agent.status(b.ctx, id); err == nil && o.status != absent {
		b.agent.deregister(id)
	}
}

// runs calls one for each run, and stops at the first error, which is
// recorded on every figure of the scenario.
func (b *bench) runs(figs []*figure, one func(i int) error) {
	for i := range b.cfg.Runs {
		if err := b.ctx.Err(); err != nil {
			return
		}
		if err := one(i); err != nil {
			for _, f := range figs {
				f.Error = fmt.Sprintf("run %d: %v", i+1, err)
			}
			b.progress("  %v", err)
			return
		}
	}
}

func (f *figure) add(v float64) { f.Samples = append(f.Samples, v) }

// readyAtOnce measures start → registered and start → passing for a child
// that is ready at once: without --port (ready means running), or with
// --port and a child that listens as soon as it runs. "start" is the moment
// before the harness forks the wrapper.
func (b *bench) readyAtOnce(w wrapper, withPort bool) {
	label := "no --port"
	if withPort {
		label = "--port, child listens at once"
	}
	reg := b.figure(groupLatency, "start → registered ("+label+")", w, "ms", nil, "")
	pass := b.figure(groupLatency, "start → passing ("+label+")", w, "ms", &target{20, "median"}, "")
	figs := []*figure{reg, pass}
	var listen, childUp *figure
	if withPort {
		childUp = b.figure(groupLatency, "start → child listening (its own start-up, under the wrapper)", w, "ms", nil,
			"the child is a Go program (this harness); start → passing cannot be shorter")
		listen = b.figure(groupLatency, "listen → passing (child listens at once)", w, "ms", &target{50, "median"},
			"the child listens while the wrapper polls every 1→20 ms")
		figs = append(figs, childUp, listen)
	}
	b.runs(figs, func(i int) error {
		id := b.id(w, "ready", i)
		var wflags, child []string
		if withPort {
			port, err := freePort()
			if err != nil {
				return err
			}
			wflags = []string{"--port", strconv.Itoa(port)}
			child = []string{"-listen", strconv.Itoa(port)}
		}
		p, err := b.startWrapped(w, id, b.agent.addr, wflags, child)
		if err != nil {
			return err
		}
		defer b.end(p, id)
		changes, err := b.agent.track(b.ctx, id, passTimeout, is(passing), nil)
		if err != nil {
			return err
		}
		r, _ := firstChange(changes, registered)
		ps, _ := firstChange(changes, is(passing))
		reg.add(ms(r.at.Sub(p.started)))
		pass.add(ms(ps.at.Sub(p.started)))
		if withPort {
			ev, err := p.waitEvent("listen", evTimeout)
			if err != nil {
				return err
			}
			childUp.add(ms(ev.at.Sub(p.started)))
			listen.add(ms(ps.at.Sub(ev.at)))
		}
		return nil
	})
}

// listenToPassing measures how long after the child starts listening the
// agent reports passing, for a child that opens its port a while after it
// started: a random 200-300 ms, so that the wrapper is in its steady
// not-ready polling and the moment of listen() falls at a random phase of it.
// A negative sample is a wrapper that reported passing before the port
// listened.
func (b *bench) listenToPassing(w wrapper) {
	f := b.figure(groupLatency, "listen → passing (child listens after 200-300 ms)", w, "ms", &target{50, "median"}, "")
	early := 0
	b.runs([]*figure{f}, func(i int) error {
		id := b.id(w, "listen", i)
		port, err := freePort()
		if err != nil {
			return err
		}
		delay := 200*time.Millisecond + rand.N(100*time.Millisecond)
		p, err := b.startWrapped(w, id, b.agent.addr,
			[]string{"--port", strconv.Itoa(port)},
			[]string{"-listen", strconv.Itoa(port), "-listen-after", delay.String()})
		if err != nil {
			return err
		}
		defer b.end(p, id)
		changes, err := b.agent.track(b.ctx, id, passTimeout+delay, is(passing), nil)
		if err != nil {
			return err
		}
		ps, _ := firstChange(changes, is(passing))
		ev, err := p.waitEvent("listen", evTimeout)
		if err != nil {
			return err
		}
		if ps.at.Before(ev.at) {
			early++
		}
		f.add(ms(ps.at.Sub(ev.at)))
		return nil
	})
	f.Note = fmt.Sprintf("passing before the port listened (a negative sample) in %d of %d runs", early, len(f.Samples))
}

// unlistenToCritical measures how long after the child closes its listener
// the agent reports critical. interval 0 leaves --check-interval at the
// wrapper's default (1 s for svcwrap). The wrapper re-reads readiness once
// per interval, so the harness waits a random part of the interval after
// passing before closing the port: the close then falls at a uniformly
// random phase of the wrapper's checks, and the samples show the
// distribution a user would see, not one fixed phase.
func (b *bench) unlistenToCritical(w wrapper, interval time.Duration) {
	name := "stop listening → critical (default --check-interval)"
	phase := time.Second
	var wflags []string
	if interval > 0 {
		name = "stop listening → critical (--check-interval " + interval.String() + ")"
		phase = interval
		wflags = []string{"--check-interval", interval.String()}
	}
	f := b.figure(groupLatency, name, w, "ms", nil, "bounded by the check interval: the close falls at a random phase of it")
	b.runs([]*figure{f}, func(i int) error {
		id := b.id(w, "unlisten", i)
		port, err := freePort()
		if err != nil {
			return err
		}
		p, err := b.startWrapped(w, id, b.agent.addr,
			append([]string{"--port", strconv.Itoa(port)}, wflags...),
			[]string{"-listen", strconv.Itoa(port)})
		if err != nil {
			return err
		}
		defer b.end(p, id)
		if _, err := b.agent.track(b.ctx, id, passTimeout, is(passing), nil); err != nil {
			return err
		}
		time.Sleep(rand.N(phase)) // the random phase, not a synchronisation
		if err := p.send("unlisten"); err != nil {
			return err
		}
		changes, err := b.agent.track(b.ctx, id, 3*phase+passTimeout, is(critical), nil)
		if err != nil {
			return err
		}
		ev, err := p.waitEvent("unlisten", evTimeout)
		if err != nil {
			return err
		}
		c, _ := firstChange(changes, is(critical))
		f.add(ms(c.at.Sub(ev.at)))
		return nil
	})
}

// exitToGone measures how long after the child exits by itself (it prints
// its exit time just before exit(3)) the agent has forgotten the service,
// and how long the wrapper takes to exit, with which code.
func (b *bench) exitToGone(w wrapper) {
	gone := b.figure(groupLatency, "child exit → service gone", w, "ms", &target{10, "median"}, "")
	exited := b.figure(groupLatency, "child exit → wrapper exited", w, "ms", nil, "")
	codes := map[int]int{}
	b.runs([]*figure{gone, exited}, func(i int) error {
		id := b.id(w, "exit", i)
		p, err := b.startWrapped(w, id, b.agent.addr, nil, nil)
		if err != nil {
			return err
		}
		defer b.end(p, id)
		if _, err := b.agent.track(b.ctx, id, passTimeout, is(passing), nil); err != nil {
			return err
		}
		if err := p.send("exit 3"); err != nil {
			return err
		}
		// Poll from now on, before reading the child's event, so that the
		// removal is not seen late because the harness was reading.
		changes, err := b.agent.track(b.ctx, id, goneTimeout, is(absent), nil)
		if err != nil {
			return err
		}
		ev, err := p.waitEvent("exit", evTimeout)
		if err != nil {
			return err
		}
		if err := p.waitExit(exitTimeout); err != nil {
			return err
		}
		c, _ := firstChange(changes, is(absent))
		gone.add(ms(c.at.Sub(ev.at)))
		exited.add(ms(p.exitedAt.Sub(ev.at)))
		codes[p.exitCode()]++
		return nil
	})
	if codes[3] != len(exited.Samples) {
		exited.Note = fmt.Sprintf("the child exited 3; the wrapper's exit codes: %v", codes)
	}
}

// forwarding measures signal forwarding: the harness calls kill(wrapper,
// SIG) and the child stamps the signal's arrival in its handler. One wrapper
// run takes every sample, each signal awaited before the next is sent. The
// first wrapper's run also measures kill() straight to the child, the floor
// of this method (the Go child's own signal delivery included).
func (b *bench) forwarding(w wrapper, floor bool) {
	sigs := []struct {
		sig  syscall.Signal
		name string
		fig  *figure
	}{
		{syscall.SIGHUP, "HUP", b.figure(groupSignals, "SIGHUP to the wrapper → child", w, "ms", &target{0.6, "median"}, "")},
		{syscall.SIGUSR1, "USR1", b.figure(groupSignals, "SIGUSR1 to the wrapper → child", w, "ms", &target{0.6, "median"}, "")},
	}
	figs := []*figure{sigs[0].fig, sigs[1].fig}
	var direct *figure
	if floor {
		direct = b.figure(groupSignals, "SIGUSR1 straight to the child (floor, no wrapper)", wrapper{name: "-"}, "ms", nil, "")
		figs = append(figs, direct)
	}
	fail := func(err error) {
		for _, f := range figs {
			f.Error = err.Error()
		}
		b.progress("  %v", err)
	}
	id := b.id(w, "signals", 0)
	p, err := b.startWrapped(w, id, b.agent.addr, nil, nil)
	if err != nil {
		fail(err)
		return
	}
	defer b.end(p, id)
	ready, err := p.waitEvent("ready", evTimeout)
	if err != nil {
		fail(err)
		return
	}
	child, _ := strconv.Atoi(ready.args[0])
	if _, err := b.agent.track(b.ctx, id, passTimeout, is(passing), nil); err != nil {
		fail(err)
		return
	}

	// send delivers one signal to pid and returns how long it took to reach
	// the child's handler.
	send := func(pid int, sig syscall.Signal, name string) (time.Duration, error) {
		sent := time.Now()
		if err := syscall.Kill(pid, sig); err != nil {
			return 0, err
		}
		ev, err := p.waitEvent("sig", evTimeout)
		if err != nil {
			return 0, fmt.Errorf("SIG%s: %w", name, err)
		}
		if len(ev.args) == 0 || ev.args[0] != name {
			return 0, fmt.Errorf("sent SIG%s, the child got %v", name, ev.args)
		}
		return ev.at.Sub(sent), nil
	}
	b.runs(figs, func(int) error {
		for _, s := range sigs {
			d, err := send(p.pid(), s.sig, s.name)
			if err != nil {
				return err
			}
			s.fig.add(ms(d))
		}
		if direct != nil {
			d, err := send(child, syscall.SIGUSR1, "USR1")
			if err != nil {
				return err
			}
			direct.add(ms(d))
		}
		return nil
	})
}

// sigterm measures a stop: SIGTERM to the wrapper until it has exited, for a
// child that stops at once. The child, on SIGTERM, first asks the agent
// whether its service is still registered (so the order "deregistered, then
// signalled" is checked where it matters) and then exits; that check is the
// child's own stop time, measured and also subtracted. Meanwhile the harness
// polls the agent: an answer "registered" to a request sent after the child
// got SIGTERM also breaks the order.
func (b *bench) sigterm(w wrapper) {
	total := b.figure(groupStop, "SIGTERM → wrapper exited", w, "ms", nil,
		"includes the child's own stop (one HTTP request to the agent, below)")
	net := b.figure(groupStop, "SIGTERM → wrapper exited, less the child's own stop", w, "ms", &target{20, "median"}, "")
	toChild := b.figure(groupStop, "SIGTERM → child got SIGTERM", w, "ms", nil, "")
	toGone := b.figure(groupStop, "SIGTERM → service gone", w, "ms", nil, "")
	own := b.figure(groupStop, "child's own stop (its agent check, then exit)", w, "ms", nil, "")
	broken := b.figure(groupStop, "runs where the child saw SIGTERM before the service was gone", w, "count", &target{0, "value"}, "")
	figs := []*figure{total, net, toChild, toGone, own, broken}
	var violations []string
	b.runs(figs, func(i int) error {
		id := b.id(w, "term", i)
		p, err := b.startWrapped(w, id, b.agent.addr, nil, []string{"-agent", b.agent.addr, "-service", id})
		if err != nil {
			return err
		}
		defer b.end(p, id)
		if _, err := b.agent.track(b.ctx, id, passTimeout, is(passing), nil); err != nil {
			return err
		}
		// Without --port the service may pass before the child has even
		// installed its handlers; a SIGTERM then would kill it unheard.
		if _, err := p.waitEvent("ready", evTimeout); err != nil {
			return err
		}

		var (
			mu          sync.Mutex
			lastPresent time.Time // when the last request answered "registered" was sent
		)
		sent := time.Now()
		if err := p.signal(syscall.SIGTERM); err != nil {
			return err
		}
		changes, err := b.agent.track(b.ctx, id, goneTimeout, is(absent), func(o observation) {
			if o.status != absent {
				mu.Lock()
				lastPresent = o.sent
				mu.Unlock()
			}
		})
		if err != nil {
			return err
		}
		if err := p.waitExit(exitTimeout); err != nil {
			return err
		}
		term, err := p.waitEvent("term", evTimeout)
		if err != nil {
			return err
		}
		ans, err := p.waitEvent("agent", evTimeout)
		if err != nil {
			return err
		}
		exit, err := p.waitEvent("exit", evTimeout)
		if err != nil {
			return err
		}
		c, _ := firstChange(changes, is(absent))
		total.add(ms(p.exitedAt.Sub(sent)))
		own.add(ms(exit.at.Sub(term.at)))
		net.add(ms(p.exitedAt.Sub(sent) - exit.at.Sub(term.at)))
		toChild.add(ms(term.at.Sub(sent)))
		toGone.add(ms(c.at.Sub(sent)))
		switch {
		case len(ans.args) == 0 || ans.args[0] != "gone":
			violations = append(violations, fmt.Sprintf("run %d: the agent answered the child %v", i+1, ans.args))
		case lastPresent.After(term.at):
			violations = append(violations, fmt.Sprintf("run %d: registered in an answer to a request sent %s after the child got SIGTERM", i+1, lastPresent.Sub(term.at)))
		}
		return nil
	})
	if broken.Error == "" {
		broken.add(float64(len(violations)))
	}
	if len(violations) > 0 {
		broken.Note = fmt.Sprint(violations[:min(3, len(violations))])
	}
}
