package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// agent is a Consul -dev agent the harness started on free loopback ports,
// and an HTTP client for it.
type agent struct {
	addr    string // "127.0.0.1:PORT", the HTTP API
	node    string
	logPath string
	proc    *proc
	poll    time.Duration // period of the fine polls (track)

	// http is for ordinary calls; its connections stay open, so a poll costs
	// one request on a warm connection, not a TCP handshake.
	http *http.Client

	mu   sync.Mutex
	rtts []time.Duration // round trips of the fine polls, to state their resolution
}

// harnessDialer connects from 127.0.0.2. The agent limits the connections
// one client IP may hold (limits.http_max_conns_per_client, 200 by default),
// and every wrapper connects from 127.0.0.1: the harness's own connections
// must not use up the wrappers' allowance.
var harnessDialer = &net.Dialer{
	LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)},
	Timeout:   5 * time.Second,
}

// agentReadyTimeout bounds the wait for a new agent to elect itself leader.
const agentReadyTimeout = 60 * time.Second

// startAgent starts a -dev agent with the flags consultest uses, plus hcl (a
// snippet of agent configuration, may be empty), and waits until it is
// ready. Its output goes to dir/consul-NODE.log.
func startAgent(ps *procs, bin, dir, node, hcl string, poll time.Duration) (*agent, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(5)
		if err != nil {
			return nil, err
		}
		a := &agent{
			addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
			node:    node,
			logPath: filepath.Join(dir, "consul-"+node+".log"),
			poll:    poll,
			http: &http.Client{Transport: &http.Transport{
				DialContext:         harnessDialer.DialContext,
				MaxIdleConnsPerHost: 8,
				DisableCompression:  true,
			}},
		}
		argv := []string{bin,
			"-dev", "-node", node,
			"-client", "127.0.0.1", "-bind", "127.0.0.1",
			"-http-port", strconv.Itoa(ports[0]),
			"-dns-port", strconv.Itoa(ports[1]),
			"-serf-lan-port", strconv.Itoa(ports[2]),
			"-serf-wan-port", strconv.Itoa(ports[3]),
			"-server-port", strconv.Itoa(ports[4]),
			"-grpc-port", "-1", "-grpc-tls-port", "-1",
			"-hcl", "disable_update_check = true",
			"-log-level", "warn",
		}
		if hcl != "" {
			argv = append(argv, "-hcl", hcl)
		}
		logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, err
		}
		a.proc, err = ps.start(argv, startOpts{output: logf})
		logf.Close()
		if err != nil {
			return nil, err
		}
		lastErr = a.waitReady()
		if lastErr == nil {
			return a, nil
		}
		a.stop()
		if !strings.Contains(tail(a.logPath, 20), "address already in use") {
			break // only a port taken in the meantime is worth another try
		}
	}
	return nil, lastErr
}

// waitReady polls until the agent knows a leader and has its node in the
// catalog, the agent exits, or agentReadyTimeout passes.
func (a *agent) waitReady() error {
	deadline := time.Now().Add(agentReadyTimeout)
	for {
		if a.proc.exited() {
			return fmt.Errorf("consul agent exited during start-up; log %s:\n%s", a.logPath, tail(a.logPath, 15))
		}
		var leader string
		if a.getJSON("/v1/status/leader", &leader) == nil && leader != "" {
			var node struct{ Node *struct{ Node string } }
			if a.getJSON("/v1/catalog/node/"+a.node, &node) == nil && node.Node != nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consul agent not ready after %s; log %s:\n%s", agentReadyTimeout, a.logPath, tail(a.logPath, 15))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the agent: SIGTERM, then SIGKILL after a bound.
func (a *agent) stop() {
	a.proc.stop(10 * time.Second)
	a.http.CloseIdleConnections()
}

// freePorts asks the kernel for n distinct loopback ports free for both TCP
// and UDP (the agent's DNS and Serf use both). They are released before the
// agent binds them, so startAgent retries when one was taken meanwhile.
func freePorts(n int) ([]int, error) {
	var held []io.Closer
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 20*n {
			return nil, errors.New("no free loopback ports")
		}
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		held = append(held, tl)
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		held = append(held, ul)
		ports = append(ports, port)
	}
	return ports, nil
}

// freePort returns one free loopback TCP port, for a child to listen on.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// get sends a GET for path and returns the status code and body.
func (a *agent) get(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// getJSON GETs path (bounded by 10 s) and decodes a 200 answer into v.
func (a *agent) getJSON(path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	code, body, err := a.get(ctx, path)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("GET %s: %d %s", path, code, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, v)
}

// deregister removes a service, for the cleanup of a wrapper that left one.
func (a *agent) deregister(id string) {
	req, _ := http.NewRequest(http.MethodPut, "http://"+a.addr+"/v1/agent/service/deregister/"+url.PathEscape(id), nil)
	if resp, err := a.http.Do(req); err == nil {
		resp.Body.Close()
	}
}

// Service states as the fine poll reports them: the agent's aggregated
// status of the service's checks, or absent.
const (
	absent   = ""
	passing  = "passing"
	critical = "critical"
)

// observation is one answer of the fine poll.
type observation struct {
	status string    // absent, passing, critical, warning, maintenance
	sent   time.Time // when the request left
	at     time.Time // when the answer arrived
}

// status asks the agent's own view (not the catalog's) of the service's
// aggregated check status: /v1/agent/health/service/id/ID?format=text answers
// 404 when the agent does not know the service.
func (a *agent) status(ctx context.Context, id string) (observation, error) {
	sent := time.Now()
	code, body, err := a.get(ctx, "/v1/agent/health/service/id/"+url.PathEscape(id)+"?format=text")
	o := observation{sent: sent, at: time.Now()}
	if err != nil {
		return o, err
	}
	a.mu.Lock()
	a.rtts = append(a.rtts, o.at.Sub(sent))
	a.mu.Unlock()
	if code == http.StatusNotFound {
		return o, nil
	}
	o.status = strings.TrimSpace(string(body))
	if code != http.StatusOK && code != http.StatusTooManyRequests && code != http.StatusServiceUnavailable {
		return o, fmt.Errorf("agent health of %s: %d %s", id, code, o.status)
	}
	return o, nil
}

// change is a state change seen by track: the state was not yet there in the
// answer to the request sent at before, and was there in the answer that
// arrived at at. The true moment lies in (before, at]; the harness reports
// at, which never under-states a latency.
type change struct {
	status string
	before time.Time
	at     time.Time
}

// track polls the agent's view of service id every a.poll until until
// reports true for a status, timeout passes, or ctx ends, and returns every
// change of status it saw (the first answer counts as a change from
// "unknown"). seen, if not nil, is called with every observation.
func (a *agent) track(ctx context.Context, id string, timeout time.Duration, until func(status string) bool, seen func(observation)) ([]change, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		changes []change
		last    = "unknown"
		prev    time.Time
	)
	for {
		o, err := a.status(ctx, id)
		if ctx.Err() != nil {
			return changes, fmt.Errorf("service %s: still %q after %s", id, last, timeout)
		}
		if err != nil {
			return changes, err
		}
		if seen != nil {
			seen(o)
		}
		if o.status != last {
			changes = append(changes, change{status: o.status, before: prev, at: o.at})
			last = o.status
		}
		if until(o.status) {
			return changes, nil
		}
		prev = o.sent
		time.Sleep(a.poll)
	}
}

// firstChange returns the first change to a status for which match is true.
func firstChange(changes []change, match func(string) bool) (change, bool) {
	for _, c := range changes {
		if match(c.status) {
			return c, true
		}
	}
	return change{}, false
}

func is(status string) func(string) bool { return func(s string) bool { return s == status } }

func registered(s string) bool { return s != absent }

// pollRTT returns the median and the max round trip of the fine polls so far.
func (a *agent) pollRTT() (time.Duration, time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return durationStats(a.rtts)
}

// tail returns the last n lines of a file, indented, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "    (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
