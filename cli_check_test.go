package main

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/wrapper"
)

// The check flags reach wrapper.Config: --interval is --check-interval,
// --check repeats, SVCWRAP_CHECK is a list split where a check begins, and
// the defaults are those the README gives.
func TestParse_CheckFlags(t *testing.T) {
	parseOK := func(args []string, env ...string) wrapper.Config {
		t.Helper()
		cfg, _, err := parse(append(args, "web", "--", "web"), env, io.Discard, io.Discard)
		require.NoError(t, err)
		return cfg
	}
	cfg := parseOK(nil)
	assert.Empty(t, cfg.Checks)
	assert.Equal(t, wrapper.DefaultCheckTimeout, cfg.CheckTimeout)
	assert.Equal(t, 1, cfg.FailAfter)
	assert.Equal(t, 1, cfg.PassAfter)
	assert.Zero(t, cfg.Grace)
	assert.False(t, cfg.CheckTLSSkipVerify)

	cfg = parseOK([]string{"--interval", "2.5", "--check", "tcp:127.0.0.1:1", "--check", "script:exit 1",
		"--check-timeout", "300ms", "--grace", "30", "--fail-after", "3", "--pass-after", "2", "--check-tls-skip-verify"})
	assert.Equal(t, 2500*time.Millisecond, cfg.CheckInterval)
	assert.Equal(t, []string{"tcp:127.0.0.1:1", "script:exit 1"}, cfg.Checks)
	assert.Equal(t, 300*time.Millisecond, cfg.CheckTimeout)
	assert.Equal(t, 30*time.Second, cfg.Grace)
	assert.Equal(t, 3, cfg.FailAfter)
	assert.Equal(t, 2, cfg.PassAfter)
	assert.True(t, cfg.CheckTLSSkipVerify)

	cfg = parseOK(nil, "SVCWRAP_CHECK=script:test -f a,b, http://127.0.0.1:8080/health", "SVCWRAP_INTERVAL=5s", "SVCWRAP_GRACE=1m")
	assert.Equal(t, []string{"script:test -f a,b", "http://127.0.0.1:8080/health"}, cfg.Checks)
	assert.Equal(t, 5*time.Second, cfg.CheckInterval)
	assert.Equal(t, time.Minute, cfg.Grace)

	cfg = parseOK([]string{"--check", "tcp:127.0.0.1:2"}, "SVCWRAP_CHECK=tcp:127.0.0.1:1")
	assert.Equal(t, []string{"tcp:127.0.0.1:2"}, cfg.Checks, "the command line wins")
}

// The floor of --check-interval holds under either of its names, checked
// once, by the name given.
func TestParse_IntervalFloor(t *testing.T) {
	for _, name := range []string{"--check-interval", "--interval"} {
		_, _, err := parse([]string{name, "1ns", "web", "--", "web"}, nil, io.Discard, io.Discard)
		if assert.Error(t, err, name) {
			assert.Contains(t, err.Error(), "below the minimum", name)
		}
	}
}
