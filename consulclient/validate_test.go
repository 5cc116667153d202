package consulclient_test

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/consulclient"
	"github.com/svcwrap/svcwrap/internal/consultest"
)

// idCandidate is a service ID tried against a real agent: accept says whether
// the validators take it; breaks, for a refused one, that the agent really
// cannot register and deregister it (the others are refused by rule: empty,
// white space, or holding "/").
type idCandidate struct {
	id     string
	accept bool
	breaks bool
}

// idCandidates is the list of tricky IDs, each tried against a real agent by
// TestServiceIDs_RealAgent.
var idCandidates = []idCandidate{
	{id: "web", accept: true},
	{id: "web-1.example_2", accept: true},
	{id: "a?b", accept: true},
	{id: "a#b", accept: true},
	{id: "?", accept: true},
	{id: "#", accept: true},
	{id: "a%b", accept: true},
	{id: "%zz", accept: true},
	{id: "a%2Fb", accept: true}, // stays these five characters, not a/b
	{id: "a%41", accept: true},
	{id: "a b", accept: true},
	{id: " lead", accept: true},
	{id: "trail ", accept: true},
	{id: `a\b`, accept: true},
	{id: `a\`, accept: true},
	{id: "a'b;c&d=e+f@g,h$i*j(k)[l]{m}<n>|o^p`q~r!s:t", accept: true},
	{id: "...", accept: true},
	{id: "a.", accept: true},
	{id: ".a", accept: true},
	{id: "a..b", accept: true},
	{id: "ünïcödé", accept: true},
	{id: "日本語", accept: true},
	{id: "🙂", accept: true},
	{id: "a\u0301", accept: true}, // a combining mark is printable
	{id: strings.Repeat("x", 100_000), accept: true},
	// The worst case at the length bound: three-byte runes, percent-encoded
	// to three times the bound in the request line.
	{id: "x" + strings.Repeat("日", consulclient.MaxServiceIDLength/3), accept: true},

	{id: ""},
	{id: " "},
	{id: "\u3000", breaks: true}, // white space, and not printable either
	{id: "a/b"},                  // the agent routes it, but it is no path segment
	{id: "a/"},
	{id: "/a", breaks: true},   // cleaned to .../deregister/a
	{id: "a//b", breaks: true}, // cleaned to a/b
	{id: ".", breaks: true},
	{id: "..", breaks: true},
	{id: "a\tb", breaks: true},
	{id: "a\nb", breaks: true},
	{id: "a\x00b", breaks: true},
	{id: "a\x7fb", breaks: true},
	{id: "a\u00a0b", breaks: true}, // no-break space
	{id: "a\u200db", breaks: true}, // zero-width joiner
	{id: "a\u2028b", breaks: true}, // line separator
	{id: "a\ufeffb", breaks: true}, // byte order mark
	{id: "a\xffb", breaks: true},   // invalid UTF-8: registered as a\ufffdb
	{id: `a"b`, breaks: true},      // the check's look-up filter cannot quote it
	{id: strings.Repeat("x", 2<<20), breaks: true},
}

func TestValidateServiceID(t *testing.T) {
	for _, c := range idCandidates {
		err := consulclient.ValidateServiceID(c.id)
		if c.accept {
			assert.NoError(t, err, "%.40q", c.id)
			continue
		}
		if assert.Error(t, err, "%.40q", c.id) {
			assert.NotContains(t, err.Error(), "\n", "one line")
			assert.Less(t, len(err.Error()), 200, "a long ID is cut short in the message")
		}
	}
}

func TestValidateServiceName(t *testing.T) {
	for _, c := range idCandidates {
		err := consulclient.ValidateServiceName(c.id)
		// A name is not in the check's look-up filter, so a quote is fine.
		want := c.accept || c.id == `a"b`
		assert.Equal(t, want, err == nil, "%.40q: %v", c.id, err)
	}
}

// Every ID the validator accepts is registered, refreshed, found (by ID, by
// its check, and as a service name by the health endpoint) and deregistered
// through the api client, the way consulclient does it; every one refused as
// breaking really fails one of those steps.
func TestServiceIDs_RealAgent(t *testing.T) {
	agent := consultest.StartAgent(t)
	for i, c := range idCandidates {
		if c.id == "" || strings.TrimSpace(c.id) == "" && !c.breaks {
			continue // the agent takes neither as an ID: nothing to learn
		}
		err := roundTrip(agent.Client, c.id, c.id != `a"b`)
		switch {
		case c.accept:
			assert.NoError(t, err, "candidate %d %.40q", i, c.id)
		case c.breaks:
			assert.Error(t, err, "candidate %d %.40q is refused as breaking, but it went through", i, c.id)
		}
		t.Logf("%-44.40q %v", c.id, err)
	}
}

// roundTrip registers id (also as the name when asName) with a TTL check,
// and returns the first step that fails of: look it up, look its check up
// by filter, pass the check, find the name in the health endpoint,
// deregister, see it gone.
func roundTrip(c *api.Client, id string, asName bool) error {
	name := "svc"
	if asName {
		name = id
	}
	checkID := consulclient.CheckID(id)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: name,
		Check: &api.AgentServiceCheck{CheckID: checkID, TTL: "30s", Status: api.HealthCritical},
	})
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	if svc, _, err := c.Agent().Service(id, nil); err != nil || svc.ID != id {
		return fmt.Errorf("look up: %v", err)
	}
	filter := "CheckID == " + strconv.Quote(checkID) // as Client.Holder does
	if checks, err := c.Agent().ChecksWithFilter(filter); err != nil || len(checks) != 1 {
		return fmt.Errorf("look up check: %d checks, %v", len(checks), err)
	}
	if err := c.Agent().UpdateTTL(checkID, "ok", api.HealthPassing); err != nil {
		return fmt.Errorf("update check: %w", err)
	}
	if entries, _, err := c.Health().Service(name, "", false, nil); err != nil || len(entries) != 1 {
		return fmt.Errorf("health of %.20q: %d entries, %v", name, len(entries), err)
	}
	if err := c.Agent().ServiceDeregister(id); err != nil {
		return fmt.Errorf("deregister: %w", err)
	}
	svcs, err := c.Agent().Services()
	if err != nil {
		return err
	}
	if _, ok := svcs[id]; ok {
		return errors.New("still registered after deregistering")
	}
	return nil
}

func pairs(n int) map[string]string {
	m := map[string]string{}
	for i := 0; i < n; i++ {
		m["k"+strconv.Itoa(i)] = "v"
	}
	return m
}

// metaCases are meta maps and whether a real agent takes them.
var metaCases = []struct {
	name    string
	meta    map[string]string
	consul  bool // the agent registers it
	svcwrap bool // ValidateMeta accepts it
}{
	{"none", nil, true, true},
	{"64-pairs", pairs(64), true, true},
	{"65-pairs", pairs(65), false, false},
	{"key-128", map[string]string{strings.Repeat("k", 128): "v"}, true, true},
	{"key-129", map[string]string{strings.Repeat("k", 129): "v"}, false, false},
	{"key-chars", map[string]string{"aZ09_-": "v"}, true, true},
	{"key-dot", map[string]string{"a.b": "v"}, false, false},
	{"key-space", map[string]string{"a b": "v"}, false, false},
	{"key-unicode", map[string]string{"ké": "v"}, false, false},
	{"key-empty", map[string]string{"": "v"}, false, false},
	{"key-consul-", map[string]string{"consul-x": "v"}, false, false},
	// Consul refuses only the lower-case prefix; svcwrap, in any case.
	{"key-Consul-", map[string]string{"Consul-x": "v"}, true, false},
	{"key-CONSUL-", map[string]string{"CONSUL-x": "v"}, true, false},
	{"key-consul", map[string]string{"consul": "v"}, true, true},
	{"value-512", map[string]string{"k": strings.Repeat("v", 512)}, true, true},
	{"value-513", map[string]string{"k": strings.Repeat("v", 513)}, false, false},
	{"value-512-bytes", map[string]string{"k": strings.Repeat("é", 256)}, true, true},
	{"value-514-bytes-257-runes", map[string]string{"k": strings.Repeat("é", 257)}, false, false},
	{"value-empty", map[string]string{"k": ""}, true, true},
	{"value-newline", map[string]string{"k": "a\nb"}, true, true},
}

func TestValidateMeta(t *testing.T) {
	for _, c := range metaCases {
		err := consulclient.ValidateMeta(c.meta)
		assert.Equal(t, c.svcwrap, err == nil, "%s: %v", c.name, err)
		if err != nil {
			assert.NotContains(t, err.Error(), "\n")
		}
	}
}

// Consul's limits, as a real agent applies them: 64 pairs taken, 65 refused
// with a 400, and so on for each case of metaCases.
func TestMetaLimits_RealAgent(t *testing.T) {
	agent := consultest.StartAgent(t)
	for i, c := range metaCases {
		id := fmt.Sprintf("meta-%d", i)
		err := agent.Client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "meta", Meta: c.meta})
		if c.consul {
			if assert.NoError(t, err, c.name) {
				svc, _, err := agent.Client.Agent().Service(id, nil)
				require.NoError(t, err)
				assert.Len(t, svc.Meta, len(c.meta), c.name)
			}
			continue
		}
		var se api.StatusError
		if assert.True(t, errors.As(err, &se), "%s: want a status error, got %v", c.name, err) {
			assert.Equal(t, http.StatusBadRequest, se.Code, c.name)
		}
	}
}

func TestValidateServiceAddress(t *testing.T) {
	good := []string{"", "10.0.0.1", "127.0.0.1", "::1", "2001:db8::1", "::ffff:10.0.0.1",
		"localhost", "web-1.example.com", "a", "1a", "x1.y2", strings.Repeat("a", 63) + ".com",
		strings.Repeat(strings.Repeat("a", 49)+".", 5) + "com"} // 253 characters
	bad := []string{" ", "10.0.0.1:80", "[::1]", "[::1]:80", "fe80::1%eth0", "http://web", "web/x",
		"a b", "web.", ".web", "a..b", "-web", "web-", "we_b", "10.0.0.256", "010.0.0.1", "1.2.3", "12345", "x1.2",
		strings.Repeat("a", 64) + ".com", strings.Repeat(strings.Repeat("a", 49)+".", 5) + "comx",
		"ünï", "a\nb"}
	for _, a := range good {
		assert.NoError(t, consulclient.ValidateServiceAddress(a), "%.40q", a)
	}
	for _, a := range bad {
		err := consulclient.ValidateServiceAddress(a)
		if assert.Error(t, err, "%.40q", a) {
			assert.NotContains(t, err.Error(), "\n")
		}
	}
}

func TestParseAgentAddr(t *testing.T) {
	cases := []struct {
		in, want string // want "": an error
		why      string // in the error
	}{
		{"localhost", "localhost:8500", ""},
		{"localhost:8500", "localhost:8500", ""},
		{"LocalHost:1", "LocalHost:1", ""},
		{"10.0.0.5", "10.0.0.5:8500", ""},
		{"10.0.0.5:9", "10.0.0.5:9", ""},
		{"10.0.0.5:08500", "10.0.0.5:8500", ""},
		{"[::1]:8500", "[::1]:8500", ""},
		{"[::1]", "[::1]:8500", ""},
		{"::1", "[::1]:8500", ""},
		{"2001:db8::1", "[2001:db8::1]:8500", ""},
		{"http://consul.local", "consul.local:8500", ""},
		{"http://consul.local:8600", "consul.local:8600", ""},
		{"http://consul.local:8600/", "consul.local:8600", ""},
		{"HTTP://consul.local", "consul.local:8500", ""},
		{"localhost:8500/", "localhost:8500", ""},
		{"http://[::1]", "[::1]:8500", ""},
		{"https://consul.local", "https://consul.local:8501", ""},
		{"https://consul.local:443", "https://consul.local:443", ""},
		{"https://[2001:db8::1]:8501/", "https://[2001:db8::1]:8501", ""},
		{"unix:///var/run/consul.sock", "unix:///var/run/consul.sock", ""},
		{"UNIX:///tmp/c", "unix:///tmp/c", ""},

		{"", "", "empty"},
		{"http://", "", "empty host"},
		{"http://:8500", "", "empty host"},
		{":8500", "", "empty host"},
		{"localhost:", "", "empty port"},
		{"localhost:0", "", "port 0"},
		{"localhost:65536", "", "port 65536"},
		{"localhost:99999999999999999999", "", "port"},
		{"localhost:http", "", "want host"},
		{"localhost:-1", "", "want host"},
		{"http://localhost/v1", "", "path /v1"},
		{"http://localhost:8500//", "", "path /"},
		{"localhost/x", "", "path /x"},
		{"http://localhost?x=1", "", "query"},
		{"http://localhost:8500/?", "", "query"},
		{"http://localhost#top", "", "fragment"},
		{"http://localhost:8500/#", "", "fragment"},
		{"http://user:pw@localhost", "", "user info"},
		{"user@localhost:8500", "", "user info"},
		{"ftp://localhost", "", "unknown scheme"},
		{"://localhost", "", "unknown scheme"},
		{"tcp://localhost:8500", "", "unknown scheme"},
		{"unix://", "", "unix:///"},
		{"unix:///", "", "unix:///"},
		{"unix://relative/sock", "", "unix:///"},
		{"unix:///tmp/c?x", "", "query"},
		{"local host", "", "white space"},
		{" localhost", "", "white space"},
		{"localhost\n", "", "white space"},
		{"local\x00host", "", "unprintable"},
		{"http://::1", "", "brackets"},
		{"http://::1:8500", "", "brackets"},
		{"https://2001:db8::1", "", "brackets"},
		{"[::1:8500", "", "want host"},
		{"[fe80::1%25eth0]:8500", "", "host"},
		{"10.0.0.256", "", "host"},
		{"web_1:8500", "", "host"},
		{"-web:8500", "", "host"},
		{"ünï:8500", "", "host"},
		{strings.Repeat("a", 64) + ":8500", "", "host"},
	}
	for _, c := range cases {
		got, err := consulclient.ParseAgentAddr(c.in)
		if c.want != "" {
			if assert.NoError(t, err, "%q", c.in) {
				assert.Equal(t, c.want, got, "%q", c.in)
				again, err := consulclient.ParseAgentAddr(got)
				assert.NoError(t, err, "%q normalized", got)
				assert.Equal(t, got, again, "normalizing %q again changes it", got)
			}
			continue
		}
		if assert.Error(t, err, "%q gave %q", c.in, got) {
			assert.Contains(t, err.Error(), c.why, "%q", c.in)
			assert.NotContains(t, err.Error(), "\n")
		}
	}
}
