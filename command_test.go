package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/internal/consultest"
)

func TestBuildVersion(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for _, c := range []struct {
		name    string
		stamped string
		info    *debug.BuildInfo
		want    string
	}{
		{"stamped-wins", "v1.2.0-3-gabc", &debug.BuildInfo{Main: debug.Module{Version: "v1.1.0"}}, "v1.2.0-3-gabc"},
		{"go-install-module-version", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.1.0"}, Settings: vcs("false")}, "v1.1.0"},
		{"vcs-revision", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("false")}, rev[:12]},
		{"vcs-revision-dirty", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")}, rev[:12] + "-dirty"},
		{"buildvcs-false", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "dev"},
		{"no-build-info", "", nil, "dev"},
	} {
		t.Run(c.name, func(t *testing.T) {
			old := version
			version = c.stamped
			defer func() { version = old }()
			assert.Equal(t, c.want, buildVersion(c.info, c.info != nil))
		})
	}
}

// A build that records its VCS revision (-buildvcs=true, against the
// machine's GOFLAGS) and is not stamped names that revision: Go turns it
// into the module's pseudo-version (v0.0.0-DATE-REV12, +dirty).
func TestVersion_FromBuildInfo(t *testing.T) {
	need(t, "git")
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatalf("git rev-parse HEAD: %v: the test needs the source tree as a git checkout", err)
	}
	bin := filepath.Join(t.TempDir(), "svcwrap")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)
	got, err := exec.Command(bin, "--version").Output()
	require.NoError(t, err)
	assert.Regexp(t, `^svcwrap version \S*`+string(head[:12])+`\S*\n$`, string(got))
}

// Every word before -- is a service name, also those of cobra's built-in
// commands: `svcwrap completion -- true` and `svcwrap help -- true` run true
// as the service "completion" or "help", and print nothing of their own.
func TestServiceNamedLikeACommand(t *testing.T) {
	agent := consultest.StartAgent(t)
	t.Setenv("CONSUL_HTTP_ADDR", agent.HTTPAddr) // no flag before the name
	for _, name := range []string{"completion", "help", "__complete", "__completeNoDesc", "version"} {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(svcwrapBin, name, "--", "true")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			require.NoError(t, cmd.Run(), "stderr: %s", &stderr)
			assert.Empty(t, stdout.String(), "true prints nothing, and svcwrap nothing of its own")
			assert.Empty(t, stderr.String())

			w := start(t, nil, name, "--", "sleep", "1000")
			consultest.WaitServiceStatus(t, agent.Client, name, api.HealthPassing, wait)
			svc, _, err := agent.Client.Agent().Service(name, nil)
			require.NoError(t, err)
			assert.Equal(t, name, svc.Service)
			w.signal(syscall.SIGTERM)
			w.wait(wait)
			consultest.WaitServiceGone(t, agent.Client, name, wait)
		})
	}
}

// Without --, whatever flags the command has, svcwrap says what is missing
// in its own words: one line, exit 2, nothing started.
func TestMissingDash(t *testing.T) {
	argv, ran := neverStarted(t)
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"nc":              {[]string{"web", "nc", "-l", "9999"}, "want svcwrap [flags] web -- nc -l 9999"},
		"long-flag":       {[]string{"web", "curl", "--fail", "http://x"}, "want svcwrap [flags] web -- curl --fail http://x"},
		"svcwrap-flags":   {[]string{"--port", "80", "-vv", "nginx", "nginx", "-g", "daemon off;"}, "want svcwrap [flags] nginx -- nginx -g daemon off;"},
		"flag-like-ours":  {[]string{"web", "web", "--port", "8080", "-v"}, "want svcwrap [flags] web -- web --port 8080 -v"},
		"never-started":   {append([]string{"web"}, argv...), "missing -- between the service name and the command"},
		"service-only":    {[]string{"web"}, "missing -- and the command after the service name"},
		"help-after-name": {[]string{"web", "ls", "--help"}, "want svcwrap [flags] web -- ls --help"},
		"rsync-own-dash":  {[]string{"web", "rsync", "-a", "--", "src", "dst"}, "want svcwrap [flags] web -- rsync -a -- src dst"},
		"sh-own-dash":     {[]string{"web", "sh", "-c", "exec sleep 9", "--", "x"}, "want svcwrap [flags] web -- sh -c exec sleep 9 -- x"},
		"flags-after":     {[]string{"web", "--ttl", "5", "nc", "-l", "--", "9999"}, "want svcwrap [flags] web -- nc -l -- 9999"},
	} {
		t.Run(name, func(t *testing.T) {
			code, stderr := runOnce(t, append([]string{"--consul", "127.0.0.1:1"}, c.args...)...)
			assert.Equal(t, 2, code, "stderr: %s", stderr)
			assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
			assert.True(t, strings.HasPrefix(stderr, "svcwrap: "), "%q", stderr)
			assert.Contains(t, stderr, c.want)
			assert.NotContains(t, stderr, "unknown")
			assert.False(t, ran())
		})
	}
	// A flag of svcwrap's own that does not exist, before the name, is still
	// a typo in svcwrap's flags.
	code, stderr := runOnce(t, "--prot", "80", "web", "nc", "-l", "80")
	assert.Equal(t, 2, code)
	assert.Equal(t, "svcwrap: unknown flag: --prot\n", stderr)

	// A service name cannot begin with "-": it reads as a flag, and is
	// refused as one in a line that says so.
	code, stderr = runOnce(t, "--consul", "127.0.0.1:1", "-web", "--", "true")
	assert.Equal(t, 2, code)
	assert.Equal(t, "svcwrap: -web before --: not a flag of svcwrap's, and a service name cannot begin with \"-\"\n", stderr)
}

// --completion SHELL prints cobra's script, its one completion request
// changed to a word no service name can be; the bash one completes svcwrap's
// flags and their values in a real bash with bash-completion.
func TestCompletion(t *testing.T) {
	for _, shell := range completionShells {
		t.Run(shell, func(t *testing.T) {
			out, err := exec.Command(svcwrapBin, "--completion", shell).Output()
			require.NoError(t, err)
			script := string(out)
			assert.Contains(t, script, "svcwrap")
			assert.Equal(t, 1, strings.Count(script, " "+completeRequest+" "), "the request word, once")
			assert.NotContains(t, script, " __complete ")
		})
	}
	code, stderr := runOnce(t, "--completion", "tcsh")
	assert.Equal(t, 2, code)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), "%q", stderr)

	// What the scripts ask, answered: flags, and the values of a fixed set.
	out, err := exec.Command(svcwrapBin, completeRequest, "--dereg").Output()
	require.NoError(t, err)
	assert.Contains(t, string(out), "--deregister\t")
	out, err = exec.Command(svcwrapBin, completeRequest, "--deregister", "").Output()
	require.NoError(t, err)
	assert.Equal(t, "on-exit\non-success\nnever\n:4\n", string(out))

	t.Run("bash-for-real", func(t *testing.T) {
		need(t, "bash")
		const bashCompletion = "/usr/share/bash-completion/bash_completion"
		if _, err := os.Stat(bashCompletion); err != nil {
			t.Fatalf("%s: %v: run `make deps` (scripts/deps.sh installs bash-completion)", bashCompletion, err)
		}
		script := filepath.Join(t.TempDir(), "svcwrap.bash")
		out, err := exec.Command(svcwrapBin, "--completion", "bash").Output()
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(script, out, 0o644))
		complete := func(words ...string) string {
			t.Helper()
			line := strings.Join(append([]string{svcwrapBin}, words...), " ")
			prog := `source "$1"; source "$2"; shift 2
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
__start_svcwrap 2>/dev/null; printf '%s\n' "${COMPREPLY[@]}"`
			cmd := exec.Command("bash", append([]string{"-c", prog, "bash", bashCompletion, script, svcwrapBin}, words...)...)
			cmd.Stderr = io.Discard
			got, err := cmd.Output()
			require.NoError(t, err, "completing %q", line)
			return string(got)
		}
		assert.Equal(t, "--port\n", complete("--po"))
		assert.Equal(t, "auto\nalways\nnever\n", complete("--reap", ""))
		assert.Equal(t, "json\n", complete("--log-format", "j"))
	})
}

// Where the command begins, for every shape of line: flags before and after
// SERVICE are svcwrap's (ianitor's argparse took both); after SERVICE, the
// first word that is neither a flag, nor a flag's value, nor -- is the
// command's, so the -- is missing, and a -- further on is the command's own.
func TestParse_WhereTheCommandBegins(t *testing.T) {
	for _, c := range []struct {
		name    string
		args    []string
		command []string // the command run; nil: refused
		hint    string   // in the refusal
	}{
		{"dash", []string{"web", "--", "nc", "-l", "9999"}, []string{"nc", "-l", "9999"}, ""},
		{"flags-before", []string{"--port", "80", "-vv", "web", "--", "nginx"}, []string{"nginx"}, ""},
		{"flags-after-name", []string{"web", "--ttl", "5", "--tags", "x", "--", "true"}, []string{"true"}, ""},
		{"equals-after-name", []string{"web", "--ttl=5", "-v", "--", "true"}, []string{"true"}, ""},
		{"bool-after-name", []string{"web", "--keep-child", "--", "true"}, []string{"true"}, ""},
		{"bool-false-after-name", []string{"web", "--keep-child=false", "--", "true"}, []string{"true"}, ""},
		{"count-after-name", []string{"web", "-vvv", "--", "true"}, []string{"true"}, ""},
		{"value-looks-like-a-name", []string{"--id", "web-1", "web", "--", "true"}, []string{"true"}, ""},
		{"command-has-its-own-dash", []string{"web", "--", "rsync", "-a", "--", "src", "dst"}, []string{"rsync", "-a", "--", "src", "dst"}, ""},

		{"no-dash", []string{"web", "nc", "-l", "9999"}, nil, "want svcwrap [flags] web -- nc -l 9999"},
		{"rsync-own-dash", []string{"web", "rsync", "-a", "--", "src", "dst"}, nil, "want svcwrap [flags] web -- rsync -a -- src dst"},
		{"sh-own-dash", []string{"web", "sh", "-c", "echo $1", "--", "x"}, nil, "want svcwrap [flags] web -- sh -c echo $1 -- x"},
		{"flags-then-command-own-dash", []string{"-v", "web", "--ttl", "5", "grep", "-e", "x", "--", "file"}, nil, "want svcwrap [flags] web -- grep -e x -- file"},
		{"bool-then-command", []string{"web", "--keep-child", "cat", "-n"}, nil, "want svcwrap [flags] web -- cat -n"},
		{"command-flag-like-ours", []string{"web", "web", "--port", "8080", "--", "-v"}, nil, "want svcwrap [flags] web -- web --port 8080 -- -v"},
		{"two-words-then-dash", []string{"web", "extra", "--", "true"}, nil, "want svcwrap [flags] web -- extra -- true"},
		{"command-without-flags", []string{"web", "true"}, nil, "want svcwrap [flags] web -- true"},

		{"service-only", []string{"web"}, nil, "missing -- and the command after the service name"},
		{"dash-first", []string{"--", "true"}, nil, "missing service name before --"},
		{"dash-service", []string{"-web", "--", "true"}, nil, `-web before --: not a flag of svcwrap's, and a service name cannot begin with "-"`},
		{"dash-dash-service", []string{"--web", "--", "true"}, nil, `--web before --: not a flag of svcwrap's, and a service name cannot begin with "-"`},
		{"unknown-flag-before-name", []string{"--prot", "80", "web", "nc"}, nil, "unknown flag: --prot"},
		{"unknown-flag-after-name", []string{"web", "--prot", "80", "--", "nc"}, nil, "unknown flag: --prot"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, _, err := parseArgs(t, nil, append([]string{"--consul", "127.0.0.1:1"}, c.args...)...)
			if c.command != nil {
				require.NoError(t, err)
				assert.Equal(t, c.command, cfg.Command)
				assert.Equal(t, "web", cfg.Name)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.hint)
			assert.NotContains(t, err.Error(), "shorthand")
		})
	}
}
