package signals_test

import (
	"fmt"
	"syscall"

	"github.com/svcwrap/svcwrap/signals"
)

// Parse takes a signal as people type it; Name gives it back as `kill -l`
// prints it.
func ExampleParse() {
	for _, s := range []string{"term", "SIGHUP", "9", "RTMIN+1", "TERN"} {
		sig, err := signals.Parse(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(int(sig), signals.Name(sig))
	}
	// Output:
	// 15 SIGTERM
	// 1 SIGHUP
	// 9 SIGKILL
	// 35 SIGRTMIN+1
	// unknown signal "TERN"
}

// A child killed by a signal reports 128+N, the code svcwrap exits with.
func ExampleExit() {
	e := signals.Exit{Code: 128 + int(syscall.SIGTERM), Signal: syscall.SIGTERM}
	fmt.Println(e.Code, e)
	fmt.Println(signals.Exit{Code: 3})
	// Output:
	// 143 killed by SIGTERM
	// exit status 3
}
