package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the benchmark child, as the
// harness binary does: a wrapper started by the smoke run re-executes it.
func TestMain(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(childMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestSmoke runs the whole harness once in -quick mode (one run of each
// latency, a 5 s idle window, 10 wrappers for scale) against bin/svcwrap and
// bin/consul, so that it cannot rot unnoticed. It asserts only that every
// measurement produced a value and that nothing the harness started is left
// running: timings are what `make bench` reports, never what a test asserts.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Consul agent and a dozen wrappers: not in -short")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	svcwrap := filepath.Join(root, "bin", "svcwrap")
	consul := os.Getenv("SVCWRAP_CONSUL")
	if consul == "" {
		consul = filepath.Join(root, "bin", "consul")
	}
	for _, bin := range []string{svcwrap, consul} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%v: run `make build consul` first", err)
		}
	}

	cfg, err := parseFlags([]string{"-quick", "-wrapper", svcwrap, "-consul", consul,
		"-json", filepath.Join(t.TempDir(), "bench.json")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ps := newProcs()
	defer ps.close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	figs, err := run(ctx, cfg, ps, &out, testWriter{t})
	if err != nil {
		t.Fatalf("harness: %v\n%s", err, out.String())
	}
	t.Logf("harness output:\n%s", out.String())

	if len(figs) == 0 {
		t.Fatal("no figures")
	}
	for _, f := range figs {
		if f.Error != "" || len(f.Samples) == 0 {
			t.Errorf("%s [%s]: no value (error %q)", f.Name, f.Wrapper, f.Error)
		}
	}
	for _, group := range []string{"latency", "signals", "stop", "footprint", "scale"} {
		if !strings.Contains(out.String(), "## "+group) {
			t.Errorf("no %q table in the output", group)
		}
	}

	ps.close()
	if left := ps.marked(); len(left) > 0 {
		t.Errorf("processes left running after close: %v", left)
	}
}

// testWriter sends the harness's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
