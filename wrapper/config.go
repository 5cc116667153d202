package wrapper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/svcwrap/svcwrap/check"
	"github.com/svcwrap/svcwrap/consulclient"
)

// Defaults for the zero values of Config. They are the command line's defaults
// too, so that a library user and a shell user get the same behaviour.
const (
	DefaultTTL             = 10 * time.Second
	DefaultCheckInterval   = time.Second
	DefaultDeregisterAfter = time.Minute
	DefaultKillTimeout     = 10 * time.Second
	DefaultConsulTimeout   = 5 * time.Second
	DefaultCheckTimeout    = 5 * time.Second
)

// DefaultHeartbeatPercent is the default heartbeat, in percent of the
// TTL: 6 s of the default 10 s. Every heartbeat costs the agent a full
// pass over all its services and checks (it syncs after each TTL
// update), so at a thousand services on a host the heartbeat rate is the
// agent's CPU: 13% of a core at 60%, 19% at a third (BENCHMARKS.md). The
// 4 s left are for retries of a heartbeat the agent turned away, which
// it answers at once (100 ms, then doubling: five tries); an agent that
// takes the request and does not answer would not answer a retry either.
const DefaultHeartbeatPercent = 60

// Policy says when svcwrap removes the service from Consul after the child ends.
type Policy int

const (
	// DeregisterOnExit removes the service whenever the child ends.
	DeregisterOnExit Policy = iota
	// DeregisterOnSuccess removes it only when the child exited 0, or ended
	// through the stop signal svcwrap forwarded on request. A failed child's
	// service stays, critical, so the failure shows in Consul until the
	// reaper removes it after DeregisterAfter.
	DeregisterOnSuccess
	// DeregisterNever leaves the service, critical, for Consul's reaper.
	DeregisterNever
)

// ParsePolicy reads "on-exit", "on-success" or "never".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "on-exit", "always":
		return DeregisterOnExit, nil
	case "on-success":
		return DeregisterOnSuccess, nil
	case "never":
		return DeregisterNever, nil
	}
	return 0, fmt.Errorf("--deregister %q: want on-exit, on-success or never", s)
}

func (p Policy) String() string {
	switch p {
	case DeregisterOnSuccess:
		return "on-success"
	case DeregisterNever:
		return "never"
	}
	return "on-exit"
}

// Config is everything Run needs. Each field's zero value is documented; zero
// values give the command line's defaults.
type Config struct {
	// Name is the Consul service name. Required; it must pass
	// consulclient.ValidateServiceName.
	Name string
	// ID is the service ID; it must pass consulclient.ValidateServiceID.
	// Empty: Name, as Consul and ianitor do.
	ID string
	// Tags and Meta are registered as given. An empty tag is an error. Meta
	// must pass consulclient.ValidateMeta with room for svcwrap's own key,
	// svcwrap_instance: at most 63 pairs, and not that key.
	Tags []string
	Meta map[string]string
	// Address is the registered address: an IP address or a host name
	// (consulclient.ValidateServiceAddress). Empty: the agent's node address.
	Address string
	// Port is the registered port, and the port the child must listen on
	// before it counts as ready. Zero: no port and no listen check; ready
	// means the Checks pass, or, without Checks, alive.
	Port int

	// Command is the child's argv. Required; no shell is involved.
	Command []string
	// Env is the child's whole environment. Nil: svcwrap's own.
	Env []string

	// TTL is the check's time to live. Zero: DefaultTTL.
	TTL time.Duration
	// Heartbeat is how often an unchanged status is refreshed; it must be
	// shorter than TTL. Zero: DefaultHeartbeatPercent of the TTL.
	Heartbeat time.Duration
	// CheckInterval is how often each check runs once it has first passed;
	// a child that stops listening, or a check that starts failing, turns
	// critical within one interval. Until its first pass a check runs far
	// more often (see probe.go), so that a child that becomes ready is
	// passing moments later; the listen check, which never touches the
	// service, does so again after a drop. Zero: DefaultCheckInterval.
	CheckInterval time.Duration
	// Checks are active checks run beside the listen check of Port, each
	// "KIND:TARGET" as check.ParseSpec reads it: http:URL, tcp:HOST:PORT,
	// script:COMMAND. The worst status of all checks wins. Nil: none.
	Checks []string
	// CheckTimeout bounds each run of an active check; a check that runs
	// longer is critical. Zero: DefaultCheckTimeout.
	CheckTimeout time.Duration
	// CheckTLSSkipVerify accepts any certificate in https:// checks.
	// False: the system's roots verify it.
	CheckTLSSkipVerify bool
	// Grace reports a critical result as warning until the checks first
	// pass or Grace has passed since the start, for a service slow to
	// become ready. Zero: none.
	Grace time.Duration
	// FailAfter and PassAfter are how many results in a row turn a check
	// critical (from passing or warning) and back, as Consul's
	// FailuresBeforeCritical and SuccessBeforePassing. Zero: one.
	FailAfter, PassAfter int
	specs                []check.Spec // Checks, parsed by withDefaults
	checkers             []Checker    // run after those of Checks; the tests' fakes
	// DeregisterAfter is the check's DeregisterCriticalServiceAfter: how long
	// Consul keeps a service whose check stays critical, which is what cleans
	// up after a svcwrap killed by SIGKILL. Consul's minimum is one minute.
	// Zero: DefaultDeregisterAfter; negative: never.
	DeregisterAfter time.Duration
	// Deregister says when the service is removed after the child ends.
	// Zero: DeregisterOnExit.
	Deregister Policy

	// Drain is how long to wait, between deregistering and forwarding the
	// stop signal, for clients to notice. Zero: no wait.
	Drain time.Duration
	// KillTimeout is how long the child has to end after the stop signal
	// before its whole process group is killed. Zero: DefaultKillTimeout.
	KillTimeout time.Duration
	// StopSignal replaces SIGTERM and SIGINT when svcwrap forwards a stop
	// (SIGQUIT for nginx's graceful stop, say). Zero: forward the signal
	// svcwrap received.
	StopSignal syscall.Signal
	// ConsulTimeout bounds each request to Consul, and all of Consul's part
	// of a stop before the child hears the stop signal; a deregistration
	// the agent refused or did not answer by then goes on while the child
	// stops, up to ConsulTimeout + Drain + KillTimeout after the stop began.
	// Zero: DefaultConsulTimeout.
	ConsulTimeout time.Duration
	// LockDir holds the host locks, one file per agent and service ID, that
	// let one svcwrap of this host at a time claim an ID. Zero: /run/svcwrap
	// where it exists, else /dev/shm/svcwrap, else svcwrap in os.TempDir().
	// Where no lock can be taken, the claim is not atomic but the service
	// runs.
	LockDir string

	// KeepChild turns off the parent-death signal: the child then survives a
	// svcwrap killed with SIGKILL. False: the kernel kills the child with it.
	KeepChild bool
	// ReapAll makes svcwrap reap every process reparented to it, as PID 1
	// must. False: only the child is waited for.
	ReapAll bool
	// Terminal gives the child the terminal's foreground when svcwrap has it,
	// so that a child such as `nc -l` can read it and a Ctrl-C reaches the
	// child once, directly. False: the child never owns the terminal.
	Terminal bool

	// Signals delivers the signals svcwrap received (signals.Catch in main).
	// Nil: none are forwarded, and only the child's exit or ctx ends Run.
	Signals <-chan os.Signal
	// CatchLater, if not nil, catches the signals main left for later (the
	// real-time ones: signals.Catch), off the path from start to passing,
	// which it would lengthen by a millisecond. Run calls it once: when the
	// first registration has been answered or has failed, before the status
	// is logged or READY sent; or catchLaterAfter after the child's start
	// (an agent that hangs). Its context ends when the stop begins: it should
	// then give up, and not slow the stop.
	CatchLater func(ctx context.Context)
	// Logger receives svcwrap's own log. Nil: nothing is logged.
	Logger *slog.Logger
	// OnLogger, if not nil, is handed Logger each time Run adds to it what
	// every line carries (the service ID, then the child's pid), so that
	// what logs from outside Run (the standard library's log, the notify
	// socket's failure) can carry it too. Nil: nobody is told.
	OnLogger func(*slog.Logger)
	// Notify tells the service manager how the service is doing: READY
	// once it is passing in Consul, a status line at each change, STOPPING
	// when the stop begins (sdnotify.Socket, for systemd). Nil: nobody is
	// told.
	Notify Notifier
	// Watchdog is the service manager's watchdog timeout (systemd's
	// WATCHDOG_USEC): while the child lives, the supervise loop sends Notify
	// a keep-alive every half of it. Zero: no keep-alives.
	Watchdog time.Duration
	// Start starts the child. Nil: signals.Start. Tests put a fake here.
	Start StartFunc
}

// ErrUsage marks a configuration error; the command line exits 2 for it.
var ErrUsage = errors.New("usage")

func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

func usageErr(err error) error { return fmt.Errorf("%w: %w", ErrUsage, err) }

// Validate returns cfg as Run would use it, every zero value replaced by its
// default, or an error wrapping ErrUsage for the first thing wrong with it.
// Run validates by itself; Validate is for checking a configuration without
// starting anything. Pass Run the Config given to Validate, not the one it
// returns: a negative DeregisterAfter becomes zero, which Run would read as
// the default.
func (cfg Config) Validate() (Config, error) { return cfg.withDefaults() }

// withDefaults returns cfg with every zero value replaced by its default, and
// an error wrapping ErrUsage for the first thing that is wrong with it.
func (cfg Config) withDefaults() (Config, error) {
	if err := consulclient.ValidateServiceName(cfg.Name); err != nil {
		return cfg, usageErr(err)
	}
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return cfg, usagef("missing command after --")
	}
	if cfg.ID == "" {
		cfg.ID = cfg.Name
	}
	if err := consulclient.ValidateServiceID(cfg.ID); err != nil {
		return cfg, usageErr(err)
	}
	for _, t := range cfg.Tags {
		if strings.TrimSpace(t) == "" {
			return cfg, usagef("empty tag")
		}
	}
	// svcwrap adds its own key to every registration: it counts against
	// Consul's limit, and is not the user's to set.
	if _, ok := cfg.Meta[metaInstance]; ok {
		return cfg, usagef("meta key %s is svcwrap's own", metaInstance)
	}
	if len(cfg.Meta) >= consulclient.MaxMetaPairs {
		return cfg, usagef("meta: %d pairs, at most %d (Consul takes %d, and svcwrap adds %s)",
			len(cfg.Meta), consulclient.MaxMetaPairs-1, consulclient.MaxMetaPairs, metaInstance)
	}
	if err := consulclient.ValidateMeta(cfg.Meta); err != nil {
		return cfg, usageErr(err)
	}
	if err := consulclient.ValidateServiceAddress(cfg.Address); err != nil {
		return cfg, usageErr(err)
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return cfg, usagef("port %d outside 1-65535", cfg.Port)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < 0 {
		return cfg, usagef("ttl %s: must be positive", cfg.TTL)
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = cfg.TTL * DefaultHeartbeatPercent / 100
	}
	if cfg.Heartbeat <= 0 {
		return cfg, usagef("heartbeat %s: must be positive", cfg.Heartbeat)
	}
	if cfg.Heartbeat >= cfg.TTL {
		return cfg, usagef("heartbeat %s must be shorter than ttl %s", cfg.Heartbeat, cfg.TTL)
	}
	if cfg.CheckInterval == 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.CheckInterval < 0 {
		return cfg, usagef("check interval %s: must be positive", cfg.CheckInterval)
	}
	cfg.specs = nil
	for _, c := range cfg.Checks {
		spec, err := check.ParseSpec(c)
		if err != nil {
			return cfg, usageErr(err)
		}
		cfg.specs = append(cfg.specs, spec)
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	if cfg.CheckTimeout < 0 {
		return cfg, usagef("check timeout %s: must be positive", cfg.CheckTimeout)
	}
	if cfg.Grace < 0 {
		return cfg, usagef("grace %s: must not be negative", cfg.Grace)
	}
	if cfg.FailAfter < 0 || cfg.PassAfter < 0 {
		return cfg, usagef("fail-after %d, pass-after %d: must not be negative", cfg.FailAfter, cfg.PassAfter)
	}
	switch {
	case cfg.DeregisterAfter == 0:
		cfg.DeregisterAfter = DefaultDeregisterAfter
	case cfg.DeregisterAfter < 0:
		cfg.DeregisterAfter = 0 // never reaped
	case cfg.DeregisterAfter < time.Minute:
		return cfg, usagef("deregister-after %s is below Consul's minimum of 1m", cfg.DeregisterAfter)
	}
	if cfg.Drain < 0 {
		return cfg, usagef("drain %s: must not be negative", cfg.Drain)
	}
	if cfg.KillTimeout == 0 {
		cfg.KillTimeout = DefaultKillTimeout
	}
	if cfg.KillTimeout < 0 {
		return cfg, usagef("kill timeout %s: must be positive", cfg.KillTimeout)
	}
	if cfg.ConsulTimeout <= 0 {
		cfg.ConsulTimeout = DefaultConsulTimeout
	}
	if cfg.LockDir == "" {
		cfg.LockDir = defaultLockDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnLogger == nil {
		cfg.OnLogger = func(*slog.Logger) {}
	}
	if cfg.Watchdog < 0 {
		return cfg, usagef("watchdog %s must not be negative", cfg.Watchdog)
	}
	if cfg.Notify == nil {
		cfg.Notify = silent{}
	}
	return cfg, nil
}

// silent is the Notifier of a Config without one.
type silent struct{}

func (silent) Ready(string)    {}
func (silent) Status(string)   {}
func (silent) Stopping(string) {}
func (silent) Watchdog()       {}

// notifies reports whether a service manager hears of the service, for the
// start line.
func (cfg Config) notifies() bool { return cfg.Notify != silent{} }

// nextBeat is how long after an update was sent the next heartbeat is due,
// given that the agent took took to answer it, and whether the update was a
// registration (fresh). An agent resets the TTL somewhere between the
// sending and its answer, so the next update must reach it within the TTL
// of the sending, and a busy agent takes as long again or longer: a host's
// start is a herd of registrations, each of which costs the agent a pass
// over all its services, and a heartbeat queued behind a few hundred of
// them waits seconds. So the heartbeat comes sooner when the agent was
// slow, leaving twice the last answer's time to spare (but not sooner than
// a tenth of the TTL), and the first after a registration, when such a herd
// is likeliest, at a third of the TTL at most. An agent that answers in
// milliseconds, as an idle one does, gets the heartbeat as configured.
func (cfg Config) nextBeat(took time.Duration, fresh bool) time.Duration {
	every := cfg.Heartbeat
	if fresh {
		every = min(every, cfg.TTL/3)
	}
	slack := min(nextBeatSlack, cfg.TTL/10)
	if spare := cfg.TTL - 2*took - slack; spare < every {
		every = min(every, max(spare, cfg.TTL/10))
	}
	return every
}

// nextBeatSlack is what nextBeat leaves the TTL beyond twice the last
// answer's time: enough for the heartbeat grid (beatSlot brings a heartbeat
// forward, never back) and the request's own way to the agent. A short TTL
// leaves a tenth of itself, as the grid does: a full second would take all
// of a 1 s TTL, and every heartbeat would come at a tenth of it.
const nextBeatSlack = time.Second

// beat is the period the syncer's patience is counted in: how long an agent
// may go unanswering before svcwrap moves to the next one, and a failure
// before it is reported. It is the heartbeat, but no more than a third of
// the TTL: the default heartbeat leaves less than that, and a move or a
// report must not wait for a refresh the TTL has no room for.
func (cfg Config) beat() time.Duration {
	return min(cfg.Heartbeat, cfg.TTL/3)
}
