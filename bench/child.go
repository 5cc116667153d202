package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The benchmark child is this binary re-executed by a wrapper (envChild is
// set). It stands in for a service: it can listen on a port, and it prints
// one line on stdout for each thing the harness times, stamped with the wall
// clock (time.Now().UnixNano()) at the moment it happens:
//
//	svcbench ready PID         signal handlers installed
//	svcbench listen            listening on -listen
//	svcbench unlisten          listener closed (command "unlisten")
//	svcbench sig NAME          SIGHUP or SIGUSR1 received
//	svcbench term              SIGTERM or SIGINT received
//	svcbench agent gone|present|error:...  the agent's answer after "term" (-agent)
//	svcbench exit CODE         about to exit
//
// The harness and the child run on the same machine, so their wall clocks
// are the same clock. The child reads commands on stdin, one a line:
// "unlisten" and "exit CODE".

// childFlags are the benchmark child's options.
type childFlags struct {
	port        int           // listen on 127.0.0.1:port; 0: never
	listenAfter time.Duration // wait this long before listening
	agent       string        // on SIGTERM, ask this agent (host:port) whether -service is still registered
	service     string
}

// childMain runs the benchmark child and returns its exit code.
func childMain(args []string) int {
	var f childFlags
	fs := flag.NewFlagSet("svcbench-child", flag.ContinueOnError)
	fs.IntVar(&f.port, "listen", 0, "port to listen on")
	fs.DurationVar(&f.listenAfter, "listen-after", 0, "delay before listening")
	fs.StringVar(&f.agent, "agent", "", "agent to ask on SIGTERM")
	fs.StringVar(&f.service, "service", "", "service ID to ask about")
	if err := fs.Parse(args); err != nil {
		return 2
	}

	// Signals first, so that none the harness sends after "ready" is lost.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	emit("ready", strconv.Itoa(os.Getpid()))

	// The listener is made by the main loop alone, so no lock is needed.
	var (
		ln       net.Listener
		listenAt <-chan time.Time
	)
	if f.port != 0 {
		// A deliberate delay, not a synchronisation: it stands for a
		// service's start-up work, so that the wrapper has settled into its
		// not-ready polling when the port opens.
		t := time.NewTimer(f.listenAfter)
		defer t.Stop()
		listenAt = t.C
	}
	cmds := readCommands()

	for {
		select {
		case <-listenAt:
			listenAt = nil
			l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(f.port)))
			if err != nil {
				fmt.Fprintln(os.Stderr, "svcbench child:", err)
				return 1
			}
			ln = l
			emit("listen")

		case cmd, ok := <-cmds:
			if !ok {
				cmds = nil // stdin closed: keep running until a signal
				continue
			}
			switch verb, arg, _ := strings.Cut(cmd, " "); verb {
			case "unlisten":
				if ln != nil {
					ln.Close()
					ln = nil
					emit("unlisten")
				}
			case "exit":
				code, _ := strconv.Atoi(arg)
				emit("exit", strconv.Itoa(code))
				return code
			}

		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP, syscall.SIGUSR1:
				emit("sig", sigName(sig))
			default: // SIGTERM, SIGINT: stop at once
				emit("term")
				if f.agent != "" {
					emit("agent", registration(f.agent, f.service))
				}
				emit("exit", "0")
				return 0
			}
		}
	}
}

// emit prints one event line, stamped now. os.Stdout is not buffered: the
// line leaves with one write(2).
func emit(kind string, args ...string) {
	line := eventPrefix + kind + " " + strconv.FormatInt(time.Now().UnixNano(), 10)
	for _, a := range args {
		line += " " + a
	}
	os.Stdout.WriteString(line + "\n")
}

func sigName(sig os.Signal) string {
	switch sig {
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGUSR1:
		return "USR1"
	}
	return sig.String()
}

// readCommands delivers the lines of stdin until EOF.
func readCommands() <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			ch <- strings.TrimSpace(sc.Text())
		}
	}()
	return ch
}

// registration asks the agent whether service is registered: "gone",
// "present", or "error:..." (no spaces, it is one field of an event).
func registration(agent, service string) string {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + agent + "/v1/agent/service/" + service)
	if err != nil {
		return "error:" + strings.ReplaceAll(err.Error(), " ", "_")
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotFound:
		return "gone"
	case http.StatusOK:
		return "present"
	}
	return "error:status_" + strconv.Itoa(resp.StatusCode)
}
