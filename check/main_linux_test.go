//go:build linux

package check_test

// The test binary doubles as the child process of the tests, as in Go's own
// os/exec tests: with helperEnv set, TestMain runs a helper instead of the
// tests. Every helper prints one "ready ..." line on stdout once it is set up,
// answers commands read line by line from stdin, and exits when stdin closes.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// helperEnv selects a helper: "listen NETWORK ADDRESS", "idle", "dial ADDRESS"
// or "spawn HELPER...".
const helperEnv = "SVCWRAP_CHECK_TEST_HELPER"

func init() {
	// A spawning helper keeps its main goroutine on the main thread, so that
	// it starts its own child from another thread: the kernel then lists that
	// child under /proc/<pid>/task/<other tid>/children, which the tree walk
	// must read too.
	if strings.HasPrefix(os.Getenv(helperEnv), "spawn ") {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		if err := runHelper(strings.Fields(h)); err != nil {
			fmt.Fprintf(os.Stderr, "helper %q: %v\n", h, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runHelper(args []string) error {
	switch args[0] {
	case "listen":
		if len(args) != 3 {
			return fmt.Errorf("usage: listen NETWORK ADDRESS")
		}
		return helperListen(args[1], args[2])
	case "idle":
		fmt.Println("ready")
		return serveCommands(nil)
	case "dial":
		if len(args) != 2 {
			return fmt.Errorf("usage: dial ADDRESS")
		}
		conn, err := net.Dial("tcp", args[1])
		if err != nil {
			return err
		}
		defer conn.Close()
		fmt.Println("ready")
		return serveCommands(nil)
	case "spawn":
		return helperSpawn(args[1:])
	case "http":
		if len(args) != 2 {
			return fmt.Errorf("usage: http ADDRESS")
		}
		return helperHTTP(args[1])
	default:
		return fmt.Errorf("unknown helper %q", args[0])
	}
}

// helperListen listens and accepts connections, keeping them open and counting
// them, so that a test can ask how many connections were made ("count") and
// close the listener while keeping the accepted connections ("close").
func helperListen(network, address string) error {
	ln, err := net.Listen(network, address)
	if err != nil {
		return err
	}
	defer ln.Close()

	var (
		mu      sync.Mutex
		accepts int
		conns   []net.Conn
	)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return // closed
			}
			mu.Lock()
			accepts++
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()

	fmt.Printf("ready %d\n", ln.Addr().(*net.TCPAddr).Port)
	return serveCommands(map[string]func() string{
		"count": func() string {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Sprintf("accepts %d", accepts)
		},
		"close": func() string {
			ln.Close()
			return "closed"
		},
	})
}

// helperSpawn starts the helper args as its own child, from a goroutine (so
// from a thread other than the main one), prints "spawned PID", then relays
// the grandchild's stdout and its own stdin until stdin closes.
func helperSpawn(args []string) error {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(helperEnviron(), helperEnv+"="+strings.Join(args, " "))
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	// The grandchild dies with this helper even if the helper is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	started := make(chan error, 1)
	go func() { started <- cmd.Start() }()
	if err := <-started; err != nil {
		return err
	}
	fmt.Printf("spawned %d\n", cmd.Process.Pid)

	_, _ = io.Copy(stdin, os.Stdin)
	stdin.Close()
	return cmd.Wait()
}

// serveCommands answers each line read from stdin with the result of the
// command of that name, until stdin closes.
func serveCommands(commands map[string]func() string) error {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, ok := commands[in.Text()]
		if !ok {
			fmt.Printf("unknown command %q\n", in.Text())
			continue
		}
		fmt.Println(cmd())
	}
	return in.Err()
}

// helperEnviron is the environment of a helper child: ours, with the race
// detector's default one-second sleep at exit turned off, so that stopping a
// child under -race takes milliseconds.
func helperEnviron() []string {
	return append(os.Environ(), "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
}
