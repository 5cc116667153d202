package check_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/check"
)

// codeServer answers /health with the status code last stored in code.
func codeServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var code atomic.Int32
	code.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/moved" {
			http.Redirect(w, r, "/health", http.StatusFound)
			return
		}
		w.WriteHeader(int(code.Load()))
		fmt.Fprintln(w, "body that must not reach the output", time.Now())
	}))
	t.Cleanup(srv.Close)
	return srv, &code
}

// Consul's rules: 2xx passing, 429 warning, anything else critical; the
// output names the URL and the code, and nothing that changes between runs.
func TestHTTP_StatusCodes(t *testing.T) {
	srv, code := codeServer(t)
	url := srv.URL + "/health"
	h := check.NewHTTP(url, check.HTTPOptions{Timeout: 5 * time.Second})
	for _, tc := range []struct {
		code int
		want check.Status
	}{
		{200, check.Passing}, {204, check.Passing}, {299, check.Passing},
		{429, check.Warning},
		{300, check.Critical}, {404, check.Critical}, {500, check.Critical}, {503, check.Critical},
	} {
		code.Store(int32(tc.code))
		want := check.Result{Status: tc.want, Output: "GET " + url + ": " + strconv.Itoa(tc.code)}
		assert.Equal(t, want, h.Check(context.Background()))
		assert.Equal(t, want, h.Check(context.Background()), "the same output on the next run")
	}

	code.Store(200)
	moved := check.NewHTTP(srv.URL+"/moved", check.HTTPOptions{})
	assert.Equal(t, check.Result{Status: check.Passing, Output: "GET " + srv.URL + "/moved: 200"},
		moved.Check(context.Background()), "redirects are followed")
}

func TestHTTP_Failures(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		addr := closedAddr(t)
		r := check.NewHTTP("http://"+addr+"/health", check.HTTPOptions{Timeout: 5 * time.Second}).Check(context.Background())
		assert.Equal(t, check.Result{Status: check.Critical, Output: "GET http://" + addr + "/health: connection refused"}, r)
	})
	t.Run("timeout", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
		t.Cleanup(srv.Close)
		h := check.NewHTTP(srv.URL, check.HTTPOptions{Timeout: 50 * time.Millisecond})
		want := check.Result{Status: check.Critical, Output: "GET " + srv.URL + ": timeout after 50ms"}
		assert.Equal(t, want, h.Check(context.Background()))
		assert.Equal(t, want, h.Check(context.Background()))
	})
	t.Run("tls", func(t *testing.T) {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		t.Cleanup(srv.Close)
		r := check.NewHTTP(srv.URL, check.HTTPOptions{Timeout: 5 * time.Second}).Check(context.Background())
		assert.Equal(t, check.Result{Status: check.Critical, Output: "GET " + srv.URL + ": certificate signed by an unknown authority"}, r)
		r = check.NewHTTP(srv.URL, check.HTTPOptions{Timeout: 5 * time.Second, TLSSkipVerify: true}).Check(context.Background())
		assert.Equal(t, check.Result{Status: check.Passing, Output: "GET " + srv.URL + ": 200"}, r)
	})
	t.Run("password-hidden", func(t *testing.T) {
		srv, _ := codeServer(t)
		u := strings.Replace(srv.URL, "http://", "http://me:secret@", 1)
		r := check.NewHTTP(u, check.HTTPOptions{}).Check(context.Background())
		assert.NotContains(t, r.Output, "secret")
		assert.Equal(t, check.Passing, r.Status)
	})
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestTCP_ListenerGoesAway(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	c := check.TCP{Addr: addr, Timeout: 5 * time.Second}
	assert.Equal(t, check.Result{Status: check.Passing, Output: "connected to " + addr}, c.Check(context.Background()))
	require.NoError(t, l.Close())
	want := check.Result{Status: check.Critical, Output: "connect " + addr + ": connection refused"}
	assert.Equal(t, want, c.Check(context.Background()))
	assert.Equal(t, want, c.Check(context.Background()))
}

// The Nagios convention, with the script's first line as the reason.
func TestScript_ExitCodes(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want check.Result
	}{
		{"exit 0", check.Result{Status: check.Passing, Output: "script exited 0"}},
		{"echo fine; exit 0", check.Result{Status: check.Passing, Output: "script exited 0: fine"}},
		{"echo '  '; echo 'load high' >&2; exit 1", check.Result{Status: check.Warning, Output: "script exited 1: load high"}},
		{"printf 'disk 97%% full\\nmore\\n'; exit 2", check.Result{Status: check.Critical, Output: "script exited 2: disk 97% full"}},
		{"exit 3", check.Result{Status: check.Critical, Output: "script exited 3"}},
		{"kill -9 $$", check.Result{Status: check.Critical, Output: "script exited 137"}}, // the shell's 128+N
		{"no-such-command-xyz", check.Result{Status: check.Critical, Output: "script exited 127: /bin/sh: 1: no-such-command-xyz: not found"}},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			got := check.Script{Command: tc.cmd, Timeout: 10 * time.Second}.Check(context.Background())
			if tc.cmd == "no-such-command-xyz" {
				assert.Equal(t, tc.want.Status, got.Status)
				assert.True(t, strings.HasPrefix(got.Output, "script exited 127: "), got.Output)
				return
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// A script that hangs past its timeout is critical, and its whole group,
// what it started included, is gone when Check returns.
func TestScript_TimeoutKillsGroup(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	cmd := fmt.Sprintf("echo $$ >> %s; sleep 1000 & echo $! >> %s; wait", pids, pids)
	s := check.Script{Command: cmd, Timeout: 300 * time.Millisecond}
	assert.Equal(t, check.Result{Status: check.Critical, Output: "script timed out after 300ms"}, s.Check(context.Background()))
	assertAllGone(t, readPIDs(t, pids, 2))
}

// What a script leaves running in its group when it exits is killed.
func TestScript_LeftoversKilled(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	cmd := fmt.Sprintf("sleep 1000 & echo $! >> %s; echo started", pids)
	got := check.Script{Command: cmd, Timeout: 10 * time.Second}.Check(context.Background())
	assert.Equal(t, check.Result{Status: check.Passing, Output: "script exited 0: started"}, got)
	assertAllGone(t, readPIDs(t, pids, 1))
}

// Cancelling the context (svcwrap's stop) kills the group at once.
func TestScript_Cancelled(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	cmd := fmt.Sprintf("echo $$ >> %s; sleep 1000 & echo $! >> %s; wait", pids, pids)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan check.Result, 1)
	go func() { done <- check.Script{Command: cmd, Timeout: time.Hour}.Check(ctx) }()
	running := readPIDs(t, pids, 2)
	cancel()
	select {
	case r := <-done:
		assert.Equal(t, check.Result{Status: check.Critical, Output: "script cancelled"}, r)
	case <-time.After(waitLimit):
		t.Fatal("Check did not return after cancel")
	}
	assertAllGone(t, running)
}

// readPIDs waits until path holds n PIDs, one a line.
func readPIDs(t *testing.T, path string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		b, _ := os.ReadFile(path)
		fields := strings.Fields(string(b))
		if len(fields) >= n {
			var pids []int
			for _, f := range fields {
				p, err := strconv.Atoi(f)
				require.NoError(t, err)
				pids = append(pids, p)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q, want %d PIDs", path, b, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assertAllGone waits until none of pids runs (a zombie counts as gone).
func assertAllGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d of the script still runs", pid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}

func TestParseSpec(t *testing.T) {
	good := map[string]check.Spec{
		"http:http://127.0.0.1:8080/health": {check.KindHTTP, "http://127.0.0.1:8080/health"},
		"http:https://web.local/health":     {check.KindHTTP, "https://web.local/health"},
		"http://127.0.0.1/h":                {check.KindHTTP, "http://127.0.0.1/h"},
		"https://[::1]:8443/h":              {check.KindHTTP, "https://[::1]:8443/h"},
		"http:127.0.0.1:8080/health":        {check.KindHTTP, "http://127.0.0.1:8080/health"},
		"tcp:127.0.0.1:6379":                {check.KindTCP, "127.0.0.1:6379"},
		"tcp:[::1]:6379":                    {check.KindTCP, "[::1]:6379"},
		"tcp:redis.local:6379":              {check.KindTCP, "redis.local:6379"},
		"script:test -f /tmp/ok":            {check.KindScript, "test -f /tmp/ok"},
		"script:a:b, c":                     {check.KindScript, "a:b, c"},
	}
	for in, want := range good {
		got, err := check.ParseSpec(in)
		if assert.NoError(t, err, in) {
			assert.Equal(t, want, got, in)
		}
	}
	bad := map[string]string{
		"":                     "want http:URL",
		"ftp://x/":             "unknown kind",
		"grpc:127.0.0.1:1":     "unknown kind",
		"http:ftp://x/":        `scheme "ftp"`,
		"http:http:///x":       "no host",
		"http:http://x:99999/": "want 1-65535",
		"tcp:127.0.0.1":        "want tcp:HOST:PORT",
		"tcp::80":              "want tcp:HOST:PORT",
		"tcp:127.0.0.1:0":      "want 1-65535",
		"tcp:127.0.0.1:http":   "want 1-65535",
		"script:":              "empty command",
		"script:   ":           "empty command",
		"http:http://x/%zz":    "not a URL",
	}
	for in, want := range bad {
		_, err := check.ParseSpec(in)
		if assert.Error(t, err, in) {
			assert.Contains(t, err.Error(), want, in)
			assert.NotContains(t, err.Error(), "\n")
		}
	}
}

func TestSplitSpecs(t *testing.T) {
	assert.Equal(t, []string{"script:test -f a,b", "http://x/health?a=1,2", "tcp:h:1"},
		check.SplitSpecs("script:test -f a,b,http://x/health?a=1,2, tcp:h:1"))
	assert.Equal(t, []string{"http:http://x/"}, check.SplitSpecs("http:http://x/,"))
	assert.Empty(t, check.SplitSpecs(""))
}

func TestDescribe(t *testing.T) {
	c := startChild(t, "idle")
	d := check.Describe(c.pid())
	assert.True(t, strings.HasPrefix(d, "pid "+strconv.Itoa(c.pid())+": "+os.Args[0]), d)
	assert.Equal(t, "pid 0", check.Describe(0))

	// A process that has ended (and been reaped) is named by its PID alone.
	gone := exec.Command("true")
	require.NoError(t, gone.Run())
	pid := gone.ProcessState.Pid()
	assert.Equal(t, "pid "+strconv.Itoa(pid), check.Describe(pid))
}

// Describe joins the arguments with spaces, as the kernel keeps them, and
// cuts a long command line at 120 bytes.
func TestDescribe_ArgumentsAndLength(t *testing.T) {
	long := exec.Command("sh", "-c", "sleep 30; : "+strings.Repeat("x", 200))
	require.NoError(t, long.Start())
	t.Cleanup(func() { _ = long.Process.Kill(); _ = long.Wait() })
	want := "sh -c sleep 30; : " + strings.Repeat("x", 120-len("sh -c sleep 30; : "))
	prefix := "pid " + strconv.Itoa(long.Process.Pid) + ": "
	// Start returns once the exec has succeeded: the command line is sh's.
	assert.Equal(t, prefix+want+"…", check.Describe(long.Process.Pid))
}
