// Command svcwrap runs one command as a Consul service: registered with a TTL
// check while it runs and is ready, its signals forwarded, and gone from
// Consul the moment it exits.
//
//	svcwrap [flags] SERVICE -- COMMAND [ARG...]
package main

import (
	"os"

	"github.com/svcwrap/svcwrap/signals"
)

func main() {
	// Catch signals before anything else, so none that arrives while svcwrap
	// starts is lost; the lifecycle forwards them once the child runs.
	sigs := make(chan os.Signal, 64)
	// The stop function is dropped on purpose: restoring 56 signal handlers
	// costs a millisecond or two, and the process is about to exit anyway.
	_ = signals.Notify(sigs)
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Environ(), sigs))
}
