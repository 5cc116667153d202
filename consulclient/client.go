// Package consulclient is everything svcwrap says to a Consul agent: register a
// service with one TTL check, move that check's status, look up who holds a
// service ID, learn the agent's node address, and deregister. It wraps the
// official api client, so the consul CLI's environment variables
// (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_CACERT,
// CONSUL_HTTP_SSL, ...) work unchanged. The one exception is the heartbeat to
// a local agent spoken to in plain HTTP, the request a wrapper sends for the
// whole life of its command, which it writes itself (beat.go).
//
// A Client knows a list of agents, and every call names the agent it is for
// (its index in the list): which agent holds the registration is the
// caller's to decide, because a heartbeat that silently landed on another
// agent would update whatever check of that ID lives there, another
// instance's included. Errors say what kind of failure it was (ErrUnreachable,
// ErrRefused, ErrRejected, ErrNotRegistered, ErrTokenChanged), so the caller
// can decide whether to retry, move on, or report. Every call is bounded by a
// timeout, or, when its context says so (UntilDeadline), by its context's
// deadline alone.
package consulclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
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

// A connection to the agent carries one request (Connection: close), and the
// agent closes it once it has answered. An agent admits a limited number of
// concurrent connections per client IP (limits.http_max_conns_per_client,
// 200 by default), every svcwrap on a host connects from the same address,
// and the agent counts a connection until it has closed it itself: one the
// client closes counts until the agent notices, which on a busy host is long
// enough to turn a host's heartbeats away while fewer than 200 requests are
// under way (BENCHMARKS.md, section 9). A connection kept for the next
// request would save a loopback handshake, and cost the same slot for
// nothing between heartbeats.

// The kinds of failure, checked with errors.Is. Every error a call returns
// names the agent's address; none contains the token.
var (
	// ErrUnreachable means the agent did not answer: nothing listens, the
	// request timed out, or TLS failed (then ErrTLS too). Another agent of
	// the list may answer.
	ErrUnreachable = errors.New("agent does not answer")
	// ErrTLS means TLS with the agent failed: a certificate one side does not
	// trust, a handshake the agent broke off, TLS spoken to a plain port.
	// It is also ErrUnreachable: another agent of the list may answer.
	ErrTLS = errors.New("TLS with the agent failed")
	// ErrRefused means the agent accepted the connection and turned it away
	// (HTTP 429: too many concurrent connections from this IP, or its rate
	// limit), or dropped it without an answer. The agent is alive and will
	// answer a little later: retry it, do not move away from it.
	ErrRefused = errors.New("agent refused or dropped the connection (too many connections or requests?)")
	// ErrRejected means the agent answered that the request is wrong (a 4xx
	// other than 404 and 429): a missing or wrong ACL token, a registration
	// it will not take. Retrying the same request will not help until the
	// configuration changes.
	ErrRejected = errors.New("agent rejected the request")
	// ErrNotRegistered means the agent does not know the service or its
	// check: it was restarted, its data was wiped, or a token expired. The
	// caller registers again.
	ErrNotRegistered = errors.New("not registered with the agent")
	// ErrTokenChanged means the agent rejected the ACL token and the token
	// file held a new one: the caller registers again, so that the agent
	// syncs the service to the servers with the new token.
	ErrTokenChanged = errors.New("the agent rejected the ACL token; a new token was read from the token file")
)

// Permanent reports whether err is a failure that retrying will not heal (a
// rejection, a TLS error), so that it is worth telling an operator at once.
func Permanent(err error) bool {
	return errors.Is(err, ErrRejected) || errors.Is(err, ErrTLS)
}

// Config says which agents to talk to and how.
type Config struct {
	// Addrs are agent addresses: "host:port", "http://host:port",
	// "https://host:port" or "unix:///path". The first is taken to be the
	// agent of the host the command runs on. Empty: the api client's default,
	// CONSUL_HTTP_ADDR or else 127.0.0.1:8500.
	Addrs []string
	// Token is the ACL token. Empty: TokenFile, else CONSUL_HTTP_TOKEN or
	// CONSUL_HTTP_TOKEN_FILE, as the consul CLI reads them.
	Token string
	// TokenFile holds the ACL token. It is read again whenever an agent
	// rejects the token, so a rotated token takes effect at the next
	// request. Empty: as for Token. An unreadable file is an error from New.
	TokenFile string
	// CAFile, CertFile, KeyFile and TLSServerName configure TLS to the agent.
	// Empty: CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY and
	// CONSUL_TLS_SERVER_NAME.
	CAFile, CertFile, KeyFile, TLSServerName string
	// Timeout bounds each HTTP request, but those made with a context from
	// UntilDeadline. Zero: DefaultTimeout.
	Timeout time.Duration
}

// untilDeadlineKey marks a context made by UntilDeadline.
type untilDeadlineKey struct{}

// UntilDeadline returns ctx marked so that the requests made with it wait for
// the agent's answer until ctx's deadline, however far, instead of giving up
// after Config.Timeout. It is for a request worth more than a retry: an agent
// at work on a thousand wrappers' deregistrations answers each in its turn,
// and one whose client hung up it applies anyway, so that giving up and
// asking again only queues the same work twice and holds a second of its
// connections. ctx must have a deadline.
func UntilDeadline(ctx context.Context) context.Context {
	return context.WithValue(ctx, untilDeadlineKey{}, true)
}

// bound returns ctx as a request should be made with it: capped at the
// client's timeout unless UntilDeadline marked it.
func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok && ctx.Value(untilDeadlineKey{}) != nil {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// Client talks to the agents of its list, each call to the one it names.
type Client struct {
	timeout time.Duration
	agents  []agent
	token   *token
}

type agent struct {
	addr string
	api  *api.Client
	beat *beater // nil: heartbeats go through api too
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
		if c.token == nil {
			tok, err := newToken(cfg, conf.Token, conf.TokenFile)
			if err != nil {
				return nil, err
			}
			c.token = tok
		}
		// The token goes with each request (see token), not as the api
		// client's default, so that a re-read token is used at once.
		conf.Token, conf.TokenFile = "", ""
		if addr != "" {
			conf.Address = addr
			if strings.HasPrefix(addr, "https://") {
				conf.Scheme = "https"
			}
		}
		setIf(&conf.TLSConfig.CAFile, cfg.CAFile)
		setIf(&conf.TLSConfig.CertFile, cfg.CertFile)
		setIf(&conf.TLSConfig.KeyFile, cfg.KeyFile)
		setIf(&conf.TLSConfig.Address, cfg.TLSServerName)
		// No HttpClient of our own: the api client builds one with the TLS
		// settings. Each request's context carries its deadline instead.
		tuneTransport(conf.Transport)
		given := conf.Address // NewClient rewrites a unix:// one
		client, err := api.NewClient(conf)
		if err != nil {
			return nil, fmt.Errorf("consul agent %s: %w", conf.Address, err)
		}
		// A unix:// address gets a transport of the api client's making.
		if t, ok := conf.HttpClient.Transport.(*http.Transport); ok {
			tuneTransport(t)
		}
		c.agents = append(c.agents, agent{addr: conf.Address, api: client, beat: newBeater(conf, given)})
	}
	return c, nil
}

// connBuffer is the size of a connection's read and write buffers. The
// agent's answers are a few hundred bytes, and since every request is a new
// connection (see tuneTransport), net/http's 4 KiB buffers were almost half
// of the garbage a heartbeat leaves. A larger answer (a look-up) just takes
// more reads.
const connBuffer = 1 << 10

func tuneTransport(t *http.Transport) {
	t.DisableKeepAlives = true
	t.ReadBufferSize, t.WriteBufferSize = connBuffer, connBuffer
}

func setIf(dst *string, v string) {
	if v != "" {
		*dst = v
	}
}

// Agents is the number of agents in the list; calls name one by its index.
func (c *Client) Agents() int { return len(c.agents) }

// Addr is the address of agent i, as errors and logs name it.
func (c *Client) Addr(i int) string { return c.agents[i].addr }

// AgentError is a failed call to one agent: what was asked (Op: register,
// heartbeat, deregister, look up), of which agent, and the kind of failure
// (ErrUnreachable, ErrTLS, ErrRefused, ErrRejected, ErrNotRegistered,
// ErrTokenChanged; nil for a 5xx answer), for errors.Is and for callers that
// tell one failure from another without reading its text, which holds
// details such as a source port that change on every attempt.
type AgentError struct {
	Op    string
	Agent string
	Kind  error
	Err   error // the api client's error; nil for ErrTokenChanged
}

func (e *AgentError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s through agent %s", e.Op, e.Agent)
	if e.Kind != nil {
		b.WriteString(": " + e.Kind.Error())
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	return b.String()
}

// Unwrap gives errors.Is and errors.As the kind (a TLS failure is also
// ErrUnreachable) and the cause.
func (e *AgentError) Unwrap() []error {
	errs := []error{e.Kind, e.Err}
	if e.Kind == ErrTLS {
		errs = append(errs, ErrUnreachable)
	}
	return errs
}

// do runs call against agent i with the current token and the client's
// timeout (see bound), and says what kind of failure an error is. When the agent rejects
// the token and the token file holds a new one, do reports ErrTokenChanged if
// retry is false, and otherwise makes the call once more with the new token.
func (c *Client) do(ctx context.Context, i int, op string, retry bool, call func(ctx context.Context, a *api.Client, token string) error) error {
	a := c.agents[i]
	attempt := func(token string) error {
		rctx, cancel := c.bound(ctx)
		defer cancel()
		return call(rctx, a.api, token)
	}
	used := c.token.get()
	err := attempt(used)
	if isForbidden(err) && c.token.renewed(used) {
		if !retry {
			return &AgentError{Op: op, Agent: a.addr, Kind: ErrTokenChanged}
		}
		err = attempt(c.token.get())
	}
	if err == nil {
		return nil
	}
	e := &AgentError{Op: op, Agent: a.addr, Err: err}
	switch {
	case ctx.Err() != nil:
		e.Err = ctx.Err()
	case isTLS(err):
		e.Kind = ErrTLS
	case isRefusal(err):
		e.Kind = ErrRefused
	case isNotFound(err):
		e.Kind = ErrNotRegistered
	case isClientError(err):
		e.Kind = ErrRejected
	case !isAnswer(err):
		e.Kind = ErrUnreachable
	}
	// Otherwise a 5xx: the agent answered; it is alive but cannot do it now.
	return e
}

// Service is one registration: the service and its single TTL check.
type Service struct {
	ID      string // service ID; the check's ID is "service:" + ID
	Name    string
	Tags    []string
	Meta    map[string]string
	Address string // empty: the node address of the agent it is registered with
	Port    int    // zero: none

	TTL time.Duration // how long a status lasts without a refresh
	// DeregisterAfter: Consul removes the service when its check has been
	// critical this long (minimum one minute). It is what cleans up after a
	// svcwrap that was SIGKILLed. Zero: never.
	DeregisterAfter time.Duration

	Status string // initial check status: api.HealthCritical, HealthPassing, ...
	Output string // initial check output
}

// registration is the body of the agent's register endpoint, the fields of
// api.AgentServiceRegistration that svcwrap sets and no more. That type
// reaches dozens of others (Connect, Proxy, gateways), and encoding/json
// keeps what it learns of every type it encodes for the life of the process:
// 80 KiB of heap in each of a host's wrappers, for fields svcwrap never
// sends.
type registration struct {
	ID      string            `json:",omitempty"`
	Name    string            `json:",omitempty"`
	Tags    []string          `json:",omitempty"`
	Meta    map[string]string `json:",omitempty"`
	Address string            `json:",omitempty"`
	Port    int               `json:",omitempty"`
	Check   registrationCheck
}

type registrationCheck struct {
	CheckID                        string `json:",omitempty"`
	Name                           string `json:",omitempty"`
	TTL                            string `json:",omitempty"`
	Status                         string `json:",omitempty"`
	Notes                          string `json:",omitempty"`
	DeregisterCriticalServiceAfter string `json:",omitempty"`
}

// CheckID is the ID of the TTL check svcwrap registers for a service ID, the one
// ianitor and Consul use by default.
func CheckID(serviceID string) string { return "service:" + serviceID }

// Register registers s with its TTL check on agent i. Registering again is
// safe: Consul keeps the service and its check's status, and the reaper's
// clock for a critical check restarts.
func (c *Client) Register(ctx context.Context, i int, s Service) error {
	reg := &registration{
		ID:      s.ID,
		Name:    s.Name,
		Tags:    s.Tags,
		Meta:    s.Meta,
		Address: s.Address,
		Port:    s.Port,
		Check: registrationCheck{
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
	err := c.do(ctx, i, "register", true, func(ctx context.Context, a *api.Client, token string) error {
		_, err := a.Raw().Write("/v1/agent/service/register", reg, nil, (&api.WriteOptions{Token: token}).WithContext(ctx))
		return err
	})
	if err != nil {
		return fmt.Errorf("register service %q: %w", s.ID, err)
	}
	// The output is not part of a registration; set it so the check says why
	// it is in its status from the first moment. The service is registered
	// whatever becomes of this: a failure here is not the registration's
	// (the caller would think it has none), and every heartbeat sends the
	// output again.
	if s.Output != "" {
		if err := c.SetStatus(ctx, i, s.ID, s.Status, s.Output); errors.Is(err, ErrTokenChanged) {
			_ = c.SetStatus(ctx, i, s.ID, s.Status, s.Output)
		}
	}
	return nil
}

// SetStatus sets the TTL check of serviceID on agent i to status with output,
// which also restarts its TTL. It returns an error wrapping ErrNotRegistered
// when the agent does not know the check, and ErrTokenChanged when the agent
// rejected the token and a new one was read: the caller registers again.
func (c *Client) SetStatus(ctx context.Context, i int, serviceID, status, output string) error {
	beat := c.agents[i].beat
	err := c.do(ctx, i, "heartbeat", false, func(ctx context.Context, a *api.Client, token string) error {
		if beat != nil {
			if sent, err := beat.update(ctx, CheckID(serviceID), status, output, token); sent {
				return err
			}
		}
		return a.Agent().UpdateTTLOpts(CheckID(serviceID), output, status, (&api.QueryOptions{Token: token}).WithContext(ctx))
	})
	if err != nil {
		if !errors.Is(err, ErrNotRegistered) && isUnknownCheck(err) {
			err = fmt.Errorf("%w: %w", ErrNotRegistered, err)
		}
		return fmt.Errorf("set check %q %s: %w", CheckID(serviceID), status, err)
	}
	return nil
}

// Deregister removes the service and its check from agent i. A service the
// agent does not know is already gone: that is success.
func (c *Client) Deregister(ctx context.Context, i int, serviceID string) error {
	err := c.do(ctx, i, "deregister", true, func(ctx context.Context, a *api.Client, token string) error {
		return a.Agent().ServiceDeregisterOpts(serviceID, (&api.QueryOptions{Token: token}).WithContext(ctx))
	})
	if err != nil && !errors.Is(err, ErrNotRegistered) {
		return fmt.Errorf("deregister service %q: %w", serviceID, err)
	}
	return nil
}

// Holder describes the current registration of a service ID on an agent.
type Holder struct {
	Meta        map[string]string
	CheckStatus string // status of the TTL check; empty when it has none
	CheckOutput string
}

// Holder returns who holds serviceID on agent i, or nil when nobody does.
// The usual case, a free ID, costs one request; a held one, a second for its
// check. (The agent's health endpoint would answer both at once, but it
// answers a warning with the same 429 as its connection limiter, so a refusal
// could not be told from an answer.)
func (c *Client) Holder(ctx context.Context, i int, serviceID string) (*Holder, error) {
	var svc *api.AgentService
	err := c.do(ctx, i, "look up", true, func(ctx context.Context, a *api.Client, token string) error {
		var err error
		svc, _, err = a.Agent().Service(serviceID, (&api.QueryOptions{Token: token}).WithContext(ctx))
		return err
	})
	if errors.Is(err, ErrNotRegistered) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up service %q: %w", serviceID, err)
	}
	if svc == nil {
		return nil, nil
	}

	var checks map[string]*api.AgentCheck
	filter := "CheckID == " + strconv.Quote(CheckID(serviceID))
	err = c.do(ctx, i, "look up", true, func(ctx context.Context, a *api.Client, token string) error {
		var err error
		checks, err = a.Agent().ChecksWithFilterOpts(filter, (&api.QueryOptions{Token: token}).WithContext(ctx))
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

// NodeAddress returns the address of agent i's node: the address a service
// registered there without one is given. A service registered through
// another agent carries this address explicitly, so that it still points at
// the host the command runs on.
func (c *Client) NodeAddress(ctx context.Context, i int) (string, error) {
	var self struct{ Member struct{ Addr string } }
	err := c.do(ctx, i, "look up", true, func(ctx context.Context, a *api.Client, token string) error {
		_, err := a.Raw().Query("/v1/agent/self", &self, (&api.QueryOptions{Token: token}).WithContext(ctx))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("look up the node address: %w", err)
	}
	if self.Member.Addr == "" {
		return "", fmt.Errorf("look up the node address through agent %s: the agent did not say", c.agents[i].addr)
	}
	return self.Member.Addr, nil
}

// token is the ACL token sent with every request. Read from a file, it is
// read again when an agent rejects it, so a rotated token takes effect
// without a restart.
type token struct {
	file string // empty: the token is fixed

	mu    sync.Mutex
	value string
}

// newToken picks the token as the consul CLI does: the configuration's token,
// then its token file, then CONSUL_HTTP_TOKEN, then CONSUL_HTTP_TOKEN_FILE
// (envToken and envFile, as api.DefaultConfig read them).
func newToken(cfg Config, envToken, envFile string) (*token, error) {
	switch {
	case cfg.Token != "":
		return &token{value: cfg.Token}, nil
	case cfg.TokenFile != "":
		envToken, envFile = "", cfg.TokenFile
	case envToken != "":
		return &token{value: envToken}, nil
	}
	if envFile == "" {
		return &token{}, nil
	}
	t := &token{file: envFile}
	v, err := t.read()
	if err != nil {
		return nil, err
	}
	t.value = v
	return t, nil
}

func (t *token) read() (string, error) {
	b, err := os.ReadFile(t.file)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	return string(bytes.TrimSpace(b)), nil
}

func (t *token) get() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.value
}

// renewed reports whether there is a token other than used, the one a
// rejected request carried: another call may have read the file already, or
// the file is read again now. An unreadable file keeps the token there was.
func (t *token) renewed(used string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.value != used {
		return true
	}
	if t.file == "" {
		return false
	}
	v, err := t.read()
	if err != nil || v == "" || v == t.value {
		return false
	}
	t.value = v
	return true
}

// Classifying errors. The api client reports an HTTP status either as an
// api.StatusError or, for some calls, only in the text "Unexpected response
// code: N"; statusCode reads both, and its test pins the text.

// statusCode returns the HTTP status an agent answered with, or 0 when err is
// not an answer.
func statusCode(err error) int {
	if err == nil {
		return 0
	}
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	msg := err.Error()
	const marker = "Unexpected response code: "
	i := strings.Index(msg, marker)
	if i < 0 {
		return 0
	}
	rest := msg[i+len(marker):]
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(rest)
	}
	code, _ := strconv.Atoi(rest[:end])
	return code
}

// isAnswer reports whether err came from an agent that answered (an HTTP
// status), as opposed to one that could not be reached.
func isAnswer(err error) bool { return statusCode(err) != 0 }

func isNotFound(err error) bool { return statusCode(err) == http.StatusNotFound }

func isForbidden(err error) bool { return statusCode(err) == http.StatusForbidden }

// isClientError: a 4xx other than 404 (unknown) and 429 (refused).
func isClientError(err error) bool {
	code := statusCode(err)
	return code >= 400 && code < 500 && code != http.StatusNotFound && code != http.StatusTooManyRequests
}

// isUnknownCheck recognises the agent's answers for a check it does not have,
// which some versions give as a 500 with these words.
func isUnknownCheck(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "Unknown check") || strings.Contains(msg, "does not have associated TTL")
}

// isTLS reports whether err is a TLS failure: a certificate the client does
// not trust, a handshake the agent broke off with an alert (crypto/tls
// reports a received alert as a net.OpError of Op "remote error"), or TLS
// spoken to a plain port or the reverse. Such an agent will not answer this
// client until someone fixes the configuration; it is not a refusal.
func isTLS(err error) bool {
	if err == nil {
		return false
	}
	var (
		verify   *tls.CertificateVerificationError
		header   tls.RecordHeaderError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		op       *net.OpError
	)
	switch {
	case errors.As(err, &verify), errors.As(err, &header), errors.As(err, &alert),
		errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return true
	case errors.As(err, &op) && op.Op == "remote error":
		return true
	}
	// net/http says this, with no type, when a plain-HTTP agent is spoken
	// to in TLS; the agent's HTTPS port answers plain HTTP with a 400
	// saying the other.
	msg := err.Error()
	return strings.Contains(msg, "server gave HTTP response to HTTPS client") ||
		strings.Contains(msg, "Client sent an HTTP request to an HTTPS server")
}

// isRefusal reports whether the agent turned the request away: its 429, from
// the request rate limiter or the per-IP connection limiter. The connection
// limiter writes its 429 the moment it accepts, before the request is sent,
// so net/http mostly sees a connection that was made and then dropped before
// its answer ("Unsolicited response received on idle HTTP channel") rather
// than the status; those drops count too. Anything else, a connection that
// could not be made, a timeout, a TLS or protocol error, is not a refusal.
func isRefusal(err error) bool {
	if err == nil || isTLS(err) {
		return false
	}
	if statusCode(err) == http.StatusTooManyRequests {
		return true
	}
	var ue *url.Error
	if !errors.As(err, &ue) || ue.Timeout() {
		return false
	}
	msg := err.Error()
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(msg, "readLoopPeekFailLocked") || // net/http: the 429 came first
		strings.Contains(msg, "server closed idle connection")
}
