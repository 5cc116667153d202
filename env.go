package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/svcwrap/svcwrap/check"
	"github.com/svcwrap/svcwrap/sdnotify"
	"github.com/svcwrap/svcwrap/wrapper"
)

// tokenEnv are the variables that hand an ACL token on; the command gets them
// only with --pass-token.
var tokenEnv = []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "SVCWRAP_TOKEN_FILE"}

// notifyEnv are systemd's notify variables, never passed on: svcwrap is the
// one that tells systemd, and a command that read them would say READY=1
// before Consul has the service (or, with NotifyAccess=main, be ignored).
var notifyEnv = []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}

// notifier is what tells systemd of the service, with its watchdog timeout:
// nil unless NOTIFY_SOCKET is set or --notify asks. A failure to send is
// said once, at NOTICE (a unit that never hears READY=1 fails its start),
// through the default logger, which run sets to the lifecycle's. Whether to
// notify is decided from environ, as everything else svcwrap reads; the
// socket and the watchdog are then read by go-systemd's daemon package, which
// knows only the process's own environment. The two are the same but in
// tests that call run with an environment of their own, which set both.
func notifier(fs *pflag.FlagSet, want bool, environ []string) (wrapper.Notifier, time.Duration, error) {
	on := getenv(environ, "NOTIFY_SOCKET") != ""
	if fs.Changed("notify") {
		if want && !on {
			return nil, 0, errors.New("--notify: NOTIFY_SOCKET is not set (systemd sets it for Type=notify units)")
		}
		on = want
	}
	if !on {
		return nil, 0, nil
	}
	watchdog, err := sdnotify.WatchdogInterval()
	if err != nil {
		return nil, 0, fmt.Errorf("systemd watchdog: %w", err)
	}
	var once sync.Once
	return sdnotify.New(func(err error) {
		once.Do(func() {
			slog.Default().Log(context.Background(), wrapper.LevelNotice, "systemd notify: cannot send", "error", err)
		})
	}), watchdog, nil
}

// childEnv is the command's environment: svcwrap's, without systemd's notify
// variables, and without the variables that hand on the ACL token unless
// pass is set. Never nil, which would mean svcwrap's own environment to
// wrapper.
func childEnv(environ []string, pass bool) []string {
	env := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if slices.Contains(notifyEnv, k) || (!pass && slices.Contains(tokenEnv, k)) {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// getenv is os.Getenv over environ: the last of several entries wins.
func getenv(environ []string, key string) string {
	v := ""
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}

// splitList flattens "a,b" entries and drops empty ones.
func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

// applyEnv sets each flag not given on the command line from SVCWRAP_<FLAG>.
// List flags take a comma-separated list.
func applyEnv(fs *pflag.FlagSet, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "SVCWRAP_") {
			env[k] = v
		}
	}
	// An alias shares its flag's value: either given on the command line,
	// the environment sets neither.
	given := map[pflag.Value]bool{}
	fs.Visit(func(f *pflag.Flag) { given[f.Value] = true })
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		name := "SVCWRAP_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := env[name]
		if !ok || f.Changed || given[f.Value] || err != nil || f.Name == "help" || f.Name == "version" || f.Name == "completion" {
			return
		}
		values := []string{v}
		switch {
		case f.Name == "check":
			values = check.SplitSpecs(v) // a comma may belong to a URL or a command
		case f.Value.Type() == "stringArray":
			values = splitList([]string{v})
		}
		for _, value := range values {
			if e := fs.Set(f.Name, value); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
				return
			}
		}
	})
	return err
}
