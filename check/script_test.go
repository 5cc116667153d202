package check_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/svcwrap/svcwrap/check"
)

// A script that exits in time is not "timed out" because a process it
// started outside its group still holds its output pipe while the timeout
// runs out: the drain after its exit outlasts the timeout here.
func TestScript_ExitedInTimeNotTimedOut(t *testing.T) {
	check.SetDrainAfterExit(t, 3*time.Second)
	pids := filepath.Join(t.TempDir(), "pids")
	// The script waits until the holder has left its group, which the
	// kill of the group at its exit would otherwise reach.
	cmd := fmt.Sprintf(`setsid sh -c 'echo $$ >> %[1]s; exec sleep 1000' & until [ -s %[1]s ]; do :; done; echo done`, pids)
	got := check.Script{Command: cmd, Timeout: time.Second}.Check(context.Background())
	holder := readPIDs(t, pids, 1)
	t.Cleanup(func() { _ = syscall.Kill(holder[0], syscall.SIGKILL); assertAllGone(t, holder) })
	assert.Equal(t, check.Result{Status: check.Passing, Output: "script exited 0: done"}, got)
}

// The password of an http check's URL is shown as xxxxx wherever a spec is
// shown: String and the errors of ParseSpec.
func TestSpec_Redacted(t *testing.T) {
	spec, err := check.ParseSpec("http://user:s3cret@127.0.0.1:8080/health")
	if assert.NoError(t, err) {
		assert.Equal(t, "http://user:s3cret@127.0.0.1:8080/health", spec.Target, "the request keeps it")
		assert.Equal(t, "http:http://user:xxxxx@127.0.0.1:8080/health", spec.String())
	}
	for _, bad := range []string{
		"http://user:s3cret@127.0.0.1:99999/health",
		"http:user:s3cret@127.0.0.1:99999/health",
		"http://user:s3cret@/health",
		"http://user:s3cret@127.0.0.1:8080/%zz",
	} {
		_, err := check.ParseSpec(bad)
		if assert.Error(t, err, bad) {
			assert.NotContains(t, err.Error(), "s3cret", bad)
			assert.Contains(t, err.Error(), "user:xxxxx@", bad)
		}
	}
	assert.Equal(t, "tcp:h:1", check.Spec{Kind: check.KindTCP, Target: "h:1"}.String())
	assert.Equal(t, "https://u@h/p", check.Redact("https://u@h/p"), "no password")
	assert.Equal(t, "https://u:xxxxx@h/p@q", check.Redact("https://u:pw@h/p@q"))
}
