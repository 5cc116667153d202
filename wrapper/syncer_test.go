package wrapper_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/check"
	"github.com/svcwrap/svcwrap/wrapper"
)

// runSyncer runs a syncer for service "web" against a fake registry until the
// test ends.
func runSyncer(t *testing.T, cfg wrapper.Config) (wrapper.Syncer, *journal) {
	t.Helper()
	j := newJournal()
	cfg.Name, cfg.Command = "web", []string{"web"}
	s, err := wrapper.NewSyncer(cfg, &fakeRegistry{j: j})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, j
}

var (
	notReady = check.Result{Status: check.Critical, Output: "not listening on port 80"}
	ready    = check.Result{Status: check.Passing, Output: "listening on port 80"}
)

// The check loop hands the syncer a result every check interval; only a
// change may reach the agent at once, an unchanged one waits for the
// heartbeat (issue 5: one request a second per wrapper was the cost).
func TestSyncer_UnchangedStatusIsNotSent(t *testing.T) {
	s, j := runSyncer(t, wrapper.Config{TTL: time.Hour}) // heartbeat: 20 min
	s.Want(notReady)
	j.waitFor(t, "register web critical")
	for range 100 {
		s.Want(notReady)
	}
	s.Want(ready)
	j.waitFor(t, "status web passing")
	for range 100 {
		s.Want(ready)
	}
	s.Want(notReady)
	j.waitFor(t, "status web critical")
	require.Equal(t, []string{"register web critical", "status web passing", "status web critical"}, j.all())
}

// An unchanged status is still refreshed every heartbeat, so the TTL never
// lapses while the child is healthy.
func TestSyncer_HeartbeatRefreshesUnchangedStatus(t *testing.T) {
	s, j := runSyncer(t, wrapper.Config{TTL: 60 * time.Millisecond, Heartbeat: 5 * time.Millisecond})
	s.Want(ready)
	j.waitFor(t, "register web passing")
	deadline := time.After(10 * time.Second)
	for {
		n := 0
		for _, e := range j.all() {
			if e == "status web passing" {
				n++
			}
		}
		if n >= 3 {
			return
		}
		select {
		case <-j.changed:
		case <-deadline:
			t.Fatalf("fewer than 3 heartbeats after 10 s; journal: %q", j.all())
		}
	}
}
