package main

import (
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// makeTarget runs `make TARGET VAR=VALUE...` in the module root and returns
// its output; the build outputs go to out (OUT=), never to bin/.
func makeTarget(t *testing.T, target, out string, vars ...string) string {
	t.Helper()
	need(t, "make")
	cmd := exec.Command("make", append([]string{target, "OUT=" + out}, vars...)...)
	got, err := cmd.CombinedOutput()
	require.NoError(t, err, "make %s:\n%s", target, got)
	return string(got)
}

// gitDescribe is what the Makefile stamps: "" without git or a checkout.
func gitDescribe(t *testing.T) string {
	out, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// `make build` builds svcwrap as BENCHMARKS.md measured it: statically
// linked (no dynamic loader or libc mapped into each of a host's thousand
// wrappers), without net/http's HTTP/2, and with the build's paths trimmed.
func TestMakeBuild_StaticAndLean(t *testing.T) {
	out := t.TempDir()
	makeTarget(t, "build", out)
	bin := filepath.Join(out, "svcwrap")

	f, err := elf.Open(bin)
	require.NoError(t, err)
	defer f.Close()
	for _, p := range f.Progs {
		assert.NotEqual(t, elf.PT_INTERP, p.Type, "no program interpreter: the binary is static")
	}

	info, err := buildinfo.ReadFile(bin)
	require.NoError(t, err)
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	assert.Equal(t, "0", settings["CGO_ENABLED"], "build settings: %v", settings)
	assert.Equal(t, "true", settings["-trimpath"], "build settings: %v", settings)
	assert.Contains(t, strings.Split(settings["-tags"], ","), "nethttpomithttp2", "build settings: %v", settings)

	// One P before the packages that allocate at their init: the runtime's
	// trace of the inits, in their order.
	cmd := exec.Command(bin, "--version")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	trace, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", trace)
	var inits []string
	for _, line := range strings.Split(string(trace), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "init" {
			inits = append(inits, f[1])
		}
	}
	one := slices.Index(inits, "github.com/svcwrap/svcwrap/internal/oneproc")
	require.GreaterOrEqual(t, one, 0, "internal/oneproc is initialized: %q", inits)
	for _, later := range []string{"unicode", "net/http", "github.com/hashicorp/consul/api", "github.com/spf13/cobra"} {
		i := slices.Index(inits, later)
		require.GreaterOrEqual(t, i, 0, "%s is initialized: %q", later, inits)
		assert.Less(t, one, i, "one P before %s is initialized: %q", later, inits)
	}
}

// `make man` writes svcwrap(1) from the command itself: the name line, the
// synopsis, the description with the environment and exit statuses, every
// flag svcwrap has (so a new flag cannot be left out), the examples, and
// the version in the footer.
func TestMakeMan(t *testing.T) {
	out := t.TempDir()
	makeTarget(t, "man", out, "VERSION=v0.0.0-mantest")
	b, err := os.ReadFile(filepath.Join(out, "svcwrap.1"))
	require.NoError(t, err)
	page := string(b)

	assert.Contains(t, page, "\n"+`.TH "SVCWRAP" "1" `, "a section 1 page:\n%.200s", page)
	assert.Contains(t, page, `"svcwrap v0.0.0-mantest"`, "the version in the footer")
	for _, want := range []string{
		".SH NAME\nsvcwrap - Run a command as a Consul service",
		".SH SYNOPSIS\n\\fBsvcwrap [flags] SERVICE -- COMMAND [ARG...]\\fP",
		".SH DESCRIPTION",
		"SVCWRAP_<FLAG>", // not eaten as an HTML tag on the way through markdown
		"CONSUL_HTTP_ADDR",
		"128+N",
		"svcwrap --completion bash",
		".SH OPTIONS",
		".SH EXAMPLE",
		"svcwrap --port 9999 netcat -- nc -l 9999",
	} {
		assert.Contains(t, page, want)
	}
	var opts options
	root := newRoot(&opts)
	root.InitDefaultHelpFlag()
	root.InitDefaultVersionFlag()
	root.Flags().VisitAll(func(f *pflag.Flag) {
		assert.Contains(t, page, `\fB--`+f.Name+`\fP`, "--%s is on the page", f.Name)
	})
	assert.NotContains(t, page, "Auto generated", "no date line that changes on every run")

	need(t, "man")
	cmd := exec.Command("man", "--warnings", "-l", filepath.Join(out, "svcwrap.1"))
	cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
	var warnings strings.Builder
	cmd.Stderr = &warnings
	rendered, err := cmd.Output()
	require.NoError(t, err, "%s", &warnings)
	assert.Contains(t, string(rendered), "SVCWRAP(1)")
	assert.Empty(t, warnings.String(), "roff warnings")
}

// `make install PREFIX=... DESTDIR=...` puts the binary and the man page
// under DESTDIR+PREFIX, and the binary says the version git describe gave.
func TestMakeInstall(t *testing.T) {
	dest := t.TempDir()
	makeTarget(t, "install", t.TempDir(), "DESTDIR="+dest, "PREFIX=/opt/svcwrap")
	bin := filepath.Join(dest, "opt/svcwrap/bin/svcwrap")
	man := filepath.Join(dest, "opt/svcwrap/share/man/man1/svcwrap.1")
	for path, mode := range map[string]os.FileMode{bin: 0o755, man: 0o644} {
		fi, err := os.Stat(path)
		require.NoError(t, err, "installed file")
		assert.Equal(t, mode, fi.Mode().Perm(), path)
	}
	got, err := exec.Command(bin, "--version").Output()
	require.NoError(t, err)
	want := gitDescribe(t)
	if want == "" {
		want = "dev" // no git: the build info, which -buildvcs=false leaves empty
	}
	assert.Equal(t, "svcwrap version "+want+"\n", string(got))

	// uninstall takes away both, and only them.
	makeTarget(t, "uninstall", t.TempDir(), "DESTDIR="+dest, "PREFIX=/opt/svcwrap")
	for _, path := range []string{bin, man} {
		_, err := os.Stat(path)
		assert.True(t, os.IsNotExist(err), "%s after uninstall: %v", path, err)
	}
}
