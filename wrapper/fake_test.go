package wrapper_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/signals"
	"github.com/svcwrap/svcwrap/wrapper"
)

// journal is the ordered record of what the lifecycle did to Consul and to the
// child, shared by the fakes so tests can assert on order.
type journal struct {
	mu      sync.Mutex
	entries []string
	changed chan struct{}
}

func newJournal() *journal { return &journal{changed: make(chan struct{}, 1)} }

func (j *journal) add(format string, args ...any) {
	j.mu.Lock()
	j.entries = append(j.entries, fmt.Sprintf(format, args...))
	j.mu.Unlock()
	select {
	case j.changed <- struct{}{}:
	default:
	}
}

func (j *journal) all() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.entries...)
}

func (j *journal) index(entry string) int { return j.indexMatch(is(entry)) }

// is and hasPrefix are matches for the journal's indexMatch, countMatch and
// waitMatch: the entry itself, or every entry that starts with prefix.
func is(entry string) func(string) bool { return func(e string) bool { return e == entry } }

func hasPrefix(prefix string) func(string) bool {
	return func(e string) bool { return strings.HasPrefix(e, prefix) }
}

// indexMatch is the index of the first entry that match accepts, or -1.
func (j *journal) indexMatch(match func(string) bool) int { return slices.IndexFunc(j.all(), match) }

// countMatch is how many entries match accepts.
func (j *journal) countMatch(match func(string) bool) int {
	n := 0
	for _, e := range j.all() {
		if match(e) {
			n++
		}
	}
	return n
}

// waitFor blocks until entry is in the journal, or fails the test.
func (j *journal) waitFor(t *testing.T, entry string) {
	t.Helper()
	j.waitMatch(t, strconv.Quote(entry), is(entry))
}

// waitMatch blocks until an entry that match accepts is in the journal, or
// fails the test; what names that entry in the failure.
func (j *journal) waitMatch(t *testing.T, what string, match func(string) bool) {
	t.Helper()
	j.waitUntil(t, func() bool { return j.indexMatch(match) >= 0 },
		func() string { return fmt.Sprintf("no %s in the journal %q", what, j.all()) })
}

// waitUntil blocks until cond holds, asking again at each new entry and
// every few milliseconds (cond may look at more than the journal: the log),
// or fails the test after 10s with state.
func (j *journal) waitUntil(t *testing.T, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-j.changed:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out after 10s: %s", state())
		}
	}
}

// fakeRegistry is a Registry of one agent, or of agents+1 when agents is
// set, that records calls: those to agent 0 as "register web critical", those
// to agent i > 0 as "@i register web critical". holder, when set, is what
// Holder returns for agent 0 (holders for the others); fail, while set, is
// returned by every call to agent 0 (fails for the others).
type fakeRegistry struct {
	j       *journal
	agents  int
	mu      sync.Mutex
	holder  *consulclient.Holder
	fail    error
	holders map[int]*consulclient.Holder
	fails   map[int]error
	// hangs, while set for an agent, makes every call to it block until its
	// context ends, as a paused agent does; the journal says "@i hang op".
	// The calls still blocked when set lifts the hang go on then, as a
	// paused agent answers what it was sent once it resumes.
	hangs map[int]chan struct{}
	// hangOp, when set, makes only calls of that operation block until their
	// context ends (and take effect first, as a request the agent applied
	// and did not answer in time): "register".
	hangOp string
	// hangFor, when set, is how long a call hangOp makes hang, or any call
	// to an agent that hangs, lasts at most, as the real client's timeout:
	// then it fails as unanswered.
	hangFor time.Duration
	// hangOn, when set, limits hangOp to these agents.
	hangOn map[int]bool
	// freezeOn makes an agent whose registration hangOp leaves unanswered
	// hang from then on, every call, until set lifts it.
	freezeOn map[int]bool
	// registerErrs are what the next registrations return, one each, before
	// hangOp is looked at: a refusal, a gate's "not sent". afterHang
	// becomes registerErrs once hangOp has left a registration unanswered.
	registerErrs, afterHang []error
	// statusOnce, when set, is what the next SetStatus returns instead of
	// succeeding (the check removed between a look-up and the update).
	statusOnce error
	// heldAfter, when set, is what Holder reports for an agent once hangOp
	// has left a registration there unanswered: ours() for one the agent
	// applied, another's for one another svcwrap's overtook.
	heldAfter *consulclient.Holder
	// traceHolder journals each look-up: "holder".
	traceHolder bool
	// services is the last registration made with each agent.
	services map[int]consulclient.Service
	// slowRegister, when set, is a registration the agent takes its time
	// over, as a real one under load: Register blocks until the channel is
	// closed, then applies. A caller that gives up first (its context ends)
	// gets an error at once, and the agent applies the registration anyway
	// once the channel is closed, as an agent does with a request whose
	// client hung up. Holder then says what the agent holds (live).
	slowRegister chan struct{}
	live         map[int]bool
}

// slow is Register's slowRegister: the wait, and the registration applied
// late if the caller gave up.
func (r *fakeRegistry) slow(ctx context.Context, i int, s consulclient.Service, release chan struct{}) error {
	r.add(i, "register-sent %s", s.ID)
	select {
	case <-release:
		r.apply(i, s, "")
		return nil
	case <-ctx.Done():
		go func() {
			<-release
			r.apply(i, s, " (applied late)")
		}()
		return fmt.Errorf("register through agent%d: %w: %w", i, consulclient.ErrUnreachable, ctx.Err())
	}
}

func (r *fakeRegistry) apply(i int, s consulclient.Service, note string) {
	r.mu.Lock()
	if r.live == nil {
		r.live = map[int]bool{}
	}
	r.live[i] = true
	r.mu.Unlock()
	r.add(i, "register %s %s%s", s.ID, s.Status, note)
}

// holds reports whether the agent holds the service (slowRegister's runs).
func (r *fakeRegistry) holds(i int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live[i]
}

// set changes the fake's behaviour for agent i under its lock: fail (nil to
// heal), hang, and the holder it reports.
func (r *fakeRegistry) set(i int, fail error, hang bool, holder *consulclient.Holder) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fails == nil {
		r.fails, r.holders, r.hangs = map[int]error{}, map[int]*consulclient.Holder{}, map[int]chan struct{}{}
	}
	if i == 0 {
		r.fail, r.holder = fail, holder
	}
	r.fails[i], r.holders[i] = fail, holder
	switch resumed := r.hangs[i]; {
	case hang && resumed == nil:
		r.hangs[i] = make(chan struct{})
	case !hang && resumed != nil:
		close(resumed)
		delete(r.hangs, i)
	}
}

// block waits while agent i hangs, and fails when ctx ends first.
func (r *fakeRegistry) block(ctx context.Context, i int, op string) error {
	if err := ctx.Err(); err != nil {
		return err // as the api client: an expired context sends nothing
	}
	r.mu.Lock()
	resumed, bound := r.hangs[i], r.hangFor
	r.mu.Unlock()
	if resumed == nil {
		return nil
	}
	if bound > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, bound)
		defer cancel()
	}
	r.add(i, "hang %s", op)
	select {
	case <-resumed:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s through agent%d: %w: %w", op, i, consulclient.ErrUnreachable, ctx.Err())
	}
}

func (r *fakeRegistry) registered(i int) consulclient.Service {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.services[i]
}

func (r *fakeRegistry) err(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i == 0 {
		return r.fail
	}
	return r.fails[i]
}

func (r *fakeRegistry) add(i int, format string, args ...any) {
	if i != 0 {
		format = fmt.Sprintf("@%d ", i) + format
	}
	r.j.add(format, args...)
}

func (r *fakeRegistry) Agents() int       { return r.agents + 1 }
func (r *fakeRegistry) Addr(i int) string { return fmt.Sprintf("agent%d", i) }

func (r *fakeRegistry) Register(ctx context.Context, i int, s consulclient.Service) error {
	if err := r.block(ctx, i, "register"); err != nil {
		return err
	}
	if err := r.err(i); err != nil {
		return err
	}
	r.mu.Lock()
	if len(r.registerErrs) > 0 {
		err := r.registerErrs[0]
		r.registerErrs = r.registerErrs[1:]
		r.mu.Unlock()
		r.add(i, "register refused %s", s.ID)
		return err
	}
	if r.services == nil {
		r.services = map[int]consulclient.Service{}
	}
	r.services[i] = s
	hang := r.hangOp == "register" && (r.hangOn == nil || r.hangOn[i])
	freeze := hang && r.freezeOn[i]
	if hang && r.afterHang != nil {
		r.registerErrs, r.afterHang = r.afterHang, nil
	}
	release := r.slowRegister
	r.mu.Unlock()
	if release != nil {
		return r.slow(ctx, i, s, release)
	}
	r.add(i, "register %s %s", s.ID, s.Status)
	if hang {
		if r.heldAfter != nil {
			r.set(i, r.err(i), false, r.heldAfter)
		}
		if freeze {
			r.mu.Lock()
			fail, holder := r.fails[i], r.holders[i]
			r.mu.Unlock()
			r.set(i, fail, true, holder)
		}
		r.add(i, "unanswered register")
		if r.hangFor > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, r.hangFor)
			defer cancel()
		}
		<-ctx.Done()
		return fmt.Errorf("register through agent%d: %w: %w", i, consulclient.ErrUnreachable, ctx.Err())
	}
	return nil
}

func (r *fakeRegistry) SetStatus(ctx context.Context, i int, id, status, output string) error {
	if err := r.block(ctx, i, "status"); err != nil {
		return err
	}
	if err := r.err(i); err != nil {
		return err
	}
	r.mu.Lock()
	once := r.statusOnce
	r.statusOnce = nil
	r.mu.Unlock()
	if once != nil {
		r.add(i, "status refused %s", id)
		return once
	}
	r.add(i, "status %s %s", id, status)
	return nil
}

func (r *fakeRegistry) Deregister(ctx context.Context, i int, id string) error {
	r.add(i, "deregister-attempt %s", id)
	if err := r.block(ctx, i, "deregister"); err != nil {
		return err
	}
	if err := r.err(i); err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.live, i)
	r.mu.Unlock()
	r.add(i, "deregister %s", id)
	return nil
}

func (r *fakeRegistry) Holder(ctx context.Context, i int, _ string) (*consulclient.Holder, error) {
	if err := r.block(ctx, i, "holder"); err != nil {
		return nil, err
	}
	if err := r.err(i); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.traceHolder {
		r.add(i, "holder")
	}
	if r.slowRegister != nil {
		if r.live[i] {
			return ours(), nil
		}
		return nil, nil
	}
	if i == 0 {
		return r.holder, nil
	}
	return r.holders[i], nil
}

func (r *fakeRegistry) NodeAddress(_ context.Context, i int) (string, error) {
	if err := r.err(i); err != nil {
		return "", err
	}
	return fmt.Sprintf("10.0.0.%d", i+1), nil
}

// fakeChild is a Process the test ends by hand. Signals are recorded; onSignal
// decides what the child does with one.
type fakeChild struct {
	j        *journal
	done     chan signals.Exit
	once     sync.Once
	onSignal func(c *fakeChild, sig syscall.Signal)
	// lingering, when set, is a group member that outlives the leader until
	// the group is killed.
	lingering bool
	killedMu  sync.Mutex
	killed    bool
}

func (c *fakeChild) Pid() int                  { return 4242 }
func (c *fakeChild) Done() <-chan signals.Exit { return c.done }
func (c *fakeChild) GroupAlive() bool {
	c.killedMu.Lock()
	defer c.killedMu.Unlock()
	return c.lingering && !c.killed
}
func (c *fakeChild) Release() {}

func (c *fakeChild) exit(e signals.Exit) { c.once.Do(func() { c.done <- e }) }

func (c *fakeChild) Signal(sig syscall.Signal) error {
	c.j.add("signal %s", signals.Name(sig))
	if c.onSignal != nil {
		c.onSignal(c, sig)
	}
	return nil
}

func (c *fakeChild) Kill() error {
	c.j.add("kill")
	c.killedMu.Lock()
	c.killed = true
	c.killedMu.Unlock()
	c.exit(signals.Exit{Code: 128 + int(syscall.SIGKILL), Signal: syscall.SIGKILL})
	return nil
}

// diesOn makes the child end, killed by the signal, when it receives it.
func diesOn(want syscall.Signal) func(*fakeChild, syscall.Signal) {
	return func(c *fakeChild, sig syscall.Signal) {
		if sig == want {
			c.exit(signals.Exit{Code: 128 + int(sig), Signal: sig})
		}
	}
}

type fakeRun struct {
	j     *journal
	reg   *fakeRegistry
	child *fakeChild
	sigs  chan<- os.Signal
	done  chan result
	ctx   context.Context // Run's; prep may replace it
}

type result struct {
	code int
	err  error
}

// startFake runs the lifecycle with a fake child and registry, and returns
// once the service is registered.
func startFake(t *testing.T, cfg wrapper.Config, onSignal func(*fakeChild, syscall.Signal), prep ...func(*fakeRun)) *fakeRun {
	t.Helper()
	j := newJournal()
	r := &fakeRun{
		j:     j,
		reg:   &fakeRegistry{j: j},
		child: &fakeChild{j: j, done: make(chan signals.Exit, 1), onSignal: onSignal},
		done:  make(chan result, 1),
		ctx:   context.Background(),
	}
	sigs := make(chan os.Signal, 8)
	r.sigs = sigs
	if cfg.Name == "" {
		cfg.Name = "web"
	}
	if cfg.Command == nil {
		cfg.Command = []string{"web"}
	}
	cfg.Signals = sigs
	cfg.Start = func(signals.Options) (wrapper.Process, error) { return r.child, nil }
	if cfg.LockDir == "" {
		cfg.LockDir = t.TempDir() // the fakes of parallel test runs share names
	}
	for _, p := range prep {
		p(r)
	}
	go func() {
		code, err := wrapper.Run(r.ctx, cfg, r.reg)
		r.done <- result{code, err}
	}()
	t.Cleanup(func() {
		r.child.exit(signals.Exit{Code: 0})
		r.wait(t)
	})
	return r
}

func (r *fakeRun) wait(t *testing.T) result {
	t.Helper()
	select {
	case res := <-r.done:
		r.done <- res // later calls see it too
		return res
	case <-time.After(10 * time.Second):
		t.Fatalf("wrapper.Run did not return; journal: %q", r.j.all())
		return result{}
	}
}

func requireBefore(t *testing.T, j *journal, first, then string) {
	t.Helper()
	i, k := j.index(first), j.index(then)
	require.GreaterOrEqual(t, i, 0, "%q missing from %q", first, j.all())
	require.GreaterOrEqual(t, k, 0, "%q missing from %q", then, j.all())
	require.Less(t, i, k, "%q must come before %q: %q", first, then, j.all())
}
