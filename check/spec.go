package check

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Kind is the kind of an active check.
type Kind string

// The kinds of active checks, the prefixes of a check spec.
const (
	KindHTTP   Kind = "http"   // http:URL, a GET; see HTTP
	KindTCP    Kind = "tcp"    // tcp:HOST:PORT, a connect; see TCP
	KindScript Kind = "script" // script:COMMAND, run by /bin/sh -c; see Script
)

// Spec is one active check as the command line names it: KIND:TARGET.
type Spec struct {
	Kind Kind
	// Target is the URL of an http check (its scheme http or https), the
	// HOST:PORT of a tcp check, the shell command of a script check.
	Target string
}

// String is the spec as ParseSpec reads it, with the password of an http
// check's URL replaced by "xxxxx" (url.URL.Redacted): it is what svcwrap
// shows of a spec, in a check's output, a log line or an error. Target
// keeps the password, for the request.
func (s Spec) String() string { return string(s.Kind) + ":" + Redact(s.Target) }

// Redact replaces the password in what may be a URL with "xxxxx", as
// url.URL.Redacted does, also where the rest of it is not a valid URL (an
// error names what the user wrote): the password is what follows the first
// colon of the user information, between "://" and the last "@" before the
// path. Anything else is returned as it is.
func Redact(s string) string {
	_, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	authority := rest
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		authority = rest[:i]
	}
	at := strings.LastIndex(authority, "@")
	if at < 0 {
		return s
	}
	colon := strings.Index(authority[:at], ":")
	if colon < 0 {
		return s
	}
	start := len(s) - len(rest) + colon + 1
	return s[:start] + "xxxxx" + s[len(s)-len(rest)+at:]
}

// ErrSpec marks a check spec that ParseSpec cannot read.
var ErrSpec = errors.New("want http:URL, tcp:HOST:PORT or script:COMMAND")

// ParseSpec reads a check spec: "http:URL" (also a bare http:// or https://
// URL, and http:HOST[:PORT]/PATH, which means http://), "tcp:HOST:PORT" or
// "script:COMMAND". Every error wraps ErrSpec or says what is wrong with the
// target, on one line.
func ParseSpec(s string) (Spec, error) {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		s = "http:" + s
	}
	kind, target, ok := strings.Cut(s, ":")
	s = Redact(s) // for the errors below
	if !ok {
		return Spec{}, fmt.Errorf("check %q: %w", s, ErrSpec)
	}
	spec := Spec{Kind: Kind(kind), Target: target}
	switch spec.Kind {
	case KindHTTP:
		if !strings.Contains(target, "://") {
			spec.Target = "http://" + target
			s = "http:" + strings.TrimPrefix(Redact(spec.Target), "http://")
		}
		u, err := url.Parse(spec.Target)
		if err != nil {
			return Spec{}, fmt.Errorf("check %q: not a URL", s)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return Spec{}, fmt.Errorf("check %q: scheme %q, want http or https", s, u.Scheme)
		}
		if u.Hostname() == "" {
			return Spec{}, fmt.Errorf("check %q: no host in the URL", s)
		}
		if p := u.Port(); p != "" {
			if err := validPort(p); err != nil {
				return Spec{}, fmt.Errorf("check %q: %w", s, err)
			}
		}
	case KindTCP:
		host, port, err := net.SplitHostPort(target)
		if err != nil || host == "" {
			return Spec{}, fmt.Errorf("check %q: want tcp:HOST:PORT ([v6]:PORT for IPv6)", s)
		}
		if err := validPort(port); err != nil {
			return Spec{}, fmt.Errorf("check %q: %w", s, err)
		}
	case KindScript:
		if strings.TrimSpace(target) == "" {
			return Spec{}, fmt.Errorf("check %q: empty command", s)
		}
	default:
		return Spec{}, fmt.Errorf("check %q: unknown kind %q: %w", s, kind, ErrSpec)
	}
	return spec, nil
}

func validPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1-65535", p)
	}
	return nil
}

// SplitSpecs splits a comma-separated list of check specs, as the
// environment gives them (SVCWRAP_CHECK), where a comma may also belong to a
// URL or a command: the list is split only at a comma followed by a kind
// ("http:", "https:", "tcp:", "script:") or at the end, so that
// "script:test -f a,b,http://x/health" is two checks.
func SplitSpecs(list string) []string {
	var out []string
	start := 0
	for i := 0; i < len(list); i++ {
		if list[i] != ',' || !startsSpec(list[i+1:]) {
			continue
		}
		out = appendSpec(out, list[start:i])
		start = i + 1
	}
	return appendSpec(out, list[start:])
}

func startsSpec(s string) bool {
	s = strings.TrimLeft(s, " ")
	if s == "" {
		return true // a trailing comma ends the list
	}
	for _, p := range []string{"http:", "https:", "tcp:", "script:"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func appendSpec(out []string, s string) []string {
	if s = strings.TrimSpace(s); s != "" {
		out = append(out, s)
	}
	return out
}
