package wrapper

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/svcwrap/svcwrap/consulclient"
)

// The gate keeps the requests the svcwraps of a host have under way to one
// agent below what the agent admits from one client address
// (limits.http_max_conns_per_client, 200 by default). A host's start or
// shutdown is a herd: a thousand registrations or deregistrations at once,
// which the agent answers one catalog sync at a time. Without the gate,
// those it has taken fill its connections while they wait for their turn,
// and it turns the rest away, a heartbeat of an already passing service
// among them; each refusal costs it an accept and an answer, and every
// refused wrapper comes back, so that on a busy host the agent spent its
// CPU refusing and the heartbeats it turned away let TTLs lapse
// (BENCHMARKS.md, section 9). With the gate, the herd waits in the kernel's
// lock queue, at no cost to anyone, and the heartbeats have slots of their
// own that registrations cannot take.
//
// A slot is an flock on one of the pool's files, in the host lock's
// directory; the kernel releases it when svcwrap dies, however it dies.
// Where no lock can be taken, requests go ungated, as before.

// The number of requests of each pool the svcwraps of a host have under way
// to one agent at most: 112 together, leaving the rest of the agent's 200 to
// its other clients on the host. The other requests' pool is small because
// the agent does one catalog sync at a time: more registrations at once do
// not make a host's start faster, they only queue at the agent, and a
// heartbeat queues behind them. With 64 at once, an agent starved of CPU
// (a host's start with its cores busy) took longer than --consul-timeout
// over each, the wrappers asked again, the agent applied both, and
// heartbeats waited past their TTL: with four busy loops on two cores, 392
// and 161 of 1000 wrappers were passing after 100 s and every check
// flapped; with 16, all passed in 25 s (BENCHMARKS.md, section 11). The
// heartbeats' pool holds the burst that
// the heartbeat grid (beatSlot) sends a thousand idle wrappers' heartbeats
// in, about 80, so that an idle host's heartbeats need not wait for a
// slot: with 64, the burst's tail waited in flock every half second
// (BENCHMARKS.md, sections 9 and 10; the gated wrappers' CPU at a thousand
// is still a little above the ungated, for reasons not found).
const (
	gateBeats = 96
	gateCalls = 16
)

// gate is one pool of slots for one agent.
type gate struct {
	dir, agent, pool string
	paths            []string // of the slot files, made once: a heartbeat may try many
	strides          []int    // the steps that visit every slot, for a random order
}

// newGate is the pool of slots slot files for agent in dir. A slot's file is
// a host-lock path under a name no service ID can have (IDs contain no NUL).
func newGate(dir, agent, pool string, slots int) *gate {
	g := &gate{dir: dir, agent: agent, pool: pool}
	for k := range slots {
		g.paths = append(g.paths, lockPath(dir, agent, "\x00gate "+pool+" "+strconv.Itoa(k)))
		if gcd(k+1, slots) == 1 {
			g.strides = append(g.strides, k+1)
		}
	}
	return g
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// enter takes a slot of the pool, waiting until ctx ends for one to free,
// and returns the function that gives it back. A gate it cannot use (no
// lock directory, a file it may not open) lets the request through.
//
// The slots are tried in a random order (a random start and step), each
// with an open, a non-blocking flock and, when taken, a close: the
// heartbeats of a host's wrappers come in bursts (beatSlot), and in a
// random order a try finds a free slot as often as slots are free, where
// trying them one after the other from a random start ran along the runs
// of slots the burst had taken, tens of tries each.
func (g *gate) enter(ctx context.Context) (leave func(), err error) {
	pass := func() {}
	leave, first := g.tryAll()
	if leave != nil {
		return leave, nil
	}
	// All taken: wait for one, the one this try began with (a random one,
	// so that the waiters of the host spread over the slots), in the
	// kernel's queue, at no cost to anyone. A blocked flock cannot be
	// called off: a wait given up on keeps its thread and descriptor until
	// it gets the slot, then gives it back at once. (A holder stopped
	// mid-request, SIGSTOP, would keep those too. Trying the slots again
	// and again instead was tried, and the herd of a thousand wrappers
	// doing so took the host's CPU from the agent: BENCHMARKS.md, section
	// 10.)
	f, err := openLock(g.dir, g.paths[first])
	if err != nil {
		return pass, nil
	}
	got := make(chan error, 1)
	go func() { got <- flockWait(f) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return pass, nil
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		// The file is closed once the flock under way returns, which it
		// does when it gets the slot: then it gives it back at once.
		f.Close()
		return nil, ctx.Err()
	}
}

// tryAll tries every slot once, in a random order (a random start and
// step), and returns the function that gives back the one it took, nil if
// all are taken, or one that gives back nothing if the gate cannot be used;
// first is the slot it began with.
func (g *gate) tryAll() (leave func(), first int) {
	n := len(g.paths)
	first, step := rand.IntN(n), g.strides[rand.IntN(len(g.strides))]
	for k := range n {
		fd, err := g.try((first + k*step) % n)
		switch {
		case err == nil:
			return func() { syscall.Close(fd) }, first
		case !errors.Is(err, syscall.EWOULDBLOCK):
			return func() {}, first
		}
	}
	return nil, first
}

// try takes slot k without waiting and returns the descriptor that holds
// it; syscall.EWOULDBLOCK when another request holds it. It works on the
// descriptor, not an *os.File: a burst's tries are many, and each would
// leave a File and its finalizer to the garbage collector. A slot file
// that does not exist yet is made by openLock, with the directory.
func (g *gate) try(k int) (int, error) {
	const flags = lockOpenFlags | syscall.O_CLOEXEC
	fd, err := syscall.Open(g.paths[k], flags, 0)
	if err == syscall.ENOENT {
		f, oerr := openLock(g.dir, g.paths[k])
		if oerr != nil {
			return -1, oerr
		}
		f.Close()
		fd, err = syscall.Open(g.paths[k], flags, 0)
	}
	if err != nil {
		return -1, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		return -1, fmt.Errorf("%s: not a regular file", g.paths[k])
	}
	if err := flockFD(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// flockWait takes an exclusive lock on f, waiting for it.
func flockWait(f *os.File) error { return flockFile(f, syscall.LOCK_EX) }

// errNotSent marks a request the gate held back until its time ran out: it
// never reached the agent, so nothing of it can be registered there, and
// there is nothing to look for or remove afterwards.
var errNotSent = errors.New("not sent")

// gated is a Registry whose requests pass the gates of their agent: the
// heartbeats (SetStatus) and urgent look-ups through one pool, everything
// else through the other. A wait for a slot is bounded by the request's
// context or, when it has no deadline, by timeout (--consul-timeout); one
// that runs out is a refusal (consulclient.ErrRefused), as the agent's own
// would have been, and is retried as one, and either way errNotSent.
type gated struct {
	Registry
	beats, calls []*gate
	timeout      time.Duration
}

// gateRegistry returns reg behind the gates of its agents in cfg.LockDir. An
// agent of empty address, as from a Registry that does not say where it
// is, is not gated.
func gateRegistry(cfg Config, reg Registry) Registry {
	g := &gated{Registry: reg, timeout: cfg.ConsulTimeout}
	for i := range reg.Agents() {
		addr := reg.Addr(i)
		g.beats = append(g.beats, newGate(cfg.LockDir, addr, "beat", gateBeats))
		g.calls = append(g.calls, newGate(cfg.LockDir, addr, "call", gateCalls))
	}
	return g
}

// through makes call once a slot of g is taken.
func (r *gated) through(ctx context.Context, g *gate, op string, call func() error) error {
	if g.agent == "" {
		return call()
	}
	wctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	leave, err := g.enter(wctx)
	if err != nil {
		e := &consulclient.AgentError{Op: op, Agent: g.agent,
			Err: fmt.Errorf("%w: the host's requests to the agent are at their limit (%d %ss): %w", errNotSent, len(g.paths), g.pool, err)}
		if ctx.Err() == nil {
			e.Kind = consulclient.ErrRefused
		}
		return e
	}
	defer leave()
	return call()
}

func (r *gated) Register(ctx context.Context, i int, s consulclient.Service) error {
	return r.through(ctx, r.calls[i], "register", func() error { return r.Registry.Register(ctx, i, s) })
}

func (r *gated) SetStatus(ctx context.Context, i int, serviceID, status, output string) error {
	return r.through(ctx, r.beats[i], "heartbeat", func() error { return r.Registry.SetStatus(ctx, i, serviceID, status, output) })
}

func (r *gated) Deregister(ctx context.Context, i int, serviceID string) error {
	return r.through(ctx, r.calls[i], "deregister", func() error { return r.Registry.Deregister(ctx, i, serviceID) })
}

func (r *gated) Holder(ctx context.Context, i int, serviceID string) (h *consulclient.Holder, err error) {
	g := r.calls[i]
	if ctx.Value(urgentKey{}) != nil {
		g = r.beats[i]
	}
	err = r.through(ctx, g, "look up", func() (err error) { h, err = r.Registry.Holder(ctx, i, serviceID); return err })
	return h, err
}

// urgent marks the look-up of ctx as one a running TTL waits for, as it
// waits for a heartbeat: the look-up before keeping a registration the
// agent applied and did not answer in time (syncer.resume). It goes
// through the heartbeats' pool. In the other it waited behind the host's
// registrations, which a starved agent answers seconds apart, for ten
// seconds and more, and the TTL it was to keep ran out (BENCHMARKS.md,
// section 12). Such look-ups are few: one per registration left
// unanswered.
func urgent(ctx context.Context) context.Context { return context.WithValue(ctx, urgentKey{}, true) }

type urgentKey struct{}

func (r *gated) NodeAddress(ctx context.Context, i int) (addr string, err error) {
	err = r.through(ctx, r.calls[i], "node address", func() (err error) { addr, err = r.Registry.NodeAddress(ctx, i); return err })
	return addr, err
}
