package wrapper

import (
	"context"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/svcwrap/svcwrap/consulclient"
)

// The default heartbeat is 60% of the TTL; moves and NOTICE lines count in
// beats of the heartbeat, at most a third of the TTL, so the default's
// longer heartbeat does not slow them down.
func TestConfig_HeartbeatDefaultAndBeat(t *testing.T) {
	for _, c := range []struct {
		ttl, heartbeat, wantHeartbeat, wantBeat time.Duration
	}{
		{0, 0, 6 * time.Second, 10 * time.Second / 3},
		{20 * time.Second, 0, 12 * time.Second, 20 * time.Second / 3},
		{10 * time.Second, time.Second, time.Second, time.Second},                  // ianitor's ttl/10
		{10 * time.Second, 5 * time.Second, 5 * time.Second, 10 * time.Second / 3}, // longer than a third
	} {
		cfg, err := Config{Name: "web", Command: []string{"web"}, TTL: c.ttl, Heartbeat: c.heartbeat}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Heartbeat != c.wantHeartbeat || cfg.beat() != c.wantBeat {
			t.Errorf("ttl %s heartbeat %s: heartbeat %s, beat %s; want %s, %s", c.ttl, c.heartbeat, cfg.Heartbeat, cfg.beat(), c.wantHeartbeat, c.wantBeat)
		}
	}
}

// agentBusy: which failed deregistrations are retried while the child stops.
func TestAgentBusy(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &consulclient.AgentError{Op: "deregister", Kind: consulclient.ErrRefused}, true},
		{"no answer in time", &consulclient.AgentError{Op: "deregister", Err: context.DeadlineExceeded}, true},
		{"no answer in time, the client's own timeout", &consulclient.AgentError{Op: "deregister", Kind: consulclient.ErrUnreachable,
			Err: &url.Error{Op: "Put", URL: "http://a", Err: context.DeadlineExceeded}}, true},
		{"no connection in time", &consulclient.AgentError{Op: "deregister", Kind: consulclient.ErrUnreachable,
			Err: &url.Error{Op: "Put", URL: "http://a", Err: &net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded}}}, false},
		{"nothing listens", &consulclient.AgentError{Op: "deregister", Kind: consulclient.ErrUnreachable,
			Err: &url.Error{Op: "Put", URL: "http://a", Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}}, false},
		{"rejected", &consulclient.AgentError{Op: "deregister", Kind: consulclient.ErrRejected}, false},
		{"gave up", errGaveUp, false},
	} {
		if got := agentBusy(c.err); got != c.want {
			t.Errorf("%s: agentBusy(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
