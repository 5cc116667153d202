package check

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// Script is the check script:COMMAND, by the Nagios and Consul convention:
// the command runs through /bin/sh -c, and its exit status 0 is passing, 1
// warning, anything else critical. It runs in a process group of its own,
// which is killed, whole, at the timeout (the check is then critical) or when
// the context passed to Check ends; what the script left running in its
// group when it exited is killed too, so that no process of a check outlives
// its run.
type Script struct {
	// Command is the shell command.
	Command string
	// Timeout bounds a run. Zero: only the context passed to Check bounds it.
	Timeout time.Duration
	// Env is the script's environment. Nil: svcwrap's own.
	Env []string
}

// maxScriptLine is how much of the script's first line of output (stdout and
// stderr together) goes into the check's output.
const maxScriptLine = 200

// drainAfterExit is how long the output is still read once the script and
// its group are gone: only a process that left the group (setsid) can keep
// the pipe open that long, and it is not waited for. A variable for the
// tests.
var drainAfterExit = 100 * time.Millisecond

// Check runs the command once. Its output is "script exited N" followed by
// ": LINE", the first line the script wrote (at most 200 bytes, unprintable
// characters dropped), when it wrote one: the script decides whether its
// output stays the same from run to run. A script killed at the timeout
// reads "script timed out after D", one that could not start "script could
// not start".
func (s Script) Check(ctx context.Context) Result {
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	r, w, err := os.Pipe()
	if err != nil {
		return Result{Status: Critical, Output: "script could not start"}
	}
	defer r.Close()

	// An *os.File as stdout and stderr: exec copies nothing, so Wait returns
	// when the shell ends, whoever else holds the pipe.
	argv := scriptArgv(s.Command)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = s.Env
	cmd.SysProcAttr = scriptProcAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	err = cmd.Start()
	w.Close()
	if err != nil {
		return Result{Status: Critical, Output: "script could not start"}
	}

	out := make(chan []byte, 1)
	go func() { out <- readPrefix(r, 4<<10) }()

	err = cmd.Wait()
	// Whether the run was cut short is decided now: the drain below may
	// take up to drainAfterExit, and a script that exited in time is not
	// "timed out" because it left a process holding its pipe.
	ended := ctx.Err()
	_ = killGroup(cmd.Process.Pid) // what the script left behind
	_ = r.SetReadDeadline(time.Now().Add(drainAfterExit))
	line := firstLine(<-out)

	switch {
	case errors.Is(ended, context.DeadlineExceeded):
		return Result{Status: Critical, Output: "script timed out after " + s.Timeout.String()}
	case ended != nil:
		return Result{Status: Critical, Output: "script cancelled"}
	}
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode() // -1: killed by a signal
	} else if err != nil {
		return Result{Status: Critical, Output: "script could not start"}
	}
	output := "script exited " + strconv.Itoa(code)
	if code < 0 {
		output = "script killed by a signal"
	}
	if line != "" {
		output += ": " + line
	}
	return Result{Status: scriptStatus(code), Output: output}
}

// scriptStatus is the Nagios and Consul reading of an exit status.
func scriptStatus(code int) Status {
	switch code {
	case 0:
		return Passing
	case 1:
		return Warning
	default:
		return Critical
	}
}

// readPrefix reads r until EOF, an error or its deadline, keeping the first
// max bytes.
func readPrefix(r *os.File, max int) []byte {
	var b bytes.Buffer
	buf := make([]byte, 4<<10)
	for {
		n, err := r.Read(buf)
		if b.Len() < max {
			b.Write(buf[:min(n, max-b.Len())])
		}
		if err != nil {
			return b.Bytes()
		}
	}
}

// firstLine is the first non-empty line of out, trimmed, without
// unprintable characters, at most maxScriptLine bytes.
func firstLine(out []byte) string {
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(printable(line)); line == "" {
			continue
		}
		if len(line) > maxScriptLine {
			line = strings.ToValidUTF8(line[:maxScriptLine], "")
		}
		return line
	}
	return ""
}

// printable is s without the runes unicode.IsPrint refuses: control
// characters, but also line separators and the like, which would break a
// check's one-line output.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
}
