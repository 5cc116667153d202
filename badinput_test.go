package main

// Bad input, end to end: the svcwrap binary refuses it before it starts
// anything (exit 2, one line on stderr, no command, nothing in Consul); and
// the good input next to each rule works against a real agent.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// badCase is one bad command line: svcwrap ARGS... SERVICE -- MARKER-COMMAND.
type badCase struct {
	args    []string // flags and the service name; the command is added
	env     []string // added to svcwrap's environment
	noAgent bool     // no --consul flag for the test agent
	want    string   // in the error line
}

func metaFlags(n int) []string {
	var args []string
	for i := 0; i < n; i++ {
		args = append(args, "--meta", fmt.Sprintf("k%d=v", i))
	}
	return args
}

func badCases() map[string]badCase {
	long := func(c byte, n int) string { return strings.Repeat(string(c), n) }
	return map[string]badCase{
		// Service names and IDs the agent's HTTP paths cannot hold.
		"name-empty":            {args: []string{""}, want: "empty service name"},
		"name-white-space":      {args: []string{" \t"}, want: `service name " \t": only white space`},
		"name-slash":            {args: []string{"a/b"}, want: `service name "a/b": contains "/"`},
		"name-dot":              {args: []string{"."}, want: `service name "."`},
		"name-dot-dot":          {args: []string{".."}, want: `service name ".."`},
		"name-newline":          {args: []string{"a\nb"}, want: "U+000A"},
		"name-tab":              {args: []string{"a\tb"}, want: "U+0009"},
		"name-del":              {args: []string{"a\x7fb"}, want: "U+007F"},
		"name-no-break-space":   {args: []string{"a\u00a0b"}, want: "U+00A0"},
		"name-invalid-utf8":     {args: []string{"a\xffb"}, want: "not valid UTF-8"},
		"id-empty":              {args: []string{"--id", "", "web"}, want: "--id: empty service ID"},
		"id-white-space":        {args: []string{"--id", "   ", "web"}, want: "only white space"},
		"id-ideographic-space":  {args: []string{"--id", "\u3000", "web"}, want: "only white space"},
		"id-slash":              {args: []string{"--id", "web/1", "web"}, want: `contains "/"`},
		"id-leading-slash":      {args: []string{"--id", "/web", "web"}, want: `contains "/"`},
		"id-trailing-slash":     {args: []string{"--id", "web/", "web"}, want: `contains "/"`},
		"id-dot":                {args: []string{"--id", ".", "web"}, want: `service ID "."`},
		"id-dot-dot":            {args: []string{"--id", "..", "web"}, want: `service ID ".."`},
		"id-newline":            {args: []string{"--id", "web\n", "web"}, want: "U+000A"},
		"id-carriage-return":    {args: []string{"--id", "web\r", "web"}, want: "U+000D"},
		"id-escape":             {args: []string{"--id", "web\x1b[31m", "web"}, want: "U+001B"},
		"id-zero-width-joiner":  {args: []string{"--id", "a\u200db", "web"}, want: "U+200D"},
		"id-line-separator":     {args: []string{"--id", "a\u2028b", "web"}, want: "U+2028"},
		"id-byte-order-mark":    {args: []string{"--id", "\ufeffweb", "web"}, want: "U+FEFF"},
		"id-invalid-utf8":       {args: []string{"--id", "web\xc3", "web"}, want: "not valid UTF-8"},
		"id-double-quote":       {args: []string{"--id", `we"b`, "web"}, want: "filter"},
		"id-from-env":           {args: []string{"web"}, env: []string{"SVCWRAP_ID=a/b"}, want: `contains "/"`},
		"name-and-id-from-args": {args: []string{"--id", "ok", ".."}, want: `service name ".."`},

		// Meta, as Consul takes it, with svcwrap's own key counted.
		"meta-64-pairs":          {args: append(metaFlags(64), "web"), want: "64 pairs, at most 63"},
		"meta-svcwrap-instance":  {args: []string{"--meta", "svcwrap_instance=me/1/2", "web"}, want: "svcwrap_instance is svcwrap's own"},
		"meta-key-129":           {args: []string{"--meta", long('k', 129) + "=v", "web"}, want: "129 characters, at most 128"},
		"meta-key-dot":           {args: []string{"--meta", "a.b=v", "web"}, want: "only A-Z"},
		"meta-key-space":         {args: []string{"--meta", "a b=v", "web"}, want: "only A-Z"},
		"meta-key-unicode":       {args: []string{"--meta", "ké=v", "web"}, want: "only A-Z"},
		"meta-key-consul-":       {args: []string{"--meta", "consul-version=1", "web"}, want: "reserved"},
		"meta-key-Consul-":       {args: []string{"--meta", "Consul-Version=1", "web"}, want: "reserved"},
		"meta-value-513":         {args: []string{"--meta", "k=" + long('v', 513), "web"}, want: "513 bytes, at most 512"},
		"meta-value-514-bytes":   {args: []string{"--meta", "k=" + strings.Repeat("é", 257), "web"}, want: "514 bytes"},
		"meta-empty-key":         {args: []string{"--meta", "=v", "web"}, want: "want key=value"},
		"meta-key-given-twice":   {args: []string{"--meta", "a=1", "--meta", "a=2", "web"}, want: "given twice"},
		"meta-from-env":          {args: []string{"web"}, env: []string{"SVCWRAP_META=a.b=1"}, want: "only A-Z"},
		"tag-empty":              {args: []string{"--tag", " ", "web"}, want: "empty tag"},
		"address-url":            {args: []string{"--address", "http://10.0.0.1", "web"}, want: "want an IP address or a host name"},
		"address-host-port":      {args: []string{"--address", "10.0.0.1:80", "web"}, want: "want an IP address or a host name"},
		"address-v6-brackets":    {args: []string{"--address", "[::1]", "web"}, want: "want an IP address or a host name"},
		"address-v6-zone":        {args: []string{"--address", "fe80::1%eth0", "web"}, want: "zone"},
		"address-space":          {args: []string{"--address", "web host", "web"}, want: "want an IP address or a host name"},
		"address-bad-ip":         {args: []string{"--address", "10.0.0.256", "web"}, want: "want an IP address or a host name"},
		"address-underscore":     {args: []string{"--address", "web_1.local", "web"}, want: "want an IP address or a host name"},
		"address-long-label":     {args: []string{"--address", long('a', 64) + ".local", "web"}, want: "want an IP address or a host name"},
		"address-254-characters": {args: []string{"--address", strings.Repeat(long('a', 50)+".", 5) + "com", "web"}, want: "want an IP address or a host name"},

		// Agent addresses: --consul, --consul-agent, CONSUL_HTTP_ADDR.
		"consul-path":             {args: []string{"--consul", "http://127.0.0.1:1/v1", "web"}, want: "path /v1"},
		"consul-query":            {args: []string{"--consul", "http://127.0.0.1:1?dc=x", "web"}, want: "query"},
		"consul-fragment":         {args: []string{"--consul", "http://127.0.0.1:1#x", "web"}, want: "fragment"},
		"consul-user-info":        {args: []string{"--consul", "http://me:pw@127.0.0.1:1", "web"}, want: "user info"},
		"consul-unknown-scheme":   {args: []string{"--consul", "tcp://127.0.0.1:1", "web"}, want: `unknown scheme "tcp"`},
		"consul-empty-host":       {args: []string{"--consul", "http://:1", "web"}, want: "empty host"},
		"consul-empty-port":       {args: []string{"--consul", "127.0.0.1:", "web"}, want: "empty port"},
		"consul-port-zero":        {args: []string{"--consul", "127.0.0.1:0", "web"}, want: "port 0"},
		"consul-port-too-big":     {args: []string{"--consul", "127.0.0.1:65536", "web"}, want: "port 65536"},
		"consul-port-not-number":  {args: []string{"--consul", "127.0.0.1:http", "web"}, want: "want host"},
		"consul-v6-no-brackets":   {args: []string{"--consul", "http://::1:8500", "web"}, want: "brackets"},
		"consul-bad-host":         {args: []string{"--consul", "127.0.0.1_x:1", "web"}, want: "host"},
		"consul-unix-relative":    {args: []string{"--consul", "unix://consul.sock", "web"}, want: "unix:///"},
		"consul-second-of-list":   {args: []string{"--consul", "127.0.0.1:1,ftp://127.0.0.1", "web"}, want: "unknown scheme"},
		"consul-agent-flag":       {args: []string{"--consul-agent", "https://127.0.0.1:1/x", "web"}, want: "path /x"},
		"consul-empty-list":       {args: []string{"--consul", "", "web"}, noAgent: true, want: "no agent address"},
		"consul-http-addr-env":    {args: []string{"web"}, env: []string{"CONSUL_HTTP_ADDR=http://127.0.0.1:1/ui"}, noAgent: true, want: "CONSUL_HTTP_ADDR"},
		"consul-http-addr-scheme": {args: []string{"web"}, env: []string{"CONSUL_HTTP_ADDR=consul://127.0.0.1"}, noAgent: true, want: "unknown scheme"},
		"svcwrap-consul-env":      {args: []string{"web"}, env: []string{"SVCWRAP_CONSUL=127.0.0.1:99999"}, noAgent: true, want: "port 99999"},

		// Timing floors of the command line.
		"ttl-below-1s":              {args: []string{"--ttl", "999ms", "web"}, want: "--ttl 999ms: below the minimum of 1s"},
		"ttl-seconds-below-1s":      {args: []string{"--ttl", "0.5", "web"}, want: "--ttl 500ms: below the minimum of 1s"},
		"ttl-1ms":                   {args: []string{"--ttl", "1ms", "web"}, want: "--ttl 1ms: below the minimum of 1s"},
		"ttl-from-env":              {args: []string{"web"}, env: []string{"SVCWRAP_TTL=1ms"}, want: "--ttl 1ms: below the minimum of 1s"},
		"ttl-nan":                   {args: []string{"--ttl", "NaN", "web"}, want: "--ttl"},
		"ttl-infinite":              {args: []string{"--ttl", "Inf", "web"}, want: "--ttl"},
		"ttl-overflow":              {args: []string{"--ttl", "1e300", "web"}, want: "--ttl"},
		"heartbeat-below-100ms":     {args: []string{"--heartbeat", "99ms", "web"}, want: "--heartbeat 99ms: below the minimum of 100ms"},
		"heartbeat-ge-ttl":          {args: []string{"--ttl", "1", "--heartbeat", "1s", "web"}, want: "shorter than ttl"},
		"check-interval-below":      {args: []string{"--check-interval", "9ms", "web"}, want: "--check-interval 9ms: below the minimum of 10ms"},
		"check-interval-zero":       {args: []string{"--check-interval", "0", "web"}, want: "must be positive"},
		"consul-timeout-below":      {args: []string{"--consul-timeout", "99ms", "web"}, want: "--consul-timeout 99ms: below the minimum of 100ms"},
		"consul-timeout-zero":       {args: []string{"--consul-timeout", "0s", "web"}, want: "must be positive"},
		"consul-timeout-negative":   {args: []string{"--consul-timeout", "-1s", "web"}, want: "must be positive"},
		"deregister-after-negative": {args: []string{"--deregister-after", "-1", "web"}, want: "must not be negative"},
		"ttl-negative":              {args: []string{"--ttl", "-5", "web"}, want: "ttl -5s: must be positive"},
		"heartbeat-negative":        {args: []string{"--heartbeat", "-1s", "web"}, want: "heartbeat -1s: must be positive"},
		"kill-timeout-zero":         {args: []string{"--kill-timeout", "0", "web"}, want: "--kill-timeout 0s: must be positive"},
		"kill-timeout-negative":     {args: []string{"--kill-timeout", "-1s", "web"}, want: "kill timeout -1s: must be positive"},
		"drain-negative":            {args: []string{"--drain", "-1s", "web"}, want: "drain -1s: must not be negative"},

		"token-file-unreadable": {args: []string{"--token-file", "/nonexistent/token", "web"}, want: "read token file: open /nonexistent/token"},

		// Checks: --check, its timings and thresholds.
		"check-unknown-kind":    {args: []string{"--check", "grpc:127.0.0.1:1", "web"}, want: `unknown kind "grpc"`},
		"check-no-kind":         {args: []string{"--check", "127.0.0.1", "web"}, want: "want http:URL, tcp:HOST:PORT or script:COMMAND"},
		"check-http-scheme":     {args: []string{"--check", "http:ftp://127.0.0.1/", "web"}, want: `scheme "ftp"`},
		"check-http-no-host":    {args: []string{"--check", "http:http:///health", "web"}, want: "no host"},
		"check-http-port":       {args: []string{"--check", "http://127.0.0.1:70000/", "web"}, want: "want 1-65535"},
		"check-tcp-no-port":     {args: []string{"--check", "tcp:127.0.0.1", "web"}, want: "want tcp:HOST:PORT"},
		"check-tcp-port-zero":   {args: []string{"--check", "tcp:127.0.0.1:0", "web"}, want: "want 1-65535"},
		"check-script-empty":    {args: []string{"--check", "script: ", "web"}, want: "empty command"},
		"check-second-bad":      {args: []string{"--check", "tcp:127.0.0.1:1", "--check", "udp:x:1", "web"}, want: `unknown kind "udp"`},
		"check-from-env":        {args: []string{"web"}, env: []string{"SVCWRAP_CHECK=tcp:127.0.0.1:1,tcp:nowhere"}, want: "want tcp:HOST:PORT"},
		"check-timeout-below":   {args: []string{"--check-timeout", "9ms", "web"}, want: "--check-timeout 9ms: below the minimum of 10ms"},
		"check-timeout-zero":    {args: []string{"--check-timeout", "0", "web"}, want: "must be positive"},
		"interval-below":        {args: []string{"--interval", "0.001", "web"}, want: "--interval 1ms: below the minimum of 10ms"},
		"grace-negative":        {args: []string{"--grace", "-1s", "web"}, want: "grace -1s: must not be negative"},
		"grace-not-duration":    {args: []string{"--grace", "soon", "web"}, want: "--grace"},
		"fail-after-zero":       {args: []string{"--fail-after", "0", "web"}, want: "--fail-after 0: want at least 1"},
		"pass-after-negative":   {args: []string{"--pass-after", "-2", "web"}, want: "--pass-after -2: want at least 1"},
		"fail-after-not-number": {args: []string{"--fail-after", "three", "web"}, want: "--fail-after"},

		// An error that would span lines is kept on one.
		"unknown-flag-newline": {args: []string{"--fro\nbnicate", "web"}, want: `unknown flag: --fro\nbnicate`},
	}
}

// Every bad input of badCases: exit 2, exactly one line on stderr, starting
// "svcwrap: " and saying why, the command never started, nothing registered.
func TestBadInput_Refused(t *testing.T) {
	agent := consultest.StartAgent(t)
	for name, c := range badCases() {
		t.Run(name, func(t *testing.T) {
			argv, ran := neverStarted(t)
			args := append(append([]string{}, c.args...), "--")
			args = append(args, argv...)
			if !c.noAgent {
				args = append([]string{"--consul", agent.HTTPAddr}, args...)
			}
			code, stderr := runEnv(t, c.env, args...)
			assert.Equal(t, 2, code, "stderr: %q", stderr)
			assert.True(t, strings.HasSuffix(stderr, "\n"), "%q", stderr)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			assert.Len(t, lines, 1, "one line on stderr: %q", stderr)
			assert.True(t, strings.HasPrefix(stderr, "svcwrap: "), "%q", stderr)
			assert.Contains(t, stderr, c.want)
			assert.False(t, ran(), "the command must not start")
			noServices(t, agent.Client)
		})
	}
}

// cleanEnv is the test's environment without what would steer svcwrap: its
// own SVCWRAP_* variables and the consul CLI's.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "SVCWRAP_") || strings.HasPrefix(kv, "CONSUL_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// runEnv runs svcwrap with args in cleanEnv(env...) and returns its exit
// code and stderr.
func runEnv(t *testing.T, env []string, args ...string) (code int, stderr string) {
	t.Helper()
	cmd := exec.Command(svcwrapBin, args...)
	cmd.Env = cleanEnv(env...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return exitCode(err), errb.String()
	case <-time.After(wait):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("svcwrap %q did not exit", args)
		return 0, ""
	}
}

// The edges of the rules are good input: 63 meta pairs of the longest keys
// and values (64 with svcwrap's own), tricky but valid IDs, the floors
// themselves. Each registers on a real agent and is deregistered at exit.
func TestBadInput_EdgesAccepted(t *testing.T) {
	agent := consultest.StartAgent(t)
	var meta []string
	for i := 0; i < 63; i++ {
		key := fmt.Sprintf("%03d", i) + strings.Repeat("k", 125)
		meta = append(meta, "--meta", key+"="+strings.Repeat("é", 256))
	}
	cases := []struct {
		name string
		args []string
		id   string
	}{
		{"63-meta-pairs", append(meta, "meta63"), "meta63"},
		{"tricky-id", []string{"--id", "a?b#c%d e\\f...ünï", "web"}, "a?b#c%d e\\f...ünï"},
		{"floors", []string{"--ttl", "1s", "--heartbeat", "100ms", "--check-interval", "10ms", "--consul-timeout", "100ms", "floors"}, "floors"},
		{"address-names", []string{"--address", "web-1.example.com", "--id", "addr", "web"}, "addr"},
		{"check-floors", []string{"--check", "script:exit 0", "--interval", "0.01", "--check-timeout", "10ms", "--fail-after", "1", "--pass-after", "1", "--grace", "0", "checks"}, "checks"},
		{"address-v6", []string{"--address", "2001:db8::1", "--id", "addr6", "web"}, "addr6"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"--consul", agent.HTTPAddr}, c.args...)
			w := start(t, nil, append(args, "--", "sleep", "1000")...)
			consultest.WaitServiceStatus(t, agent.Client, c.id, api.HealthPassing, wait)
			svc, _, err := agent.Client.Agent().Service(c.id, nil)
			require.NoError(t, err)
			if c.name == "63-meta-pairs" {
				assert.Len(t, svc.Meta, 64, "63 of the user's and svcwrap_instance")
				assert.Contains(t, svc.Meta, "svcwrap_instance")
			}
			w.signal(syscall.SIGTERM)
			assert.Equal(t, 128+int(syscall.SIGTERM), w.wait(wait), "stderr: %s", w.errOut)
			consultest.WaitServiceGone(t, agent.Client, c.id, wait)
		})
	}
}

// A host without a port means 8500, as it did for ianitor: --consul-agent
// HOST and CONSUL_HTTP_ADDR=HOST reach an agent on HOST:8500 (a one-server
// cluster, which has Consul's default ports on an address of its own).
func TestConsulAgent_DefaultPort(t *testing.T) {
	cluster := consultest.StartCluster(t, 1, 0)
	agent := cluster.Server(0)
	host, port, err := net.SplitHostPort(agent.HTTPAddr)
	require.NoError(t, err)
	require.Equal(t, "8500", port)
	for _, c := range []struct {
		name string
		args []string
		env  []string
	}{
		{"consul-agent-flag", []string{"--consul-agent", host}, nil},
		{"consul-flag", []string{"--consul", host}, nil},
		{"http-url", []string{"--consul", "http://" + host + "/"}, nil},
		{"consul-http-addr", nil, []string{"CONSUL_HTTP_ADDR=" + host}},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := "noport-" + c.name
			for _, kv := range c.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			args := append(append([]string{}, c.args...), "--id", id, "noport", "--", "sleep", "1000")
			w := start(t, nil, args...)
			consultest.WaitServiceStatus(t, agent.Client, id, api.HealthPassing, wait)
			w.signal(syscall.SIGTERM)
			w.wait(wait)
			consultest.WaitServiceGone(t, agent.Client, id, wait)
		})
	}
}

// The command's environment holds the ACL token's variables only with
// --pass-token (or SVCWRAP_PASS_TOKEN).
func TestPassToken(t *testing.T) {
	agent := consultest.StartAgent(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("file-token-4d1f\n"), 0o600))
	t.Setenv("CONSUL_HTTP_TOKEN", "env-token-9a2c")
	t.Setenv("CONSUL_HTTP_TOKEN_FILE", tokenFile)
	t.Setenv("SVCWRAP_TOKEN_FILE", tokenFile)
	names := []string{"CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "SVCWRAP_TOKEN_FILE"}
	passed := []string{
		"env CONSUL_HTTP_TOKEN=env-token-9a2c",
		"env CONSUL_HTTP_TOKEN_FILE=" + tokenFile,
		"env SVCWRAP_TOKEN_FILE=" + tokenFile,
	}
	removed := []string{"env CONSUL_HTTP_TOKEN unset", "env CONSUL_HTTP_TOKEN_FILE unset", "env SVCWRAP_TOKEN_FILE unset"}
	for _, c := range []struct {
		name string
		flag []string
		env  string
		want []string
	}{
		{"default", nil, "", removed},
		{"flag", []string{"--pass-token"}, "", passed},
		{"flag-false", []string{"--pass-token=false"}, "", removed},
		{"env", nil, "true", passed},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.env != "" {
				t.Setenv("SVCWRAP_PASS_TOKEN", c.env)
			}
			id := "token-" + c.name
			args := append(append([]string{}, c.flag...), "--id", id, "tok", "--")
			w := start(t, agent, append(args, helperArgv("env", names...)...)...)
			assert.Equal(t, 0, w.wait(wait), "stderr: %s", w.errOut)
			w.out.waitEOF(t, wait)
			var got []string
			for _, l := range strings.Split(w.out.String(), "\n") {
				if strings.HasPrefix(l, "env ") {
					got = append(got, l)
				}
			}
			assert.Equal(t, c.want, got)
			consultest.WaitServiceGone(t, agent.Client, id, wait)
		})
	}
}
