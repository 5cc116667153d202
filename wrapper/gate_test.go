package wrapper

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
)

// fill takes every slot of g and returns the function that gives them back.
func fill(t *testing.T, g *gate) func() {
	t.Helper()
	var leaves []func()
	for range len(g.paths) {
		leave, err := g.enter(t.Context())
		require.NoError(t, err)
		leaves = append(leaves, leave)
	}
	return func() {
		for _, leave := range leaves {
			leave()
		}
	}
}

// A gate lets len(g.paths) requests through at once; the next waits until one
// of them is done, or until its context ends.
func TestGate_WaitsForAFreeSlot(t *testing.T) {
	g := newGate(t.TempDir(), "127.0.0.1:8500", "call", gateCalls)
	var leaves []func()
	for range len(g.paths) {
		leave, err := g.enter(t.Context())
		require.NoError(t, err)
		leaves = append(leaves, leave)
	}

	short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := g.enter(short)
	require.ErrorIs(t, err, context.DeadlineExceeded, "every slot is taken")

	entered := make(chan func(), 1)
	go func() {
		leave, err := g.enter(t.Context())
		assert.NoError(t, err)
		entered <- leave
	}()
	for _, leave := range leaves {
		leave() // the waiter waits on one of them, whichever it is
	}
	select {
	case leave := <-entered:
		leave()
	case <-time.After(10 * time.Second):
		t.Fatal("a slot was given back and the waiter did not get it")
	}
}

// The slot a waiter gave up on is given back once the waiter's flock gets
// it: the pool is whole again afterwards.
func TestGate_AbandonedWaitGivesTheSlotBack(t *testing.T) {
	g := newGate(t.TempDir(), "127.0.0.1:8500", "call", gateCalls)
	release := fill(t, g)
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := g.enter(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	release()
	deadline := time.Now().Add(10 * time.Second)
	for {
		free := 0
		var leaves []func()
		for range len(g.paths) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
			leave, err := g.enter(ctx)
			cancel()
			if err == nil {
				free++
				leaves = append(leaves, leave)
			}
		}
		for _, leave := range leaves {
			leave()
		}
		if free == len(g.paths) {
			return
		}
		require.True(t, time.Now().Before(deadline), "only %d of %d slots free again", free, len(g.paths))
	}
}

// Behind the gates, heartbeats have slots of their own: a herd of
// registrations that has taken all of theirs does not hold a heartbeat up.
// A request that cannot get a slot in time is a refusal, as the agent's own
// would be, and the request is not made.
func TestGated_HeartbeatsHaveTheirOwnSlots(t *testing.T) {
	g, reg, release := callsTaken(t)
	defer release()

	require.NoError(t, g.SetStatus(t.Context(), 0, "web", "passing", ""))
	assert.Equal(t, 1, reg.calls)

	err := g.Deregister(t.Context(), 0, "web") // no deadline: --consul-timeout
	require.ErrorIs(t, err, consulclient.ErrRefused)
	assert.ErrorIs(t, err, errNotSent)
	assert.Equal(t, 1, reg.calls, "not made")

	// A request whose own deadline runs out in the gate: not a refusal
	// (the caller's time is up), but not sent either, so that nobody
	// looks on the agent for a registration that never went out.
	short, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err = g.Register(short, 0, consulclient.Service{ID: "web"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, errNotSent)
	assert.ErrorContains(t, err, "not sent")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = g.Deregister(ctx, 0, "web")
	require.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, consulclient.ErrRefused, "the caller gave up: not a refusal")
	assert.ErrorIs(t, err, errNotSent)
	assert.Equal(t, 1, reg.calls, "none of them made")
}

// The look-up that decides whether a running TTL is kept (syncer.resume)
// goes through the heartbeats' slots: it is not held up behind a herd of
// registrations that has taken all the others. Any other look-up is.
func TestGated_UrgentLookUpTakesAHeartbeatSlot(t *testing.T) {
	g, reg, release := callsTaken(t)
	defer release()

	_, err := g.Holder(urgent(t.Context()), 0, "web")
	require.NoError(t, err)
	assert.Equal(t, 1, reg.calls)

	_, err = g.Holder(t.Context(), 0, "web")
	require.ErrorIs(t, err, errNotSent)
	assert.Equal(t, 1, reg.calls, "not made")
}

// callsTaken is a gated countingRegistry whose call pool is all taken, as
// by a herd of registrations, until release.
func callsTaken(t *testing.T) (g Registry, reg *countingRegistry, release func()) {
	reg = &countingRegistry{}
	cfg := Config{LockDir: t.TempDir(), ConsulTimeout: 50 * time.Millisecond}
	return gateRegistry(cfg, reg), reg, fill(t, newGate(cfg.LockDir, reg.Addr(0), "call", gateCalls))
}

// countingRegistry answers everything at once and counts the calls.
type countingRegistry struct{ calls int }

func (r *countingRegistry) Agents() int     { return 1 }
func (r *countingRegistry) Addr(int) string { return "127.0.0.1:8500" }
func (r *countingRegistry) count() error    { r.calls++; return nil }
func (r *countingRegistry) Register(context.Context, int, consulclient.Service) error {
	return r.count()
}
func (r *countingRegistry) SetStatus(context.Context, int, string, string, string) error {
	return r.count()
}
func (r *countingRegistry) Deregister(context.Context, int, string) error { return r.count() }
func (r *countingRegistry) Holder(context.Context, int, string) (*consulclient.Holder, error) {
	return nil, r.count()
}
func (r *countingRegistry) NodeAddress(context.Context, int) (string, error) {
	return "127.0.0.1", r.count()
}

// A gate that cannot be used (its directory cannot be made) lets every
// request through, as the host lock does: the service must not suffer for
// it.
func TestGate_UnusableDirectoryLetsRequestsThrough(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	g := newGate(filepath.Join(file, "svcwrap"), "127.0.0.1:8500", "call", 2)
	for range 5 { // more than its slots, all held at once
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		leave, err := g.enter(ctx)
		cancel()
		require.NoError(t, err)
		defer leave()
	}
}

// The lock directory is writable by all: a FIFO planted at a slot's path
// must not hang the request (a read-only open of a FIFO waits for a
// writer). It is no slot, and the request goes through.
func TestGate_PlantedFIFOHangsNothing(t *testing.T) {
	g := newGate(t.TempDir(), "127.0.0.1:8500", "beat", 2)
	for _, p := range g.paths {
		require.NoError(t, syscall.Mkfifo(p, 0o666))
	}
	err := returnsWithin(t, "a FIFO at a slot's path hung the request", func() error {
		leave, err := g.enter(t.Context())
		if err == nil {
			leave()
		}
		return err
	})
	require.NoError(t, err)
}

// returnsWithin runs f and returns its error, failing the test with hung
// if f has not returned within 10 s: a test of a call that must not hang.
func returnsWithin(t *testing.T, hung string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal(hung)
		return nil
	}
}
