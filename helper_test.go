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
	case "exit-on-usr1":
		// exit N when SIGUSR1 arrives: a child that ends by itself, on cue
		n, _ := strconv.Atoi(args[0])
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		fmt.Println("pid", os.Getpid())
		fmt.Println("ready")
		<-usr1
		return n
	case "signals":
		return helperSignals(args)
	case "listener":
		return helperListener(args)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		fmt.Println("ready")
		select {}
	case "ignore-term-group":
		// like ignore-term, with a grandchild that inherits the ignored
		// signals: only SIGKILL to the group ends both
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
		cmd := exec.Command("sleep", "1000")
		if err := cmd.Start(); err != nil {
			fmt.Println("error", err)
			return 1
		}
		fmt.Println("pid", os.Getpid())
		fmt.Println("grandchild", cmd.Process.Pid)
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
	case "env":
		// env NAME...: one line per variable, its value or that it is unset
		for _, name := range args {
			if v, ok := os.LookupEnv(name); ok {
				fmt.Printf("env %s=%s\n", name, v)
			} else {
				fmt.Printf("env %s unset\n", name)
			}
		}
		return 0
	case "pid":
		fmt.Println("pid", os.Getpid())
		fmt.Println("ready")
		select {}
	case "soak":
		return helperSoak(args)
	case "health":
		return helperHealth(args)
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

// The first and the last real-time signal svcwrap forwards, as numbered by
// Linux (`kill -l`: SIGRTMIN+1 and SIGRTMAX).
const sigRTMin1, sigRTMax = syscall.Signal(35), syscall.Signal(64)

// helperSignals prints one line per signal received; on SIGTERM it first asks
// the agent (args[0]) whether service args[1] is still registered, which tells
// the test whether svcwrap deregistered before forwarding the stop signal.
func helperSignals(args []string) int {
	c := make(chan os.Signal, 32)
	signal.Notify(c, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
		syscall.SIGQUIT, syscall.SIGCONT, syscall.SIGALRM, syscall.SIGTERM, syscall.SIGINT,
		sigRTMin1, sigRTMax)
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

// helperSoak is the child of the fault soak (soak_test.go). args: how it ends
// ("exit" or "signal", told to by a byte on stdin; "run", until a stop signal
// kills it; "ignore-term", ignoring SIGTERM and SIGINT until SIGKILL), the
// exit code or signal number of that end, and a port to listen on ("0":
// none). It prints "ready" once it listens, and "got <signal>" for each
// SIGHUP and SIGUSR1 it receives.
func helperSoak(args []string) int {
	end, n, port := args[0], args[1], args[2]
	code, _ := strconv.Atoi(n)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1)
	if end == "ignore-term" {
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT)
	}
	if port != "0" {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			fmt.Println("listen", err)
			return 1
		}
		defer l.Close()
	}
	fmt.Println("ready")
	told := make(chan struct{})
	go func() {
		// EOF (the soak closed stdin) is no order: keep running.
		if _, err := os.Stdin.Read(make([]byte, 1)); err == nil {
			close(told)
		}
	}()
	for {
		select {
		case sig := <-sigs:
			fmt.Println("got", sig)
		case <-told:
			switch end {
			case "exit":
				return code
			case "signal":
				signal.Reset(syscall.Signal(code))
				_ = syscall.Kill(os.Getpid(), syscall.Signal(code))
				select {}
			}
			told = nil
		}
	}
}
