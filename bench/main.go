// Command svcbench measures what a service wrapper such as svcwrap costs its
// users, against a real Consul -dev agent it starts on loopback:
//
//   - latency: start → registered → passing, listen → passing, stop
//     listening → critical, child exit → service gone;
//   - signals: SIGHUP/SIGUSR1 to the wrapper → the child's handler;
//   - stop: SIGTERM → wrapper exited, deregistered before the child hears;
//   - footprint: RSS, CPU per idle minute, requests to the agent per second;
//   - scale: N wrappers on one agent, on an idle host and on one whose cores
//     are taken by busy loops (-scale-hogged, -hogs).
//
// Each latency is measured over -runs runs and reported as median, p90 and
// max. Every wrapper given with -wrapper is measured the same way, so figures
// compare side by side; each is called as
//
//	WRAPPER --consul-agent ADDR [FLAGS] SERVICE -- COMMAND [ARGS]
//
// The children a wrapper runs are this binary again (see child.go), which
// stamps what happens to it with the wall clock. Every process the harness
// starts is stopped when it ends, on error, or on Ctrl-C; it talks only to
// 127.0.0.1.
//
// From the module root, after `make build consul`:
//
//	go run ./bench                   # every measurement, 50 runs each
//	go run ./bench -quick            # one run each, N=10: a smoke run
//	go run ./bench -wrapper bin/svcwrap -wrapper 'python3 -m ianitor'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(envChild) != "" {
		os.Exit(childMain(os.Args[1:]))
	}
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	ps := newProcs()
	// Ctrl-C, or a supervisor's SIGTERM: stop everything the harness
	// started, then exit. The processes are killed, not asked: what is left
	// in the agent dies with the agent.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "svcbench: %v: stopping every process it started\n", sig)
		ps.close()
		os.Exit(128 + int(sig.(syscall.Signal)))
	}()
	_, err = run(context.Background(), cfg, ps, os.Stdout, os.Stderr)
	ps.close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "svcbench:", err)
		os.Exit(1)
	}
}

// config is the harness's command line.
type config struct {
	Runs     int           `json:"runs"`
	Quick    bool          `json:"quick"`
	Wrappers []string      `json:"wrappers"`
	Consul   string        `json:"consul"`
	Scale    []int         `json:"scale"`
	Hogged   []int         `json:"scale_hogged,omitempty"`
	Hogs     int           `json:"hogs,omitempty"`
	Idle     time.Duration `json:"idle_window"`
	Hold     time.Duration `json:"scale_hold"`
	Rate     float64       `json:"scale_rate,omitempty"`
	Poll     time.Duration `json:"poll"`
	Only     []string      `json:"only,omitempty"`
	AgentHCL string        `json:"agent_hcl,omitempty"`
	JSON     string        `json:"-"`
	Keep     bool          `json:"-"`
}

// The scenario groups, for -only.
var groups = []string{"latency", "signals", "stop", "footprint", "scale"}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	cfg := config{}
	fs := flag.NewFlagSet("svcbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Runs, "runs", 50, "runs of each latency measurement")
	fs.BoolVar(&cfg.Quick, "quick", false, "smoke run: 1 run each, -scale 10, -idle 5s, -hold 3s (unless given)")
	fs.Func("wrapper", "wrapper command prefix, split on spaces; repeat to compare (default bin/svcwrap)", func(s string) error {
		if strings.TrimSpace(s) == "" {
			return errors.New("empty wrapper")
		}
		cfg.Wrappers = append(cfg.Wrappers, s)
		return nil
	})
	fs.StringVar(&cfg.Consul, "consul", defaultConsul(), "Consul agent binary ($SVCWRAP_CONSUL_BIN)")
	scale := fs.String("scale", "100,500,1000", "numbers of wrappers for the scale runs, comma-separated")
	hogged := fs.String("scale-hogged", "1000", "numbers of wrappers for the scale runs on a loaded host (-hogs busy loops), comma-separated; empty: none")
	fs.IntVar(&cfg.Hogs, "hogs", runtime.NumCPU(), "busy loops that compete for the cores in the -scale-hogged runs")
	fs.DurationVar(&cfg.Idle, "idle", time.Minute, "idle window of the footprint measurement")
	fs.DurationVar(&cfg.Hold, "hold", 30*time.Second, "how long N wrappers idle together (a few TTLs, to see lapses)")
	fs.Float64Var(&cfg.Rate, "scale-rate", 0, "wrappers started per second in the scale runs; 0: as fast as the harness can fork")
	fs.DurationVar(&cfg.Poll, "poll", time.Millisecond, "period of the fine polls of the agent (the latencies' resolution)")
	only := fs.String("only", "", "run only these groups, comma-separated: "+strings.Join(groups, ","))
	fs.StringVar(&cfg.AgentHCL, "agent-hcl", "", "extra agent configuration for the scale runs, e.g. 'limits { http_max_conns_per_client = 2000 }'")
	fs.StringVar(&cfg.JSON, "json", "", "also write every sample as JSON to this file")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the work directory (agent and wrapper logs)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: svcbench [flags]\n\nMeasures a service wrapper against a Consul -dev agent on loopback.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "svcbench: unexpected arguments %q\n", fs.Args())
		return cfg, errors.New("usage")
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if cfg.Quick {
		if !given["runs"] {
			cfg.Runs = 1
		}
		if !given["scale"] {
			*scale = "10"
		}
		if !given["scale-hogged"] {
			*hogged = "10"
		}
		if !given["idle"] {
			cfg.Idle = 5 * time.Second
		}
		if !given["hold"] {
			cfg.Hold = 3 * time.Second
		}
	}
	var err error
	if cfg.Scale, err = parseCounts("-scale", *scale, stderr); err != nil {
		return cfg, err
	}
	if cfg.Hogged, err = parseCounts("-scale-hogged", *hogged, stderr); err != nil {
		return cfg, err
	}
	if *only != "" {
		for _, g := range strings.Split(*only, ",") {
			if !slices.Contains(groups, g) {
				fmt.Fprintf(stderr, "svcbench: -only: unknown group %q (groups: %s)\n", g, strings.Join(groups, ","))
				return cfg, errors.New("usage")
			}
			cfg.Only = append(cfg.Only, g)
		}
	}
	if cfg.Runs < 1 || cfg.Poll <= 0 || cfg.Idle <= 0 || cfg.Hold <= 0 || cfg.Rate < 0 || cfg.Hogs < 1 {
		fmt.Fprintln(stderr, "svcbench: -runs, -poll, -idle, -hold and -hogs must be positive, -scale-rate not negative")
		return cfg, errors.New("usage")
	}
	if len(cfg.Wrappers) == 0 {
		cfg.Wrappers = []string{"bin/svcwrap"}
	}
	return cfg, nil
}

// parseCounts reads a comma-separated list of positive numbers: the value of
// flag name.
func parseCounts(name, list string, stderr io.Writer) ([]int, error) {
	var ns []int
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "svcbench: %s: %q is not a positive number\n", name, s)
			return nil, errors.New("usage")
		}
		ns = append(ns, n)
	}
	return ns, nil
}

func defaultConsul() string {
	if p := os.Getenv("SVCWRAP_CONSUL_BIN"); p != "" {
		return p
	}
	return "bin/consul"
}

// wrapper is one wrapper under test.
type wrapper struct {
	name  string   // as given to -wrapper, for the tables
	argv  []string // the command prefix
	index int      // its place among the -wrapper flags: a wrapper given twice is measured twice, each with its own IDs and logs
}

// bench is one run of the harness.
type bench struct {
	ctx      context.Context
	cfg      config
	procs    *procs
	agent    *agent // shared by every scenario but scale, which starts its own
	self     string // this binary, which wrappers run as the benchmark child
	dir      string // work directory: logs
	wlog     *os.File
	out      io.Writer // progress
	wrappers []wrapper
	figs     []*figure
}

// run measures every wrapper of cfg, prints the tables to stdout and
// returns the figures. Every process it starts is stopped before it returns
// (ps.close, by the caller, is the backstop). An error means the harness
// itself could not run; a measurement that failed carries its error in its
// figure instead.
func run(ctx context.Context, cfg config, ps *procs, stdout, stderr io.Writer) ([]*figure, error) {
	raiseFileLimit()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "svcbench-")
	if err != nil {
		return nil, err
	}
	b := &bench{ctx: ctx, cfg: cfg, procs: ps, self: self, dir: dir, out: stderr}
	defer func() {
		if cfg.Keep {
			fmt.Fprintln(stderr, "svcbench: logs kept in", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	for _, spec := range cfg.Wrappers {
		argv := strings.Fields(spec)
		if _, err := exec.LookPath(argv[0]); err != nil {
			return nil, fmt.Errorf("wrapper %q: %w (build it: make build)", spec, err)
		}
		b.wrappers = append(b.wrappers, wrapper{name: spec, argv: argv, index: len(b.wrappers)})
	}
	if _, err := os.Stat(cfg.Consul); err != nil {
		return nil, fmt.Errorf("consul agent: %w (build it: make consul)", err)
	}
	if b.wlog, err = os.Create(filepath.Join(dir, "wrappers.log")); err != nil {
		return nil, err
	}
	defer b.wlog.Close()

	meta := machine(cfg, b.wrappers)
	if b.wants("latency", "signals", "stop", "footprint") {
		b.progress("starting a dev agent")
		b.agent, err = startAgent(ps, cfg.Consul, dir, "svcbench", "", cfg.Poll)
		if err != nil {
			return nil, err
		}
		defer b.agent.stop()
		meta["consul"] = cfg.Consul + " " + b.agentVersion()
	}
	fmt.Fprintln(stdout, "# svcbench")
	fmt.Fprintln(stdout)
	for _, k := range []string{"date", "cpus", "memory", "kernel", "go", "consul", "wrappers", "runs", "poll", "load"} {
		fmt.Fprintf(stdout, "%-9s %v\n", k+":", meta[k])
	}
	for i, w := range b.wrappers {
		b.measure(w, i == 0)
		if ctx.Err() != nil {
			return b.figs, ctx.Err()
		}
	}

	// Other work on the machine skews every figure: say how busy it was.
	meta["load_end"] = loadAvg()
	fmt.Fprintf(stdout, "load at the end: %s\n", meta["load_end"])
	if b.agent != nil {
		med, mx := b.agent.pollRTT()
		meta["poll_rtt_median"], meta["poll_rtt_max"] = med.String(), mx.String()
		fmt.Fprintf(stdout, "fine poll: every %s, round trip median %s, max %s: a latency is timed at the answer that first shows the new state, at most one period plus one round trip after the event\n",
			cfg.Poll, med.Round(time.Microsecond), mx.Round(time.Microsecond))
	}
	printTables(stdout, b.figs)
	if cfg.JSON != "" {
		if err := writeJSON(cfg.JSON, meta, b.figs); err != nil {
			return b.figs, err
		}
		fmt.Fprintln(stderr, "svcbench: samples written to", cfg.JSON)
	}
	return b.figs, nil
}

// measure runs every wanted scenario for one wrapper.
func (b *bench) measure(w wrapper, first bool) {
	step := func(group, what string, f func()) {
		if b.wants(group) && b.ctx.Err() == nil {
			b.progress("%s: %s", w.name, what)
			f()
		}
	}
	step("latency", "start → passing, no --port", func() { b.readyAtOnce(w, false) })
	step("latency", "start → passing, --port", func() { b.readyAtOnce(w, true) })
	step("latency", "listen → passing", func() { b.listenToPassing(w) })
	step("latency", "stop listening → critical, default interval", func() { b.unlistenToCritical(w, 0) })
	step("latency", "stop listening → critical, 100ms", func() { b.unlistenToCritical(w, 100*time.Millisecond) })
	step("latency", "child exit → gone", func() { b.exitToGone(w) })
	step("signals", "signal forwarding", func() { b.forwarding(w, first) })
	step("stop", "SIGTERM", func() { b.sigterm(w) })
	step("footprint", fmt.Sprintf("footprint with --port, %s idle", b.cfg.Idle), func() { b.footprint(w, true) })
	step("footprint", fmt.Sprintf("footprint without --port, %s idle", b.cfg.Idle), func() { b.footprint(w, false) })
	for _, n := range b.cfg.Scale {
		step("scale", fmt.Sprintf("scale N=%d", n), func() { b.scale(w, n, 0) })
	}
	for _, n := range b.cfg.Hogged {
		step("scale", fmt.Sprintf("scale N=%d, %d busy loops", n, b.cfg.Hogs), func() { b.scale(w, n, b.cfg.Hogs) })
	}
}

// wants reports whether -only selects any of these groups.
func (b *bench) wants(groups ...string) bool {
	if len(b.cfg.Only) == 0 {
		return true
	}
	for _, g := range groups {
		if slices.Contains(b.cfg.Only, g) {
			return true
		}
	}
	return false
}

// figure adds a figure to the report.
func (b *bench) figure(group, name string, w wrapper, unit string, t *target, note string) *figure {
	f := &figure{Group: group, Name: name, Wrapper: w.name, Unit: unit, Target: t, Note: note}
	b.figs = append(b.figs, f)
	return f
}

// id is a service ID unique to the wrapper, scenario and run, so that no run
// sees what an earlier one left.
func (b *bench) id(w wrapper, scenario string, run int) string {
	return fmt.Sprintf("svcbench-w%d-%s-%d", w.index, scenario, run)
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.out, "svcbench: "+format+"\n", args...)
}

// agentVersion is the agent's version, from /v1/agent/self.
func (b *bench) agentVersion() string {
	var self struct{ Config struct{ Version string } }
	if err := b.agent.getJSON("/v1/agent/self", &self); err != nil {
		return "?"
	}
	return self.Config.Version
}

// raiseFileLimit lifts the soft limit on open files to the hard limit, for
// the harness and, since it is set explicitly, for everything it starts: the
// agent holds a connection per wrapper in the scale runs.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

// machine describes the machine and the run, for the report's header.
func machine(cfg config, ws []wrapper) map[string]any {
	m := map[string]any{
		"date":   time.Now().UTC().Format(time.RFC3339),
		"cpus":   runtime.NumCPU(),
		"go":     runtime.Version(),
		"runs":   cfg.Runs,
		"poll":   cfg.Poll.String(),
		"config": cfg,
	}
	var mem memUse
	if err := scanKB("/proc/meminfo", map[string]*int64{"MemTotal:": &mem.rss}); err == nil {
		m["memory"] = fmt.Sprintf("%.1f GiB", float64(mem.rss)/(1<<20))
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(data))
	}
	var names []string
	for _, w := range ws {
		names = append(names, fmt.Sprintf("%s (%s)", w.name, wrapperVersion(w)))
	}
	m["wrappers"] = strings.Join(names, ", ")
	m["consul"] = cfg.Consul
	m["load"] = loadAvg()
	return m
}

// loadAvg is the first three fields of /proc/loadavg: the run queue averaged
// over 1, 5 and 15 minutes.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// wrapperVersion is the first line of `WRAPPER --version`, if it has one.
func wrapperVersion(w wrapper) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, w.argv[0], append(w.argv[1:], "--version")...).Output()
	if err != nil {
		return "version unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}
