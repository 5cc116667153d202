package consulclient

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Consul's rules for service meta, as its agent/structs enforce them: a
// registration that breaks one is refused with a 400.
const (
	// MaxMetaPairs is the most key/value pairs a service's meta may hold.
	MaxMetaPairs = 64
	// MaxMetaKeyLength is the longest meta key, in bytes.
	MaxMetaKeyLength = 128
	// MaxMetaValueLength is the longest meta value, in bytes.
	MaxMetaValueLength = 512
	// MetaReservedPrefix starts the meta keys Consul keeps for itself.
	MetaReservedPrefix = "consul-"
)

// MaxServiceIDLength bounds a service ID or name, in bytes. The agent's HTTP
// server takes at most 1 MiB of request line and headers, and a path segment
// of three-byte runes grows threefold when percent-encoded: at this bound the
// worst case still fits. (A 2 MiB ID registers, since the body is not bound,
// and can then be neither looked up nor deregistered: 431.)
const MaxServiceIDLength = 256 << 10

// Default ports for an agent address that names none: ianitor's and the
// consul CLI's HTTP port, and Consul's HTTPS port for an https:// address.
const (
	DefaultHTTPPort  = 8500
	DefaultHTTPSPort = 8501
)

// ValidateServiceID returns an error if id cannot be a service ID that is
// registered, refreshed and deregistered through the agent's HTTP API, where
// the ID is a path segment (/v1/agent/service/deregister/ID). Such IDs would
// register, since the registration carries the ID in its body, and then stay
// until Consul's reaper removes them. A double quote is refused too: Holder
// finds the service's check with a filter expression, and the agent's
// (go-bexpr 0.1.2) cannot quote one in a string: it answers 500.
func ValidateServiceID(id string) error {
	if err := validatePathSegment("service ID", id); err != nil {
		return err
	}
	if strings.Contains(id, `"`) {
		return fmt.Errorf("service ID %s: holds '\"', which the agent's filter expressions cannot quote", quote(id))
	}
	return nil
}

// ValidateServiceName returns an error if name cannot be a service name that
// the agent's HTTP API can look up (/v1/health/service/NAME); the rules are
// those of ValidateServiceID.
func ValidateServiceName(name string) error { return validatePathSegment("service name", name) }

// validatePathSegment refuses what the agent's HTTP server cannot route to a
// handler intact:
//   - a rune that is not printable (unicode.IsPrint: control characters, but
//     also U+00A0, U+200D, U+2028, U+FEFF, U+3000): the agent answers 400 to
//     any path that holds one (go-cleanhttp's PrintablePathCheckHandler);
//   - invalid UTF-8, which the JSON body turns into U+FFFD: the ID registered
//     is not the ID asked for;
//   - "." and "..", and "/" (a leading one, or two in a row, are cleaned away
//     by the HTTP server's path cleaning; the rest is refused too, since a
//     segment that holds one is not a segment);
//   - empty or only white space, and longer than MaxServiceIDLength.
//
// Everything else printable, "?", "#", "%", a space or a backslash included,
// goes through: the api client escapes the path.
func validatePathSegment(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty %s", what)
	case !utf8.ValidString(s):
		return fmt.Errorf("%s %s: not valid UTF-8", what, quote(s))
	case strings.TrimSpace(s) == "":
		return fmt.Errorf("%s %s: only white space", what, quote(s))
	case len(s) > MaxServiceIDLength:
		return fmt.Errorf("%s %s: %d bytes, more than %d", what, quote(s), len(s), MaxServiceIDLength)
	case s == "." || s == "..":
		return fmt.Errorf("%s %q: the agent's HTTP paths cannot hold it", what, s)
	case strings.Contains(s, "/"):
		return fmt.Errorf("%s %s: contains \"/\"", what, quote(s))
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s %s: holds %U, which the agent's HTTP paths refuse", what, quote(s), r)
		}
	}
	return nil
}

// ValidateMeta returns an error if Consul would refuse meta: more than
// MaxMetaPairs pairs, a key that is empty, longer than MaxMetaKeyLength or
// not made of A-Z, a-z, 0-9, "_" and "-", a key that starts with
// MetaReservedPrefix in any case (Consul itself only refuses the lower-case
// form, but the prefix is meant as reserved), or a value longer than
// MaxMetaValueLength bytes. Keys are checked in sorted order, so the error is
// the same from run to run.
func ValidateMeta(meta map[string]string) error {
	if len(meta) > MaxMetaPairs {
		return fmt.Errorf("meta: %d pairs, at most %d", len(meta), MaxMetaPairs)
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := ValidateMetaKey(k); err != nil {
			return err
		}
		if v := meta[k]; len(v) > MaxMetaValueLength {
			return fmt.Errorf("meta %s: value of %d bytes, at most %d", k, len(v), MaxMetaValueLength)
		}
	}
	return nil
}

// ValidateMetaKey returns an error if Consul would refuse key as a meta key
// (see ValidateMeta).
func ValidateMetaKey(key string) error {
	switch {
	case key == "":
		return errors.New("meta: empty key")
	case len(key) > MaxMetaKeyLength:
		return fmt.Errorf("meta key %s: %d characters, at most %d", quote(key), len(key), MaxMetaKeyLength)
	case strings.HasPrefix(strings.ToLower(key), MetaReservedPrefix):
		return fmt.Errorf("meta key %q: the prefix %q is reserved for Consul", key, MetaReservedPrefix)
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; !isAlnum(c) && c != '_' && c != '-' {
			return fmt.Errorf("meta key %s: only A-Z, a-z, 0-9, _ and - are allowed", quote(key))
		}
	}
	return nil
}

// ValidateServiceAddress returns an error unless addr is empty (the agent's
// node address), an IP address (v4 or v6, no zone) or a host name of RFC 1123
// labels, at most 253 characters. A URL, a host:port or anything with spaces
// is refused.
func ValidateServiceAddress(addr string) error {
	if addr == "" {
		return nil
	}
	if err := validateHost(addr); err != nil {
		return fmt.Errorf("address %s: %w", quote(addr), err)
	}
	return nil
}

var errHost = errors.New("want an IP address or a host name")

func validateHost(h string) error {
	if ip, err := netip.ParseAddr(h); err == nil {
		if ip.Zone() != "" {
			return errors.New("an IPv6 zone cannot be registered")
		}
		return nil
	}
	if !isHostName(h) {
		return errHost
	}
	return nil
}

// isHostName reports whether h is a host name of RFC 1123: dot-separated
// labels of 1-63 letters, digits and hyphens, no hyphen first or last, at
// most 253 characters in all, and a last label that is not all digits (RFC
// 1123 2.1: so that no host name reads as a dotted-decimal address).
func isHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.TrimLeft(last, "0123456789") != ""
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// ParseAgentAddr reads one agent address and returns it normalized, as New
// takes it: "host:port" (IPv6 in brackets), "https://host:port" or
// "unix:///path". It accepts host, host:port, [v6]:port, a bare IPv6 address,
// http://host[:port], https://host[:port] and unix:///path. A host without a
// port means DefaultHTTPPort, or DefaultHTTPSPort after https://. A path
// other than "/", a query, a fragment, user info, an unknown scheme, an
// empty host and a port outside 1-65535 are refused.
func ParseAgentAddr(s string) (string, error) {
	addr, err := parseAgentAddr(s)
	if err != nil {
		return "", fmt.Errorf("consul agent address %s: %w", quote(s), err)
	}
	return addr, nil
}

func parseAgentAddr(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty")
	}
	if strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		return "", errors.New("holds white space or an unprintable character")
	}
	scheme, rest, hasScheme := strings.Cut(s, "://")
	if !hasScheme {
		scheme, rest = "http", s
		// A bare IPv6 address: its colons are not a port.
		if ip, err := netip.ParseAddr(s); err == nil && ip.Is6() {
			rest = "[" + s + "]"
		}
	}
	scheme = strings.ToLower(scheme)
	switch scheme {
	case "unix":
		if !strings.HasPrefix(rest, "/") || rest == "/" {
			return "", errors.New("want unix:///absolute/path")
		}
		if strings.ContainsAny(rest, "?#") {
			return "", errors.New("a unix socket path takes no query or fragment")
		}
		return "unix://" + rest, nil
	case "http", "https":
	default:
		return "", fmt.Errorf("unknown scheme %q: want http://, https:// or unix://", scheme)
	}
	switch {
	case strings.Contains(rest, "?"):
		return "", errors.New("a query is not allowed")
	case strings.Contains(rest, "#"):
		return "", errors.New("a fragment is not allowed")
	case strings.Contains(rest, "@"):
		return "", errors.New("user info is not allowed (use --token-file for the ACL token)")
	}
	hostport, path, _ := strings.Cut(rest, "/")
	if path != "" {
		return "", fmt.Errorf("path /%s is not allowed", path)
	}
	if !strings.HasPrefix(hostport, "[") && strings.Count(hostport, ":") > 1 {
		return "", errors.New("an IPv6 address goes in brackets: [v6]:port")
	}
	if strings.Contains(hostport, "%") {
		return "", errHost
	}
	u, err := url.Parse(scheme + "://" + hostport)
	if err != nil || u.Host != hostport {
		return "", errors.New("want host, host:port or [IPv6]:port")
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return "", errors.New("empty host")
	}
	if err := validateHost(host); err != nil {
		return "", fmt.Errorf("host %s: %w", quote(host), err)
	}
	switch {
	case port == "" && strings.HasSuffix(hostport, ":"):
		return "", errors.New("empty port")
	case port == "" && scheme == "https":
		port = strconv.Itoa(DefaultHTTPSPort)
	case port == "":
		port = strconv.Itoa(DefaultHTTPPort)
	default:
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("port %s: want 1-65535", port)
		}
		port = strconv.Itoa(n)
	}
	out := net.JoinHostPort(host, port)
	if scheme == "https" {
		out = "https://" + out
	}
	return out, nil
}

// quote quotes s for an error message, on one line and cut short when long.
func quote(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
