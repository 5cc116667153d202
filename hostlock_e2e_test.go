package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// Two svcwraps started together for one service ID on one host: exactly one
// runs, every time. Looking up the ID's holder in Consul and registering are
// two requests, so only the host lock can decide between two svcwraps that
// start within a millisecond of each other.
func TestHostLock_SimultaneousStarts(t *testing.T) {
	agent := consultest.StartAgent(t)
	host, err := os.Hostname()
	require.NoError(t, err)
	const id = "race"

	for trial := range 10 {
		t.Run(strconv.Itoa(trial), func(t *testing.T) {
			// Both wait at the gate, a pipe, until it is closed: they are
			// released together, and exec svcwrap at once.
			gate, open, err := os.Pipe()
			require.NoError(t, err)
			defer open.Close()
			var pair [2]*wrapped
			for i := range pair {
				pair[i] = startGated(t, gate, agent, append([]string{id, "--"}, helperArgv("pid")...)...)
			}
			gate.Close()
			for _, w := range pair {
				w.out.waitFor(t, "gated", wait)
			}
			open.Close()

			// The loser exits at once; the winner runs on.
			var winner, loser *wrapped
			select {
			case <-pair[0].done:
				winner, loser = pair[1], pair[0]
			case <-pair[1].done:
				winner, loser = pair[0], pair[1]
			case <-time.After(wait):
				t.Fatalf("both svcwraps for %q still run after %s\nfirst:\n%s\n%s\nsecond:\n%s\n%s",
					id, wait, pair[0].out, pair[0].errOut, pair[1].out, pair[1].errOut)
			}
			assert.Equal(t, 2, loser.wait(wait), "stderr: %s", loser.errOut)
			loser.errOut.waitEOF(t, wait)
			loser.out.waitEOF(t, wait)
			lines := strings.Split(strings.TrimSpace(loser.errOut.String()), "\n")
			assert.Len(t, lines, 1, "one line on stderr: %q", lines)
			assert.Contains(t, lines[0], strconv.Quote(id))
			assert.Contains(t, lines[0], "held by another running svcwrap")
			assert.Zero(t, loser.out.count("ready"), "the loser's command must not start: %s", loser.out)

			winner.out.waitFor(t, "ready", wait)
			consultest.WaitServiceStatus(t, agent.Client, id, api.HealthPassing, wait)
			svc, _, err := agent.Client.Agent().Service(id, nil)
			require.NoError(t, err)
			instance := svc.Meta["svcwrap_instance"]
			assert.True(t, strings.HasPrefix(instance, host+"/"), "host/pid/start/pidns: meta %v", svc.Meta)
			assert.Equal(t, winner.cmd.Process.Pid, instancePID(instance), "the entry is the winner's: meta %v", svc.Meta)
			select {
			case <-winner.done:
				t.Fatalf("the winner exited %d:\n%s", winner.code, winner.errOut)
			default:
			}

			winner.signal(syscall.SIGTERM)
			winner.wait(wait)
			consultest.WaitServiceGone(t, agent.Client, id, wait)
		})
	}
}

// startGated is start, but svcwrap is exec'd only once gate reads EOF. It
// prints "gated" on stdout when it begins to wait at the gate.
func startGated(t *testing.T, gate *os.File, agent *consultest.Agent, args ...string) *wrapped {
	t.Helper()
	script := `echo gated; read gate; exec "$0" "$@"`
	argv := append([]string{"-c", script, svcwrapBin, "--consul", agent.HTTPAddr}, args...)
	cmd := exec.Command("sh", argv...)
	cmd.Env = os.Environ()
	cmd.Stdin = gate
	return launch(t, cmd)
}
