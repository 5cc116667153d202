package check

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// HTTP is the check http:URL, by Consul's own rules for its HTTP checks: a
// GET that answers 2xx is passing, 429 (Too Many Requests) warning, any other
// status, a refused connection or a timeout critical. Redirects are
// followed, up to ten. It connects: never point it at a server that accepts a
// single connection (`nc -l`).
//
// Use NewHTTP: the zero value has no URL.
type HTTP struct {
	url     string // as requested
	shown   string // as written in the output: without a password
	timeout time.Duration
	client  *http.Client
}

// HTTPOptions are the settings of an HTTP check.
type HTTPOptions struct {
	// Timeout bounds the whole request, body included. Zero: only the
	// context passed to Check bounds it.
	Timeout time.Duration
	// TLSSkipVerify accepts any certificate from an https:// URL, as Consul's
	// tls_skip_verify does. False: the system's roots verify it.
	TLSSkipVerify bool
}

// maxBody is how much of an answer's body is read, then dropped: reading a
// little lets a server that writes its body before it notices the client
// left finish cleanly; the body never goes into the output (see Result).
const maxBody = 4 << 10

// NewHTTP returns the check of rawURL, an http:// or https:// URL (see
// ParseSpec).
func NewHTTP(rawURL string, opts HTTPOptions) HTTP {
	shown := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		shown = u.Redacted()
	}
	transport := &http.Transport{
		// One request per run, to the service itself: no proxy, and no
		// connection kept between runs, which would hold one of the
		// server's connections for as long as svcwrap runs (as Consul's
		// checks do, DisableKeepAlives).
		Proxy:               nil,
		DisableKeepAlives:   true,
		DialContext:         (&net.Dialer{}).DialContext,
		TLSHandshakeTimeout: opts.Timeout,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: opts.TLSSkipVerify}, //nolint:gosec // the user asked for it
	}
	return HTTP{
		url: rawURL, shown: shown, timeout: opts.Timeout,
		client: &http.Client{Transport: transport, Timeout: opts.Timeout},
	}
}

// Check makes one GET. Its output is "GET URL: CODE" when the server
// answered, and "GET URL: WHY" otherwise, where WHY names the kind of failure
// in constant words ("connection refused", "timeout after 2s").
func (h HTTP) Check(ctx context.Context) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return Result{Status: Critical, Output: "GET " + h.shown + ": invalid URL"}
	}
	req.Header.Set("User-Agent", "svcwrap health check")
	req.Header.Set("Accept", "text/plain, text/*, */*")
	resp, err := h.client.Do(req)
	if err != nil {
		return Result{Status: Critical, Output: "GET " + h.shown + ": " + describe(err, h.timeout)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	return Result{Status: httpStatus(resp.StatusCode), Output: "GET " + h.shown + ": " + strconv.Itoa(resp.StatusCode)}
}

// httpStatus is Consul's reading of an HTTP check's answer.
func httpStatus(code int) Status {
	switch {
	case code >= 200 && code <= 299:
		return Passing
	case code == http.StatusTooManyRequests:
		return Warning
	default:
		return Critical
	}
}
