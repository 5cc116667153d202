package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
)

// helperEnv, when set, makes the test binary act as a child for svcwrap to
// wrap, in the mode it names, instead of running tests (as Go's os/exec tests
// do). Every mode reports on stdout, which svcwrap passes through untouched.
const helperEnv = "SVCWRAP_TEST_HELPER"

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// helperArgv is the command line that runs this test binary as helper mode.
func helperArgv(mode string, args ...string) []string {
	return append([]string{"env", helperEnv + "=" + mode, os.Args[0]}, args...)
}

func runHelper(mode string, args []string) int {
	switch mode {
	case "exit":
		// exit N
		n, _ := strconv.Atoi(args[0])
		fmt.Println("ready")
		return n
	case "killself":
		// dies from SIGTERM it sends itself
		fmt.Println("ready")
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {}
	case "signals":
		return helperSignals(args)
	case "listener":
		return helperListener(args)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("ready")
		select {}
	case "grandchild":
		// start a grandchild that sleeps, print its pid, then wait forever
		cmd := exec.Command("sleep", "1000")
		if err := cmd.Start(); err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("grandchild", cmd.Process.Pid)
		fmt.Println("ready")
		select {}
	case "pid":
		fmt.Println("pid", os.Getpid())
		fmt.Println("ready")
		select {}
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// helperSignals prints one line per signal received; on SIGTERM it first asks
// the agent (args[0]) whether service args[1] is still registered, which tells
// the test whether svcwrap deregistered before forwarding the stop signal.
func helperSignals(args []string) int {
	c := make(chan os.Signal, 32)
	signal.Notify(c, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
		syscall.SIGQUIT, syscall.SIGCONT, syscall.SIGALRM, syscall.SIGTERM, syscall.SIGINT)
	fmt.Println("ready")
	for sig := range c {
		fmt.Println("got", sig.(syscall.Signal).String())
		if sig == syscall.SIGTERM || sig == syscall.SIGINT {
			if len(args) == 2 {
				conf := api.DefaultConfig()
				conf.Address = args[0]
				client, err := api.NewClient(conf)
				if err == nil {
					svcs, err := client.Agent().Services()
					_, present := svcs[args[1]]
					fmt.Println("registered-at-stop", present, err)
				}
			}
			return 0
		}
	}
	return 0
}

// helperListener listens on 127.0.0.1:args[0] after SIGUSR1, stops listening on
// SIGUSR2, and listens again on the next SIGUSR1.
func helperListener(args []string) int {
	port := args[0]
	c := make(chan os.Signal, 8)
	signal.Notify(c, syscall.SIGUSR1, syscall.SIGUSR2)
	fmt.Println("ready")
	var l net.Listener
	for sig := range c {
		switch sig {
		case syscall.SIGUSR1:
			var err error
			for i := 0; i < 100; i++ { // the port may linger briefly after close
				if l, err = net.Listen("tcp", "127.0.0.1:"+port); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			fmt.Println("listening", err)
		case syscall.SIGUSR2:
			if l != nil {
				l.Close()
				l = nil
			}
			fmt.Println("closed")
		}
	}
	return 0
}
