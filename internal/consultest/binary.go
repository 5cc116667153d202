// Package consultest runs real Consul agents on loopback addresses for tests:
// a single -dev agent (StartAgent), a small cluster of servers and clients
// (StartCluster), and polling helpers that wait for a condition with a
// deadline and say what they saw last when it is not met (Eventually,
// WaitServiceStatus, WaitServicePresent, WaitServiceGone).
//
// Every agent is stopped on t.Cleanup and, should the test binary die without
// running its cleanups, killed by the kernel through the parent-death signal.
// Helpers fail the test with t.Fatalf, so call them from the test's goroutine.
//
// The agent binary is built by `make consul` (see Binary).
package consultest

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ModulePath is the module whose root holds bin/consul.
const ModulePath = "github.com/svcwrap/svcwrap"

// EnvBinary names the environment variable that overrides the agent binary.
const EnvBinary = "SVCWRAP_CONSUL_BIN"

// Binary returns the path of the Consul agent binary: $SVCWRAP_CONSUL_BIN if set,
// else bin/consul under the root of the svcwrap module. It fails the test if
// the binary is missing: the tests are about a real agent, so they do not skip.
func Binary(t testing.TB) string {
	t.Helper()
	path, err := binaryPath()
	if err != nil {
		t.Fatalf("consul agent not found: %v: run `make consul`", err)
	}
	info, err := os.Stat(path)
	if err != nil || info.IsDir() {
		t.Fatalf("consul agent not found at %s: run `make consul`", path)
	}
	return path
}

func binaryPath() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "consul"), nil
}

// moduleRoot walks up from the working directory to the directory whose
// go.mod declares ModulePath. Nested modules (tools/consul) are passed by.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if modulePathOf(filepath.Join(dir, "go.mod")) == ModulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module " + ModulePath + " above the working directory")
		}
		dir = parent
	}
}

// modulePathOf returns the module path declared in a go.mod, or "" if the
// file cannot be read.
func modulePathOf(gomod string) string {
	f, err := os.Open(gomod)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`)
		}
	}
	return ""
}
