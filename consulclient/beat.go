package consulclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// A heartbeat is the one request svcwrap sends for the life of its command,
// every few seconds, and through net/http and the api client each one left
// 11 KiB of garbage in 119 allocations (a transport connection with its
// buffers and two goroutines, a request, its headers, contexts, a parsed
// answer). An idle wrapper's memory grew with that garbage from its first
// minute on, 7.4 MiB RSS at the start and 8.6 ten minutes later; with a
// seventh of it, the growth waits for the runtime's first collection and
// settles 0.4 MiB lower, and a heartbeat costs about a fifth less CPU
// (BENCHMARKS.md, section 11). So a heartbeat to a local
// agent spoken to in plain HTTP is written by hand: the same PUT the api
// client sends (/v1/agent/check/update/ID with {"Status","Output"} and the
// token header), on a connection of its own that the agent closes once it
// has answered, read into a buffer kept between heartbeats. Everything else,
// and a heartbeat to any other agent (TLS, a proxy, basic auth, a namespace
// or partition, a path prefix), goes through the api client.

// beatBuffer holds a heartbeat's request and its answer; both are a few
// hundred bytes. An answer that does not fit is read to its end and cut: a
// heartbeat only needs the status line and the start of an error's text.
const beatBuffer = 1 << 10

// beatOverflow is where the rest of an answer too long to keep is read to,
// and dropped.
const beatOverflow = 256

// beater sends the heartbeats for one agent.
type beater struct {
	network, address string // for net.Dialer: "tcp" host:port, or "unix" path
	host             string // the Host header
	// own is the token the api client sends when a request carries none:
	// what api.NewClient read from CONSUL_HTTP_TOKEN(_FILE) although New
	// cleared it. The api path sends it then, so this one does too.
	own string
	url string // for error messages, which name the request as net/http's do

	mu     sync.Mutex // one heartbeat at a time uses the buffers; others go the api's way
	req    []byte
	answer [beatBuffer + beatOverflow]byte
	// The body of the last heartbeat, kept as long as its status and output
	// do not change, which is most of a command's life.
	status, output string
	body           []byte
}

// newBeater returns the hand-written heartbeat for an agent the api client was
// configured for with conf (after api.NewClient filled it in) and addr (as
// New was given it), or nil when the heartbeat must go through the api
// client: anything but plain HTTP to a loopback address or a unix socket, or
// a configuration that adds to the request.
func newBeater(conf *api.Config, addr string) *beater {
	if conf.Scheme != "http" || conf.HttpAuth != nil || conf.Namespace != "" || conf.Partition != "" ||
		conf.Datacenter != "" || conf.PathPrefix != "" {
		return nil
	}
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		return &beater{network: "unix", address: path, host: "localhost", url: "http://localhost", own: conf.Token}
	}
	host, port, err := net.SplitHostPort(conf.Address)
	if err != nil {
		return nil
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil // the address goes into the Host header as it is
	}
	// Only loopback: net/http would send a request to any other address
	// through HTTP_PROXY when that is set, and never one to these.
	if ip, err := netip.ParseAddr(host); (err != nil || !ip.IsLoopback()) && host != "localhost" {
		return nil
	}
	return &beater{network: "tcp", address: conf.Address, host: conf.Address, url: "http://" + conf.Address, own: conf.Token}
}

// update sends one heartbeat: checkID to status with output. ok is false
// when another heartbeat holds the buffers, and nothing was sent. Failures
// come as the api client reports them, so that classifying them (statusCode,
// isRefusal) reads both alike: an answer other than 200 as an
// api.StatusError, anything else as a *url.Error.
func (b *beater) update(ctx context.Context, checkID, status, output, token string) (ok bool, err error) {
	switch status {
	case api.HealthPassing, api.HealthWarning, api.HealthCritical:
	default:
		return false, nil // the api client's words for it
	}
	if token == "" {
		token = b.own
	}
	if !headerValue(token) {
		return false, nil // net/http refuses to send it, and says why
	}
	if !b.mu.TryLock() {
		return false, nil
	}
	defer b.mu.Unlock()
	path := "/v1/agent/check/update/" + url.PathEscape(checkID)
	if err := b.request(path, status, output, token); err != nil {
		return true, err
	}
	n, err := b.exchange(ctx)
	if err != nil {
		return true, &url.Error{Op: "Put", URL: b.url + path, Err: cause(ctx, err)}
	}
	code, text, err := parseAnswer(b.answer[:n])
	if err != nil {
		return true, &url.Error{Op: "Put", URL: b.url + path, Err: err}
	}
	if code != 200 {
		return true, api.StatusError{Code: code, Body: text}
	}
	return true, nil
}

// headerValue reports whether v can go into a header as it is: no control
// characters, which would end the header (or the request) early.
func headerValue(v string) bool {
	for i := range len(v) {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// request writes the heartbeat's request into b.req.
func (b *beater) request(path, status, output, token string) error {
	if b.body == nil || status != b.status || output != b.output {
		body, err := json.Marshal(struct{ Status, Output string }{status, output})
		if err != nil {
			return err
		}
		b.body, b.status, b.output = body, status, output
	}
	r := b.req[:0]
	r = append(r, "PUT "...)
	r = append(r, path...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, b.host...)
	r = append(r, "\r\nUser-Agent: svcwrap\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "...)
	r = strconv.AppendInt(r, int64(len(b.body)), 10)
	if token != "" {
		r = append(r, "\r\nX-Consul-Token: "...)
		r = append(r, token...)
	}
	r = append(r, "\r\n\r\n"...)
	b.req = append(r, b.body...)
	return nil
}

// exchange sends b.req on a new connection and reads the answer into b.answer
// until the agent closes the connection, within ctx (or DefaultTimeout when
// ctx has no deadline; the Client's calls always have one). It returns
// the length of what fitted. The agent counts a connection against its
// per-client limit until it has closed it, so waiting for that close also
// keeps the host's gate honest about how many it holds.
func (b *beater) exchange(ctx context.Context) (int, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(DefaultTimeout)
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	var d net.Dialer // the deadline is ctx's
	conn, err := d.DialContext(ctx, b.network, b.address)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(deadline); err != nil {
		return 0, err
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
		defer stop()
	}
	_, werr := conn.Write(b.req)
	// An agent at its connection limit answers 429 as it accepts and closes
	// without reading: the write may fail, and the answer still be there.
	n, rerr := readAll(conn, b.answer[:], deadline)
	if n == 0 && werr != nil {
		return 0, werr
	}
	return n, rerr
}

// cause is err as net/http would report it: the context's error when the
// context ended, and the deadline, which was the context's (or the
// default timeout in its place), as context.DeadlineExceeded even when the
// connection's copy of it ran out a moment before the context's.
func cause(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return context.DeadlineExceeded
	}
	return err
}

// closeGrace is how long a whole answer waits for the agent to close the
// connection. Consul closes it right after answering a request that asked
// so, and waiting for that keeps the host's gate honest: the agent counts a
// connection against its limit until it has closed it. Something else on
// the agent's address (a proxy that keeps connections) must not hold every
// heartbeat until its timeout.
const closeGrace = 100 * time.Millisecond

// readAll reads conn to its end into buf, keeping the first beatBuffer bytes
// and reading the rest into the last beatOverflow bytes of buf, over and
// over, and returns how much it kept. io.EOF is the end, not an error. Once
// a whole answer is there (by its Content-Length), the end is waited for
// closeGrace at most, and an error after it (a reset once the agent has
// written it, the grace running out) is dropped: the answer is what counts.
func readAll(conn net.Conn, buf []byte, deadline time.Time) (int, error) {
	keep := len(buf) - beatOverflow
	var n int
	whole := false
	for {
		var err error
		if n < keep {
			var m int
			m, err = conn.Read(buf[n:keep])
			n += m
		} else {
			_, err = conn.Read(buf[keep:])
		}
		switch {
		case err == io.EOF:
			return n, nil
		case err != nil && (whole || wholeAnswer(buf[:n], n == keep)):
			return n, nil
		case err != nil:
			return n, err
		}
		if !whole && wholeAnswer(buf[:n], n == keep) {
			whole = true
			if grace := time.Now().Add(closeGrace); grace.Before(deadline) {
				_ = conn.SetReadDeadline(grace)
			}
		}
	}
}

// wholeAnswer reports whether a holds an answer's head and as much of its body
// as its Content-Length says, or as fitted (full). It allocates nothing: it
// runs after every read.
func wholeAnswer(a []byte, full bool) bool {
	end := bytes.Index(a, []byte("\r\n\r\n"))
	if end < 0 {
		return false
	}
	head, body := a[:end+2], a[end+4:]
	const name = "content-length:"
	for len(head) > 0 {
		line := head
		if i := bytes.Index(head, []byte("\r\n")); i >= 0 {
			line, head = head[:i], head[i+2:]
		} else {
			head = nil
		}
		if len(line) < len(name) || !bytes.EqualFold(line[:len(name)], []byte(name)) {
			continue
		}
		length, ok := 0, false
		for _, c := range bytes.TrimSpace(line[len(name):]) {
			if c < '0' || c > '9' {
				return false
			}
			length, ok = min(length*10+int(c-'0'), 1<<30), true
		}
		return ok && (len(body) >= length || full)
	}
	return false
}

// parseAnswer returns an answer's status code and, for an error, its body as
// text. Nothing at all is io.EOF, part of a status line io.ErrUnexpectedEOF,
// as net/http reports them (a connection the agent dropped: isRefusal).
func parseAnswer(a []byte) (code int, text string, err error) {
	if len(a) == 0 {
		return 0, "", io.EOF
	}
	line, _, ok := bytes.Cut(a, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return 0, "", io.ErrUnexpectedEOF
	}
	_, status, _ := bytes.Cut(line, []byte(" "))
	if len(status) < 3 {
		return 0, "", io.ErrUnexpectedEOF
	}
	code, err = strconv.Atoi(string(status[:3]))
	if err != nil || code < 100 {
		return 0, "", errors.New("malformed HTTP status line " + strconv.Quote(string(line)))
	}
	if code == 200 {
		return code, "", nil
	}
	_, body, _ := bytes.Cut(a, []byte("\r\n\r\n"))
	return code, strings.TrimSpace(string(body)), nil
}
