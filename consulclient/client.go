// Package consulclient is everything svcwrap says to a Consul agent: register a
// service with one TTL check, move that check's status, look up who holds a
// service ID, and deregister. It wraps the official api client, so the consul
// CLI's environment variables (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
// CONSUL_HTTP_TOKEN_FILE, CONSUL_CACERT, CONSUL_HTTP_SSL, ...) work unchanged.
//
// Every call is bounded by a timeout, and a list of agents is tried in order, so
// that neither a hung nor a dead agent can stall the wrapper.
package consulclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// DefaultTimeout bounds one HTTP request when Config.Timeout is zero. A local
// agent answers in milliseconds; five seconds only matters for a hung one.
const DefaultTimeout = 5 * time.Second

// idleConnTimeout is how long a connection to the agent is kept for the next
// request: long enough for the requests of one sync (look-up, registration,
// output) to share it, far shorter than a heartbeat at default settings. An
// agent admits a limited number of concurrent connections per client IP
// (limits.http_max_conns_per_client, 200 by default) and every svcwrap on a
// host connects from the same address: a connection held between heartbeats
// would make wrapper 201 on a host wait forever.
const idleConnTimeout = time.Second

// ErrRefused means the agent accepted the connection and turned it away
// (HTTP 429: too many concurrent connections from this IP, or its rate
// limit), or dropped it without an answer. The same agent will answer a
// little later; the client does not fail over for it.
var ErrRefused = errors.New("agent refused or dropped the connection (too many connections or requests?)")

// ErrNotRegistered means the agent does not know the service or its check: it
// was restarted, its data was wiped, or a token expired. The caller registers
// again.
var ErrNotRegistered = errors.New("not registered with the agent")

// Config says which agents to talk to and how.
type Config struct {
	// Addrs are agent addresses, tried in order until one answers: "host:port",
	// "http://host:port", "https://host:port" or "unix:///path". Empty: the api
	// client's default, CONSUL_HTTP_ADDR or else 127.0.0.1:8500.
	Addrs []string
	// Token is the ACL token. Empty: TokenFile, else CONSUL_HTTP_TOKEN or
	// CONSUL_HTTP_TOKEN_FILE, as the consul CLI reads them.
	Token string
	// TokenFile holds the ACL token. Empty: as for Token. An unreadable file
	// is an error from New.
	TokenFile string
	// CAFile, CertFile, KeyFile and TLSServerName configure TLS to the agent.
	// Empty: CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY and
	// CONSUL_TLS_SERVER_NAME.
	CAFile, CertFile, KeyFile, TLSServerName string
	// Timeout bounds each HTTP request. Zero: DefaultTimeout.
	Timeout time.Duration
}

// Client talks to the first agent of its list that answers and sticks with it
// until it stops answering.
type Client struct {
	timeout time.Duration
	agents  []agent

	mu      sync.Mutex
	current int // index in agents of the agent that answered last
}

type agent struct {
	addr string
	api  *api.Client
	http *http.Client // the api client's
}

// New builds a client. It sends nothing: an agent that is down at start must not
// keep the child from starting.
func New(cfg Config) (*Client, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	addrs := cfg.Addrs
	if len(addrs) == 0 {
		addrs = []string{""} // the api client's default address
	}
	c := &Client{timeout: timeout}
	for _, addr := range addrs {
		conf := api.DefaultConfig() // reads CONSUL_* from the environment
		if addr != "" {
			conf.Address = addr
			if strings.HasPrefix(addr, "https://") {
				conf.Scheme = "https"
			}
		}
		switch {
		case cfg.Token != "":
			conf.Token, conf.TokenFile = cfg.Token, ""
		case cfg.TokenFile != "":
			conf.Token, conf.TokenFile = "", cfg.TokenFile
		}
		setIf(&conf.TLSConfig.CAFile, cfg.CAFile)
		setIf(&conf.TLSConfig.CertFile, cfg.CertFile)
		setIf(&conf.TLSConfig.KeyFile, cfg.KeyFile)
		setIf(&conf.TLSConfig.Address, cfg.TLSServerName)
		// No HttpClient of our own: the api client builds one with the TLS
		// settings. Each request's context carries its deadline instead.
		conf.Transport.IdleConnTimeout = idleConnTimeout
		client, err := api.NewClient(conf)
		if err != nil {
			return nil, fmt.Errorf("consul agent %s: %w", conf.Address, err)
		}
		// A unix:// address gets a transport of the api client's making.
		if t, ok := conf.HttpClient.Transport.(*http.Transport); ok {
			t.IdleConnTimeout = idleConnTimeout
		}
		c.agents = append(c.agents, agent{addr: conf.Address, api: client, http: conf.HttpClient})
	}
	return c, nil
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// CloseIdleConnections closes the connections kept for the next request.
// svcwrap calls it after each exchange with the agent; connections it does
// not close are closed after idleConnTimeout anyway.
func (c *Client) CloseIdleConnections() {
	for _, a := range c.agents {
		a.http.CloseIdleConnections()
	}
}

// Addr is the address of the agent the client talks to now.
func (c *Client) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[c.current].addr
}

// do runs call against the current agent, and on a transport failure (the agent
// does not answer at all) against the next ones in turn. An HTTP error answer
// is an answer, and a refusal (ErrRefused) comes from an agent that is alive:
// both are returned as they are, without failing over.
func (c *Client) do(ctx context.Context, call func(ctx context.Context, a *api.Client) error) error {
	c.mu.Lock()
	start := c.current
	c.mu.Unlock()

	var errs []error
	for i := range c.agents {
		idx := (start + i) % len(c.agents)
		a := c.agents[idx]
		rctx, cancel := context.WithTimeout(ctx, c.timeout)
		err := call(rctx, a.api)
		cancel()
		if isRefusal(err) {
			// The agent is alive and busy: stay with it and let the caller
			// retry, rather than move the registration to another agent.
			return fmt.Errorf("agent %s: %w: %w", a.addr, ErrRefused, err)
		}
		if err == nil || isAnswer(err) {
			c.mu.Lock()
			c.current = idx
			c.mu.Unlock()
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		errs = append(errs, fmt.Errorf("agent %s: %w", a.addr, err))
	}
	return errors.Join(errs...)
}

// isRefusal reports whether the agent turned the request away: its 429, from
// the request rate limiter or the per-IP connection limiter. The connection
// limiter writes its 429 the moment it accepts, before the request is sent,
// so net/http mostly sees a connection that was made and then dropped before
// its answer ("Unsolicited response received on idle HTTP channel") rather
// than the status; those drops count too. Anything else, a connection that
// could not be made, a timeout, a TLS or protocol error, is not a refusal.
func isRefusal(err error) bool {
	if err == nil {
		return false
	}
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusTooManyRequests
	}
	msg := err.Error()
	if strings.Contains(msg, "Unexpected response code: 429") {
		return true
	}
	var ue *url.Error
	if !errors.As(err, &ue) || ue.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(msg, "readLoopPeekFailLocked") || // net/http: the 429 came first
		strings.Contains(msg, "server closed idle connection")
}

// isAnswer reports whether err came from an agent that answered (an HTTP
// status), as opposed to one that could not be reached.
func isAnswer(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return true
	}
	// Some api calls format the status into a plain error.
	return strings.Contains(err.Error(), "Unexpected response code")
}

// Service is one registration: the service and its single TTL check.
type Service struct {
	ID      string // service ID; the check's ID is "service:" + ID
	Name    string
	Tags    []string
	Meta    map[string]string
	Address string // empty: the agent's node address
	Port    int    // zero: none

	TTL time.Duration // how long a status lasts without a refresh
	// DeregisterAfter: Consul removes the service when its check has been
	// critical this long (minimum one minute). It is what cleans up after a
	// svcwrap that was SIGKILLed. Zero: never.
	DeregisterAfter time.Duration

	Status string // initial check status: api.HealthCritical, HealthPassing, ...
	Output string // initial check output
}

// CheckID is the ID of the TTL check svcwrap registers for a service ID, the one
// ianitor and Consul use by default.
func CheckID(serviceID string) string { return "service:" + serviceID }

// Register registers s with its TTL check. Registering again is safe: Consul
// keeps the service, and the reaper's clock for a critical check restarts.
func (c *Client) Register(ctx context.Context, s Service) error {
	reg := &api.AgentServiceRegistration{
		ID:      s.ID,
		Name:    s.Name,
		Tags:    s.Tags,
		Meta:    s.Meta,
		Address: s.Address,
		Port:    s.Port,
		Check: &api.AgentServiceCheck{
			CheckID: CheckID(s.ID),
			Name:    "svcwrap: " + s.Name,
			TTL:     s.TTL.String(),
			Status:  s.Status,
			Notes:   "kept by svcwrap while the wrapped command runs",
		},
	}
	if s.DeregisterAfter > 0 {
		reg.Check.DeregisterCriticalServiceAfter = s.DeregisterAfter.String()
	}
	err := c.do(ctx, func(ctx context.Context, a *api.Client) error {
		return a.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx))
	})
	if err != nil {
		return fmt.Errorf("register service %q: %w", s.ID, err)
	}
	// The output is not part of a registration; set it so the check says why
	// it is in its status from the first moment.
	if s.Output != "" {
		return c.SetStatus(ctx, s.ID, s.Status, s.Output)
	}
	return nil
}

// SetStatus sets the TTL check of serviceID to status with output, which also
// restarts its TTL. It returns an error wrapping ErrNotRegistered when the agent
// does not know the check.
func (c *Client) SetStatus(ctx context.Context, serviceID, status, output string) error {
	err := c.do(ctx, func(ctx context.Context, a *api.Client) error {
		return a.Agent().UpdateTTLOpts(CheckID(serviceID), output, status, (&api.QueryOptions{}).WithContext(ctx))
	})
	if err != nil {
		if isUnknownCheck(err) {
			return fmt.Errorf("set check %q %s: %w", CheckID(serviceID), status, ErrNotRegistered)
		}
		return fmt.Errorf("set check %q %s: %w", CheckID(serviceID), status, err)
	}
	return nil
}

// isUnknownCheck recognises the agent's answers for a check it does not have.
func isUnknownCheck(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "Unexpected response code: 404") ||
		strings.Contains(msg, "Unknown check") ||
		strings.Contains(msg, "does not have associated TTL")
}

// Deregister removes the service and its check. A service the agent does not
// know is already gone: that is success.
func (c *Client) Deregister(ctx context.Context, serviceID string) error {
	err := c.do(ctx, func(ctx context.Context, a *api.Client) error {
		return a.Agent().ServiceDeregisterOpts(serviceID, (&api.QueryOptions{}).WithContext(ctx))
	})
	if err != nil && !isNotFound(err) {
		return fmt.Errorf("deregister service %q: %w", serviceID, err)
	}
	return nil
}

func isNotFound(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return true
	}
	return strings.Contains(err.Error(), "Unexpected response code: 404")
}

// Holder describes the current registration of a service ID on the agent.
type Holder struct {
	Meta        map[string]string
	CheckStatus string // status of the TTL check; empty when it has none
	CheckOutput string
}

// Holder returns who holds serviceID on the agent, or nil when nobody does.
// The usual case, a free ID, costs one request; a held one, a second for its
// check. (The agent's health endpoint would answer both at once, but it
// answers a warning with the same 429 as its connection limiter, so a refusal
// could not be told from an answer.)
func (c *Client) Holder(ctx context.Context, serviceID string) (*Holder, error) {
	var svc *api.AgentService
	err := c.do(ctx, func(ctx context.Context, a *api.Client) error {
		var err error
		svc, _, err = a.Agent().Service(serviceID, (&api.QueryOptions{}).WithContext(ctx))
		return err
	})
	if err != nil {
		if isNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up service %q: %w", serviceID, err)
	}
	if svc == nil {
		return nil, nil
	}

	var checks map[string]*api.AgentCheck
	filter := "CheckID == " + strconv.Quote(CheckID(serviceID))
	err = c.do(ctx, func(ctx context.Context, a *api.Client) error {
		var err error
		checks, err = a.Agent().ChecksWithFilterOpts(filter, (&api.QueryOptions{}).WithContext(ctx))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("look up check %q: %w", CheckID(serviceID), err)
	}
	h := &Holder{Meta: svc.Meta}
	if chk := checks[CheckID(serviceID)]; chk != nil {
		h.CheckStatus, h.CheckOutput = chk.Status, chk.Output
	}
	return h, nil
}

// TTLExpired reports whether the holder's check went critical because nobody
// refreshed it: the agent's own words when a TTL lapses.
func (h *Holder) TTLExpired() bool {
	return h.CheckStatus == api.HealthCritical && strings.HasPrefix(h.CheckOutput, "TTL expired")
}
