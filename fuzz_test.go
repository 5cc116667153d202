package main

import (
	"errors"
	"io"
	"maps"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/wrapper"
)

// fuzzGood are command lines that must parse: every ianitor and svcwrap line
// of README.md, RESEARCH.md and the examples, and the edges of the rules.
var fuzzGood = [][]string{
	{"--port", "9999", "netcat", "--", "nc", "-l", "9999"},
	{"--consul", "10.0.0.5:8500,127.0.0.1:8500", "--tag", "v2", "--meta", "team=web", "--port", "8080", "web", "--", "/usr/bin/web", "--listen", ":8080"},
	{"--port", "80", "--stop-signal", "QUIT", "--drain", "5s", "nginx", "--", "nginx", "-g", "daemon off;"},
	{"--consul-agent", "localhost:8500", "--ttl", "10", "--heartbeat", "1", "--tags", "a", "--tags", "b", "--port", "9999", "-vv", "netcat", "--", "nc", "-l", "9999"},
	{"--consul-agent", "localhost", "--ttl", "10", "--heartbeat", "1", "--tags", "a", "--tags", "b", "--id", "x", "--address", "10.0.0.1", "--port", "9999", "-vv", "name", "--", "cmd", "arg"},
	{"--consul-agent", "127.0.0.1:8500", "--ttl", "10", "--heartbeat", "1", "--tags", "one", "--tags", "two", "--id", "ian-1", "--address", "127.0.0.5", "--port", "1234", "-vvv", "ian", "--", "sleep", "1000"},
	{"--ttl", "2.5", "-v", "service-name", "--", "command", "arguments"},
	{"-vv", "--port", "8080", "--drain", "5s", "--kill-timeout", "15s", "web", "--", "/usr/bin/web", "--listen", "127.0.0.1:8080"},
	{"--ttl", "1s", "--heartbeat", "100ms", "--check-interval", "10ms", "--consul-timeout", "100ms", "floors", "--", "true"},
	{"--consul", "https://consul.example:8501/,unix:///run/consul.sock,[::1]", "--pass-token", "--log-format", "json", "web", "--", "true"},
	{"--id", "a?b#c%d e\\f...ünï", "--address", "2001:db8::1", "--deregister", "on-success", "--deregister-after", "0", "web", "--", "true"},
}

// fuzzEnv are environments seeded with the good command lines.
var fuzzEnv = []string{
	"",
	"CONSUL_HTTP_ADDR=127.0.0.1:8500",
	"SVCWRAP_TTL=10\x00SVCWRAP_TAG=a,b\x00SVCWRAP_META=team=web",
	"CONSUL_HTTP_TOKEN=t\x00SVCWRAP_PASS_TOKEN=true",
}

// FuzzCommandLine parses arbitrary command lines (argv joined by NUL, which
// no argument can hold) in arbitrary environments (entries joined by NUL).
// Nothing may panic; an error is one printable line; a configuration that
// parses is one that Consul takes and svcwrap's floors allow.
func FuzzCommandLine(f *testing.F) {
	for _, args := range fuzzGood {
		for _, env := range fuzzEnv {
			f.Add(strings.Join(args, "\x00"), env)
		}
	}
	for _, c := range badCases() {
		args := append(append([]string{}, c.args...), "--", "sh", "-c", "touch MARKER")
		f.Add(strings.Join(args, "\x00"), strings.Join(c.env, "\x00"))
	}
	f.Fuzz(func(t *testing.T, argv, env string) {
		args := strings.Split(argv, "\x00")
		var environ []string
		if env != "" {
			environ = strings.Split(env, "\x00")
		}
		cfg, ccfg, err := parse(args, environ, io.Discard, io.Discard)
		if errors.Is(err, errShown) {
			return
		}
		if err != nil {
			msg := err.Error()
			if msg == "" || !utf8.ValidString(msg) || strings.IndexFunc(msg, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
				t.Fatalf("error is not one printable line: %q", msg)
			}
			return
		}
		v, err := cfg.Validate()
		if err != nil {
			t.Fatalf("parse passed what wrapper refuses: %v", err)
		}
		checkInvariants(t, v, ccfg)
	})
}

// checkInvariants fails t unless v and ccfg are what svcwrap promises.
func checkInvariants(t *testing.T, v wrapper.Config, ccfg consulclient.Config) {
	t.Helper()
	if err := consulclient.ValidateServiceName(v.Name); err != nil {
		t.Errorf("name: %v", err)
	}
	if err := consulclient.ValidateServiceID(v.ID); err != nil {
		t.Errorf("ID: %v", err)
	}
	if _, ok := v.Meta["svcwrap_instance"]; ok {
		t.Errorf("the user set svcwrap_instance")
	}
	registered := maps.Clone(v.Meta)
	if registered == nil {
		registered = map[string]string{}
	}
	registered["svcwrap_instance"] = "a-host-name/4194304/18446744073709551615"
	if err := consulclient.ValidateMeta(registered); err != nil {
		t.Errorf("meta with svcwrap's own key: %v", err)
	}
	if err := consulclient.ValidateServiceAddress(v.Address); err != nil {
		t.Errorf("address: %v", err)
	}
	if v.Port < 0 || v.Port > 65535 {
		t.Errorf("port %d", v.Port)
	}
	if len(v.Command) == 0 || v.Command[0] == "" {
		t.Errorf("command %q", v.Command)
	}
	switch {
	case v.TTL < time.Second:
		t.Errorf("ttl %s below 1s", v.TTL)
	case v.Heartbeat < 100*time.Millisecond || v.Heartbeat >= v.TTL:
		t.Errorf("heartbeat %s: want 100ms up to ttl %s", v.Heartbeat, v.TTL)
	case v.CheckInterval < 10*time.Millisecond:
		t.Errorf("check interval %s below 10ms", v.CheckInterval)
	case v.ConsulTimeout < 100*time.Millisecond || ccfg.Timeout < 100*time.Millisecond:
		t.Errorf("consul timeout %s (client %s) below 100ms", v.ConsulTimeout, ccfg.Timeout)
	case v.DeregisterAfter != 0 && v.DeregisterAfter < time.Minute:
		t.Errorf("deregister after %s below Consul's 1m", v.DeregisterAfter)
	case v.Drain < 0 || v.KillTimeout <= 0:
		t.Errorf("drain %s, kill timeout %s", v.Drain, v.KillTimeout)
	}
	for _, a := range ccfg.Addrs {
		if again, err := consulclient.ParseAgentAddr(a); err != nil || again != a {
			t.Errorf("agent address %q not normalized: %q, %v", a, again, err)
		}
		if strings.HasPrefix(a, "unix:///") {
			continue
		}
		_, port, err := net.SplitHostPort(strings.TrimPrefix(a, "https://"))
		if n, _ := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Errorf("agent address %q: no port", a)
		}
	}
}
