package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/wrapper"
)

// At the default verbosity only wrapper.LevelNotice shows, as NOTICE; -v adds
// wrapper.LevelEvent, as EVENT, and errors; -vv warnings; -vvv everything.
func TestNewLogger_Levels(t *testing.T) {
	levels := []struct {
		level slog.Level
		text  string
		json  string
	}{
		{wrapper.LevelNotice, "level=NOTICE", `"level":"NOTICE"`},
		{wrapper.LevelEvent, "level=EVENT", `"level":"EVENT"`},
		{slog.LevelError, "level=ERROR", `"level":"ERROR"`},
		{slog.LevelWarn, "level=WARN", `"level":"WARN"`},
		{slog.LevelInfo, "level=INFO", `"level":"INFO"`},
		{slog.LevelDebug, "level=DEBUG", `"level":"DEBUG"`},
	}
	for verbose, shown := range []int{1, 3, 4, 6} { // how many of levels show
		for _, format := range []string{"text", "json"} {
			var b bytes.Buffer
			log := newLogger(&b, verbose, format)
			for _, l := range levels {
				log.Log(context.Background(), l.level, "m", "k", "v")
			}
			for i, l := range levels {
				want := l.text
				if format == "json" {
					want = l.json
				}
				if i < shown {
					assert.Equal(t, 1, strings.Count(b.String(), want), "-v×%d %s: %s in\n%s", verbose, format, want, b.String())
				} else {
					assert.NotContains(t, b.String(), want, "-v×%d %s", verbose, format)
				}
			}
			assert.NotContains(t, b.String(), "ERROR+", "-v×%d %s", verbose, format)
		}
	}
}

func parseArgs(t *testing.T, environ []string, args ...string) (wrapper.Config, []string, error) {
	t.Helper()
	cfg, ccfg, err := parse(args, environ, io.Discard, io.Discard)
	return cfg, ccfg.Addrs, err
}

func TestParse_AgentAddrs(t *testing.T) {
	cases := []struct {
		name    string
		environ []string
		args    []string
		want    []string
	}{
		{"none", nil, nil, nil},
		{"ianitor", nil, []string{"--consul-agent", "localhost"}, []string{"localhost:8500"}},
		{"list", nil, []string{"--consul", "10.0.0.5,https://c.example", "--consul-agent", "unix:///run/c.sock"},
			[]string{"10.0.0.5:8500", "https://c.example:8501", "unix:///run/c.sock"}},
		{"env", []string{"CONSUL_HTTP_ADDR=http://127.0.0.1:18500/"}, nil, []string{"127.0.0.1:18500"}},
		{"flag-wins", []string{"CONSUL_HTTP_ADDR=ftp://bad"}, []string{"--consul", "[::1]"}, []string{"[::1]:8500"}},
		{"svcwrap-env", []string{"SVCWRAP_CONSUL=a,b:1"}, nil, []string{"a:8500", "b:1"}},
	}
	for _, c := range cases {
		args := append(append([]string{}, c.args...), "web", "--", "true")
		_, addrs, err := parseArgs(t, c.environ, args...)
		require.NoError(t, err, c.name)
		assert.Equal(t, c.want, addrs, c.name)
	}
}

// The floors are minimums: each is accepted, a nanosecond less is not.
func TestParse_TimingFloors(t *testing.T) {
	floors := map[string]time.Duration{"ttl": minTTL, "heartbeat": minHeartbeat, "check-interval": minCheckInterval, "consul-timeout": minConsulTimeout}
	for flag, floor := range floors {
		_, _, err := parseArgs(t, nil, "--"+flag, floor.String(), "web", "--", "true")
		assert.NoError(t, err, flag)
		below := floor - time.Nanosecond
		_, _, err = parseArgs(t, nil, "--"+flag, below.String(), "web", "--", "true")
		if assert.Error(t, err, flag) {
			assert.Equal(t, "--"+flag+" "+below.String()+": below the minimum of "+floor.String(), err.Error())
		}
	}
}

func TestParse_ChildEnv(t *testing.T) {
	environ := []string{"PATH=/bin", "CONSUL_HTTP_TOKEN=t", "CONSUL_HTTP_TOKEN_FILE=/f", "SVCWRAP_TOKEN_FILE=/dev/null", "CONSUL_HTTP_ADDR=127.0.0.1:1"}
	cfg, _, err := parseArgs(t, environ, "web", "--", "true")
	require.NoError(t, err)
	assert.Equal(t, []string{"PATH=/bin", "CONSUL_HTTP_ADDR=127.0.0.1:1"}, cfg.Env)
	cfg, _, err = parseArgs(t, environ, "--pass-token", "web", "--", "true")
	require.NoError(t, err)
	assert.Equal(t, environ, cfg.Env)
	cfg, _, err = parseArgs(t, append(environ, "SVCWRAP_PASS_TOKEN=1"), "web", "--", "true")
	require.NoError(t, err)
	assert.Equal(t, append(environ, "SVCWRAP_PASS_TOKEN=1"), cfg.Env)
	cfg, _, err = parseArgs(t, nil, "web", "--", "true")
	require.NoError(t, err)
	assert.NotNil(t, cfg.Env, "an empty environment, not svcwrap's own")
}

func TestParse_HelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"--version"}} {
		var out bytes.Buffer
		_, _, err := parse(args, nil, &out, io.Discard)
		assert.ErrorIs(t, err, errShown, "%q", args)
		assert.NotEmpty(t, out.String(), "%q", args)
	}
}

// ianitor's flag names are aliases: given together with svcwrap's, both count;
// either on the command line, the environment sets neither.
func TestParse_AliasesAdd(t *testing.T) {
	cfg, addrs, err := parseArgs(t, []string{"SVCWRAP_TAGS=z", "SVCWRAP_CONSUL_AGENT=c"},
		"--tag", "a", "--tags", "b", "--consul", "a", "--consul-agent", "b", "web", "--", "true")
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, cfg.Tags)
	assert.Equal(t, []string{"a:8500", "b:8500"}, addrs)
	cfg, addrs, err = parseArgs(t, []string{"SVCWRAP_TAG=x,y", "SVCWRAP_TAGS=z", "SVCWRAP_CONSUL=c"}, "web", "--", "true")
	require.NoError(t, err)
	assert.Equal(t, []string{"x", "y", "z"}, cfg.Tags)
	assert.Equal(t, []string{"c:8500"}, addrs)
}
