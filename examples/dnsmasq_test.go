package examples_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

// dnsmasqConf is the example drop-in, and the one line of it the test
// changes: the agent's DNS port.
const (
	dnsmasqConf   = "dnsmasq/consul.conf"
	dnsmasqServer = "server=/consul/127.0.0.1#8600"
)

// A real dnsmasq on a loopback port, with the example's configuration,
// answers web.service.consul (A and SRV) from the agent while svcwrap keeps
// web registered, and stops answering the moment web exits: dnsmasq serves
// nothing from its cache that the agent no longer has.
func TestDnsmasq_ForwardsTheConsulDomain(t *testing.T) {
	t.Parallel()
	need(t, "dig")
	agent := consultest.StartAgent(t)
	dns := startDnsmasq(t, agent.DNSPort)

	port := freePort(t)
	rep := report(filepath.Join(t.TempDir(), "web.report"))
	svcwrap := startProcess(t, append([]string{svcwrapBin, "--consul", agent.HTTPAddr, "--port", strconv.Itoa(port), "web", "--"},
		webArgv("-listen", loopback(port), "-report", string(rep))...), childEnv())
	consultest.WaitServiceStatus(t, agent.Client, "web", api.HealthPassing, wait)

	// Through dnsmasq: the agent's node address, and web's port.
	a := dns.lookup(t, "web.service.consul", "A")
	assert.Equal(t, []string{"127.0.0.1"}, a.answers, "A through dnsmasq:\n%s", a.full)
	srv := dns.lookup(t, "web.service.consul", "SRV")
	require.Len(t, srv.answers, 1, "one SRV answer through dnsmasq:\n%s", srv.full)
	fields := strings.Fields(srv.answers[0]) // priority weight port target
	require.Len(t, fields, 4, "SRV answer %q", srv.answers[0])
	assert.Equal(t, strconv.Itoa(port), fields[2], "SRV port")
	assert.True(t, strings.HasSuffix(fields[3], ".consul."), "SRV target %q is a consul name", fields[3])

	// web exits by itself (SIGUSR2 reaches it through svcwrap): svcwrap
	// deregisters and exits with web's 0.
	svcwrap.signal(t, syscall.SIGUSR2)
	rep.waitFor(t, "exit 0")
	assert.Equal(t, 0, svcwrap.wait(t), "svcwrap's output:\n%s", svcwrap.out)
	consultest.WaitServiceGone(t, agent.Client, "web", wait)

	// Once the agent's own DNS has no web, neither has dnsmasq: at once, not
	// after a cached answer expires.
	direct := resolver{addr: loopback(agent.DNSPort)}
	consultest.Eventually(t, wait, func() (bool, string) {
		r := direct.lookup(t, "web.service.consul", "A")
		return len(r.answers) == 0, r.full
	}, "the agent's DNS to drop web")
	for _, qtype := range []string{"A", "SRV"} {
		r := dns.lookup(t, "web.service.consul", qtype)
		assert.Empty(t, r.answers, "%s through dnsmasq after web exited:\n%s", qtype, r.full)
		assert.Equal(t, "NXDOMAIN", r.status, "%s through dnsmasq after web exited:\n%s", qtype, r.full)
	}
}

// resolver is a DNS server the test asks with dig.
type resolver struct{ addr string }

// answer is what dig said: the status (NOERROR, NXDOMAIN...), the answer
// section's data, and the whole output for messages.
type answer struct {
	status  string
	answers []string
	full    string
}

// lookup asks r for name's qtype records, once, with a short timeout.
func (r resolver) lookup(t *testing.T, name, qtype string) answer {
	t.Helper()
	host, port, err := net.SplitHostPort(r.addr)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dig", "@"+host, "-p", port, "+time=1", "+tries=1",
		"+noall", "+comments", "+answer", name, qtype).CombinedOutput()
	res := answer{full: string(out)}
	if err != nil {
		res.status = "no answer: " + err.Error()
		return res
	}
	for _, line := range strings.Split(string(out), "\n") {
		if _, rest, ok := strings.Cut(line, "status: "); ok {
			res.status, _, _ = strings.Cut(rest, ",")
			continue
		}
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		// name TTL class type data...
		if f := strings.Fields(line); len(f) >= 5 && f[3] == qtype {
			res.answers = append(res.answers, strings.Join(f[4:], " "))
		}
	}
	return res
}

// startDnsmasq runs dnsmasq in the foreground on a free loopback port with
// the example's configuration, its agent port changed to dnsPort, and waits
// until it answers. The flags are what a system dnsmasq has in its own
// configuration: where to listen, no upstream resolvers, no /etc/hosts.
func startDnsmasq(t *testing.T, dnsPort int) resolver {
	t.Helper()
	bin := dnsmasqBinary(t)
	dir := t.TempDir()
	example, err := os.ReadFile(dnsmasqConf)
	require.NoError(t, err)
	require.Equal(t, 1, strings.Count(string(example), dnsmasqServer), "%s forwards consul with %q", dnsmasqConf, dnsmasqServer)
	conf := filepath.Join(dir, "consul.conf")
	local := strings.Replace(string(example), dnsmasqServer, fmt.Sprintf("server=/consul/127.0.0.1#%d", dnsPort), 1)
	require.NoError(t, os.WriteFile(conf, []byte(local), 0o644))

	port := freeDNSPort(t)
	argv := []string{bin, "--keep-in-foreground", "--log-facility=-", "--conf-file=" + conf,
		"--pid-file=" + filepath.Join(dir, "dnsmasq.pid"), "--no-resolv", "--no-hosts",
		"--bind-interfaces", "--listen-address=127.0.0.1", "--port=" + strconv.Itoa(port)}
	// SIGTERM if the test binary dies: dnsmasq then removes its pid file.
	p := startProcess(t, argv, childEnv(), syscall.SIGTERM)
	t.Cleanup(func() {
		if !p.exited() {
			p.signal(t, syscall.SIGTERM)
			p.wait(t)
		}
	})
	r := resolver{addr: loopback(port)}
	consultest.Eventually(t, wait, func() (bool, string) {
		if p.exited() {
			t.Fatalf("dnsmasq exited:\n%s", p.out)
		}
		res := r.lookup(t, "consul", "SOA")
		return res.status == "NOERROR" || res.status == "NXDOMAIN", res.full + "\n" + p.out.String()
	}, "dnsmasq to answer for the consul domain")
	return r
}

// dnsmasqBinary is Debian's dnsmasq (package dnsmasq-base), in /usr/sbin,
// which is not on every user's PATH.
func dnsmasqBinary(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("dnsmasq"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/dnsmasq"); err == nil {
		return "/usr/sbin/dnsmasq"
	}
	t.Fatalf("dnsmasq not found: run `make deps` (scripts/deps.sh installs dnsmasq-base)")
	return ""
}

// freeDNSPort returns a loopback port free for both UDP and TCP, as dnsmasq
// listens on both.
func freeDNSPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		port := freePort(t)
		c, err := net.ListenPacket("udp", loopback(port))
		if err == nil {
			c.Close()
			return port
		}
	}
	t.Fatal("no loopback port free for both TCP and UDP")
	return 0
}
