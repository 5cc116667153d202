package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/sdnotify"
	"github.com/svcwrap/svcwrap/signals"
	"github.com/svcwrap/svcwrap/wrapper"
)

const usageLine = "svcwrap [flags] SERVICE -- COMMAND [ARG...]"

const examples = `  # Register nc as "netcat", passing once it listens on 9999:
  svcwrap --port 9999 netcat -- nc -l 9999

  # An agent elsewhere, a second one to fail over to, tags and meta:
  svcwrap --consul 10.0.0.5:8500,127.0.0.1:8500 --tag v2 --meta team=web \
      --port 8080 web -- /usr/bin/web --listen :8080

  # Passing only while it listens on 8080 and /health answers 2xx:
  svcwrap --port 8080 --check http://127.0.0.1:8080/health --grace 30s web -- /usr/bin/web

  # A script check (exit 0 passing, 1 warning, else critical), every 10s:
  svcwrap --check 'script:pg_isready -q' --interval 10 --check-timeout 3s pg -- postgres

  # nginx stops gracefully on SIGQUIT; give clients 5s to notice first:
  svcwrap --port 80 --stop-signal QUIT --drain 5s nginx -- nginx -g 'daemon off;'

  # Every ianitor command line works unchanged:
  svcwrap --consul-agent localhost:8500 --ttl 10 --heartbeat 1 --tags a --tags b \
      --port 9999 -vv netcat -- nc -l 9999`

const envHelp = `Every flag can also be set in the environment as SVCWRAP_<FLAG>, upper case
with dashes as underscores (SVCWRAP_PORT=9999, SVCWRAP_TTL=10s,
SVCWRAP_TAG=a,b; SVCWRAP_CHECK is split only where a new http:, https:,
tcp: or script: begins); a flag on the command line wins. The consul CLI's
variables work too: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
CONSUL_HTTP_TOKEN_FILE, CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY,
CONSUL_TLS_SERVER_NAME, CONSUL_HTTP_SSL, CONSUL_HTTP_SSL_VERIFY.

Bad input (a service name or ID the agent's HTTP paths cannot hold, meta
Consul would refuse, a malformed address, a timing below its minimum) is
refused before anything starts: one line on stderr, exit status 2.

Exit status: the command's; 128+N when signal N killed it; 2 for bad input
or a service ID held by another running svcwrap; 126 when the command cannot
be executed; 127 when it is not found.`

// The command line's floors for its timings: below them svcwrap would spend
// its time on Consul rather than on the service. wrapper.Config has none, so
// that tests can run the lifecycle on millisecond ticks.
const (
	minTTL           = time.Second
	minHeartbeat     = 100 * time.Millisecond
	minCheckInterval = 10 * time.Millisecond
	minConsulTimeout = 100 * time.Millisecond
)

// options are the command line's values before they become a wrapper.Config.
type options struct {
	consul        []string
	consulTimeout time.Duration
	tokenFile     string
	caFile        string
	clientCert    string
	clientKey     string
	tlsServerName string

	id              string
	address         string
	port            int
	tags            []string
	meta            []string
	ttl             seconds
	heartbeat       seconds
	checkInterval   seconds
	checks          []string
	checkTimeout    seconds
	checkSkipVerify bool
	grace           seconds
	failAfter       int
	passAfter       int
	deregisterAfter seconds
	deregister      string

	drain       seconds
	killTimeout seconds
	stopSignal  string
	keepChild   bool
	reap        string
	passToken   bool
	notify      bool

	verbose   int
	logFormat string
}

// run is the whole command line: parse, run the lifecycle, map the outcome to
// an exit code. It is main without the process-global parts, so tests call it.
func run(args []string, stdout, stderr io.Writer, environ []string, sigs <-chan os.Signal, catchLater func(context.Context)) int {
	cfg, ccfg, err := parse(args, environ, stdout, stderr)
	switch {
	case errors.Is(err, errShown):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "svcwrap: %s\n", err)
		return wrapper.ExitUsage
	}
	cfg.Signals, cfg.CatchLater = sigs, catchLater
	// Libraries that write to the standard logger (net/http prints
	// "Unsolicited response received on idle HTTP channel" when an agent
	// refuses a pooled connection) go through the lifecycle's logger too, at
	// info level, instead of around -v; so does the notify socket's failure
	// (see notifier). Run hands that logger over each time it adds the
	// service ID or the child's pid, and so does run's own last line.
	log := cfg.Logger
	cfg.OnLogger = func(l *slog.Logger) {
		log = l
		slog.SetDefault(l)
	}
	slog.SetDefault(log)
	if n, ok := cfg.Notify.(*sdnotify.Socket); ok {
		defer n.Close() // STOPPING=1, queued as svcwrap ends, goes out
	}
	client, err := consulclient.New(ccfg)
	if err != nil {
		errorLine(stderr, log, err.Error())
		return wrapper.ExitUsage
	}
	code, err := wrapper.Run(context.Background(), cfg, client)
	switch {
	case err == nil:
		return code
	case errors.Is(err, wrapper.ErrUsage):
		errorLine(stderr, log, strings.TrimPrefix(err.Error(), "usage: "))
		return wrapper.ExitUsage
	default:
		errorLine(stderr, log, err.Error())
		if code == 0 {
			code = 1
		}
		return code
	}
}

// errShown means parse printed the help or the version: nothing to run.
var errShown = errors.New("help or version shown")

// parse reads the command line and the environment into the lifecycle's and
// the Consul client's configurations, checked as wrapper.Run checks them, and
// starts nothing. --help and --version print to stdout and return errShown.
// Any other error is bad input, said in one line.
func parse(args, environ []string, stdout, stderr io.Writer) (wrapper.Config, consulclient.Config, error) {
	var (
		opts options
		cfg  wrapper.Config
		ccfg consulclient.Config
		ran  bool
	)
	cmd := newRoot(&opts)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		ran = true
		if err := applyEnv(cmd.Flags(), environ); err != nil {
			return err
		}
		var err error
		if cfg, ccfg, err = opts.config(cmd, args, environ); err != nil {
			return err
		}
		if _, err := cfg.Validate(); err != nil {
			return err
		}
		cfg.Logger = newLogger(stderr, opts.verbose, opts.logFormat)
		return nil
	}
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := execute(cmd, args); err != nil {
		return cfg, ccfg, errors.New(oneLine(strings.TrimPrefix(err.Error(), "usage: ")))
	}
	if !ran {
		return cfg, ccfg, errShown
	}
	return cfg, ccfg, nil
}

// newRoot is svcwrap's command without its action: the flags, the help and
// the version. parse adds the action; the man page (mangen.go) is made from
// the same command, so the two cannot disagree.
func newRoot(opts *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:     usageLine,
		Short:   "Run a command as a Consul service: registered while it runs and is ready, gone when it exits.",
		Long:    "svcwrap runs COMMAND as its child and keeps the child's entry in Consul true:\nregistered with a TTL check, passing while the child runs (and, with --port,\nlistens on that port), critical when it does not, and deregistered the moment\nit exits. Signals are forwarded to the child's process group; svcwrap exits\nwith the child's exit status.\n\n" + envHelp + "\n\n" + completionHelp,
		Example: examples,
		Version: buildVersion(debug.ReadBuildInfo()),
		// Errors are printed once, as one line, by run.
		SilenceErrors: true,
		SilenceUsage:  true,
		// svcwrap has no subcommands: every word before -- is a service
		// name, "completion" and "help" included (see execute).
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	opts.register(cmd.Flags())
	addCompletion(cmd)
	return cmd
}

// oneLine escapes what is not printable in an error message, a newline
// first, so that the message stays one line whatever the input held.
func oneLine(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}

func (o *options) register(fs *pflag.FlagSet) {
	fs.SortFlags = false
	fs.StringSliceVar(&o.consul, "consul", nil, "Consul agent address(es), this host's first; svcwrap moves to the next when the one it uses stops answering: host[:port], [v6]:port, http://host[:port], https://host[:port], unix:///path; no port means 8500, 8501 after https:// (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	// An alias shares its flag's value, so that --consul A --consul-agent B
	// is both A and B; flags of their own would each start the list afresh.
	fs.Var(fs.Lookup("consul").Value, "consul-agent", "same as --consul (ianitor's name)")
	fs.DurationVar(&o.consulTimeout, "consul-timeout", wrapper.DefaultConsulTimeout, "bound on each request to Consul, and on all of Consul's part of a stop (minimum 100ms)")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding the ACL token (default $CONSUL_HTTP_TOKEN_FILE, $CONSUL_HTTP_TOKEN)")
	fs.StringVar(&o.caFile, "ca-file", "", "CA certificate for TLS to the agent (default $CONSUL_CACERT)")
	fs.StringVar(&o.clientCert, "client-cert", "", "client certificate for TLS (default $CONSUL_CLIENT_CERT)")
	fs.StringVar(&o.clientKey, "client-key", "", "client key for TLS (default $CONSUL_CLIENT_KEY)")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "", "server name to verify in the agent's certificate (default $CONSUL_TLS_SERVER_NAME)")

	fs.StringVar(&o.id, "id", "", "service ID (default: the service name); like the name, printable, no \"/\", not \".\" or \"..\", and no '\"'")
	fs.StringVar(&o.address, "address", "", "service address to register: an IP address or a host name (default: the agent's node address)")
	fs.IntVar(&o.port, "port", 0, "service port; the service is passing only while the command listens on it")
	fs.StringArrayVar(&o.tags, "tag", nil, "service tag (repeatable)")
	fs.Var(fs.Lookup("tag").Value, "tags", "same as --tag (ianitor's name)")
	fs.StringArrayVar(&o.meta, "meta", nil, "service meta as key=value (repeatable, at most 63; keys of A-Z a-z 0-9 _ -, at most 128, not consul-*; values at most 512 bytes)")
	o.ttl = seconds(wrapper.DefaultTTL)
	fs.Var(&o.ttl, "ttl", "TTL of the check: a duration (10s) or seconds (10, 2.5); minimum 1s")
	fs.Var(&o.heartbeat, "heartbeat", "how often an unchanged status is refreshed; shorter than --ttl, minimum 100ms (default 60% of ttl)")
	o.checkInterval = seconds(wrapper.DefaultCheckInterval)
	fs.Var(&o.checkInterval, "check-interval", "how often every check runs once it has first passed (a stopped listener turns critical within it; before the first pass, and for the listen check after a drop, every few ms); minimum 10ms")
	fs.Var(fs.Lookup("check-interval").Value, "interval", "same as --check-interval (the ianitor fork's name)")
	fs.StringArrayVar(&o.checks, "check", nil, "an active check beside --port's listen check, repeatable, the worst status wins: http:URL (2xx passing, 429 warning, else critical), tcp:HOST:PORT (connects), script:COMMAND (/bin/sh -c; exit 0 passing, 1 warning, else critical). tcp: and http: connect: never against nc -l")
	o.checkTimeout = seconds(wrapper.DefaultCheckTimeout)
	fs.Var(&o.checkTimeout, "check-timeout", "bound on each run of a --check; longer is critical, and a script's process group is killed; minimum 10ms")
	fs.BoolVar(&o.checkSkipVerify, "check-tls-skip-verify", false, "accept any certificate in https:// checks")
	fs.Var(&o.grace, "grace", "for this long after the start, until the checks first pass, report critical as warning (a service slow to become ready)")
	fs.IntVar(&o.failAfter, "fail-after", 1, "results in a row that turn a check critical (Consul's failures_before_critical)")
	fs.IntVar(&o.passAfter, "pass-after", 1, "results in a row that turn a critical check passing (Consul's success_before_passing)")
	o.deregisterAfter = seconds(wrapper.DefaultDeregisterAfter)
	fs.Var(&o.deregisterAfter, "deregister-after", "Consul removes the service when its check stays critical this long, e.g. after svcwrap is SIGKILLed (minimum 1m; 0: never)")
	fs.StringVar(&o.deregister, "deregister", "on-exit", "when to deregister after the command ends: on-exit, on-success (a failure stays visible, critical), never")

	fs.Var(&o.drain, "drain", "on SIGTERM/SIGINT, wait this long after deregistering before forwarding the stop signal")
	o.killTimeout = seconds(wrapper.DefaultKillTimeout)
	fs.Var(&o.killTimeout, "kill-timeout", "after the stop signal, wait this long, then SIGKILL the command's process group")
	fs.StringVar(&o.stopSignal, "stop-signal", "", "signal to forward instead of SIGTERM/SIGINT on stop, e.g. QUIT (default: the one received)")
	fs.BoolVar(&o.keepChild, "keep-child", false, "let the command outlive svcwrap if svcwrap is killed with SIGKILL (no parent-death signal)")
	fs.StringVar(&o.reap, "reap", "auto", "reap every orphaned process, as PID 1 must: auto (when PID 1), always, never")
	fs.BoolVar(&o.passToken, "pass-token", false, "leave CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE and SVCWRAP_TOKEN_FILE in the command's environment (default: removed)")

	fs.BoolVar(&o.notify, "notify", false, "tell systemd (Type=notify) READY=1 once the service passes in Consul, STATUS= at each change, STOPPING=1 at the stop, and keep-alives when WatchdogSec= is set (default: when $NOTIFY_SOCKET is set; --notify=false: never)")
	fs.CountVarP(&o.verbose, "verbose", "v", "log to stderr: -v what svcwrap does (EVENT) and errors, -vv warnings, -vvv everything (NOTICE, what an operator must see, always)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
}

// config checks the command line and turns it into the lifecycle's and the
// Consul client's configurations. Every error is a usage error.
func (o *options) config(cmd *cobra.Command, args []string, environ []string) (wrapper.Config, consulclient.Config, error) {
	var cfg wrapper.Config
	var ccfg consulclient.Config
	dash := cmd.ArgsLenAtDash()
	switch {
	case dash < 0 && len(args) == 0:
		return cfg, ccfg, errors.New("missing service name and command: " + usageLine)
	case dash < 0 && len(args) == 1:
		return cfg, ccfg, errors.New("missing -- and the command after the service name: " + usageLine)
	case dash < 0:
		// Flags were read only up to the service name (see execute): the
		// rest is the command, said back with the -- where it belongs.
		return cfg, ccfg, fmt.Errorf("missing -- between the service name and the command: want svcwrap [flags] %s -- %s", args[0], strings.Join(args[1:], " "))
	case dash == 0:
		return cfg, ccfg, errors.New("missing service name before --: " + usageLine)
	case dash > 1:
		return cfg, ccfg, fmt.Errorf("one service name expected before --, got %d: %s", dash, strings.Join(args[:dash], " "))
	case dash == len(args):
		return cfg, ccfg, errors.New("missing command after --")
	}
	fs := cmd.Flags()
	if fs.Changed("port") && (o.port < 1 || o.port > 65535) {
		return cfg, ccfg, fmt.Errorf("--port %d: want a port in 1-65535", o.port)
	}
	if fs.Changed("id") && o.id == "" {
		return cfg, ccfg, errors.New("--id: empty service ID")
	}
	meta := map[string]string{}
	for _, kv := range o.meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return cfg, ccfg, fmt.Errorf("--meta %q: want key=value", kv)
		}
		if _, dup := meta[k]; dup {
			return cfg, ccfg, fmt.Errorf("--meta %q: key %q given twice", kv, k)
		}
		meta[k] = v
	}
	timings := []struct {
		name  string
		d     time.Duration
		floor time.Duration // zero: none
	}{
		{"ttl", time.Duration(o.ttl), minTTL},
		{"heartbeat", time.Duration(o.heartbeat), minHeartbeat},
		{"check-interval", time.Duration(o.checkInterval), minCheckInterval}, // or its alias --interval
		{"check-timeout", time.Duration(o.checkTimeout), minCheckInterval},
		{"consul-timeout", o.consulTimeout, minConsulTimeout},
		{"kill-timeout", time.Duration(o.killTimeout), 0},
	}
	for _, t := range timings {
		if t.name == "check-interval" && !fs.Changed(t.name) && fs.Changed("interval") {
			t.name = "interval" // the error names the flag as given
		}
		if !fs.Changed(t.name) {
			continue // the defaults are above the floors; the heartbeat's is 60% of the ttl
		}
		switch {
		case t.d == 0, t.d < 0 && t.name == "consul-timeout":
			// wrapper.Config reads these as "the default", so only here,
			// where the flag was given, are they a mistake. The other
			// negatives Validate refuses.
			return cfg, ccfg, fmt.Errorf("--%s %s: must be positive", t.name, t.d)
		case t.d > 0 && t.d < t.floor:
			return cfg, ccfg, fmt.Errorf("--%s %s: below the minimum of %s", t.name, t.d, t.floor)
		}
	}
	if err := o.checkFlags(); err != nil {
		return cfg, ccfg, err
	}
	if o.deregisterAfter < 0 {
		return cfg, ccfg, fmt.Errorf("--deregister-after %s: must not be negative (0: never)", time.Duration(o.deregisterAfter))
	}
	policy, err := wrapper.ParsePolicy(o.deregister)
	if err != nil {
		return cfg, ccfg, err
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return cfg, ccfg, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	cfg = wrapper.Config{
		Name:          args[0],
		ID:            o.id,
		Tags:          o.tags,
		Meta:          meta,
		Address:       o.address,
		Port:          o.port,
		Command:       args[dash:],
		TTL:           time.Duration(o.ttl),
		Heartbeat:     time.Duration(o.heartbeat),
		CheckInterval: time.Duration(o.checkInterval),
		Checks:        o.checks,
		CheckTimeout:  time.Duration(o.checkTimeout),
		Grace:         time.Duration(o.grace),
		FailAfter:     o.failAfter,
		PassAfter:     o.passAfter,
		Deregister:    policy,
		Drain:         time.Duration(o.drain),
		KillTimeout:   time.Duration(o.killTimeout),
		ConsulTimeout: o.consulTimeout,
		KeepChild:     o.keepChild,
		Terminal:      true,

		CheckTLSSkipVerify: o.checkSkipVerify,
	}
	cfg.DeregisterAfter = time.Duration(o.deregisterAfter)
	if cfg.DeregisterAfter == 0 {
		cfg.DeregisterAfter = -1 // the flag's 0 means never
	}
	if o.stopSignal != "" {
		if cfg.StopSignal, err = signals.Parse(o.stopSignal); err != nil {
			return cfg, ccfg, fmt.Errorf("--stop-signal: %w", err)
		}
	}
	switch o.reap {
	case "auto":
		cfg.ReapAll = os.Getpid() == 1
	case "always":
		cfg.ReapAll = true
	case "never":
	default:
		return cfg, ccfg, fmt.Errorf("--reap %q: want auto, always or never", o.reap)
	}
	addrs, err := agentAddrs(fs, o.consul, environ)
	if err != nil {
		return cfg, ccfg, err
	}
	cfg.Env = childEnv(environ, o.passToken)
	if cfg.Notify, cfg.Watchdog, err = notifier(fs, o.notify, environ); err != nil {
		return cfg, ccfg, err
	}
	ccfg = consulclient.Config{
		Addrs:     addrs,
		Timeout:   o.consulTimeout,
		TokenFile: o.tokenFile,
		CAFile:    o.caFile, CertFile: o.clientCert, KeyFile: o.clientKey,
		TLSServerName: o.tlsServerName,
	}
	return cfg, ccfg, nil
}

// agentAddrs returns the agent addresses of --consul and --consul-agent, else
// of CONSUL_HTTP_ADDR, normalized by consulclient.ParseAgentAddr. None: the
// api client's default, 127.0.0.1:8500.
func agentAddrs(fs *pflag.FlagSet, flags []string, environ []string) ([]string, error) {
	addrs, from := splitList(flags), "--consul"
	switch {
	case fs.Changed("consul") || fs.Changed("consul-agent"):
		if len(addrs) == 0 {
			return nil, errors.New("--consul: no agent address")
		}
	case getenv(environ, "CONSUL_HTTP_ADDR") != "":
		addrs, from = []string{getenv(environ, "CONSUL_HTTP_ADDR")}, "CONSUL_HTTP_ADDR"
	}
	for i, a := range addrs {
		n, err := consulclient.ParseAgentAddr(a)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", from, err)
		}
		addrs[i] = n
	}
	return addrs, nil
}

// seconds is a duration flag that also takes plain seconds, as ianitor's
// --ttl and --heartbeat do: "10", "2.5" and "10s" all work.
type seconds time.Duration

func (s *seconds) String() string {
	if *s == 0 {
		return ""
	}
	return time.Duration(*s).String()
}

func (s *seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		d := f * float64(time.Second)
		if math.IsNaN(d) || math.Abs(d) >= math.MaxInt64 {
			return fmt.Errorf("want a duration (10s) or seconds (10) of at most %s", time.Duration(math.MaxInt64))
		}
		*s = seconds(d)
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want a duration (10s) or seconds (10)")
	}
	*s = seconds(d)
	return nil
}

func (s *seconds) Type() string { return "duration" }
