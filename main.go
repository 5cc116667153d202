// Command svcwrap runs one command as a Consul service: registered with a TTL
// check while it runs and is ready, its signals forwarded, and gone from
// Consul the moment it exits.
//
//	svcwrap [flags] SERVICE -- COMMAND [ARG...]
package main

import (
	"os"
	"runtime/debug"

	// One P from the start, before any other package allocates: see there.
	_ "github.com/svcwrap/svcwrap/internal/oneproc"
	"github.com/svcwrap/svcwrap/signals"
)

func main() {
	// Catch signals before anything else, so none that arrives while svcwrap
	// starts is lost; the lifecycle forwards them once the child runs.
	// The real-time ones wait until the start has done what it must do at
	// once (signals.Catch says why); the lifecycle catches them then.
	sigs := make(chan os.Signal, 64)
	catchRest := signals.Catch(sigs)
	tuneRuntime()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Environ(), sigs, catchRest))
}

// gcPercent is the GC setting for a process that waits 99.9% of the time
// and of which a host runs hundreds (BENCHMARKS.md, "Footprint"); GOGC in
// the environment wins over it. (The other, one P, is set by
// internal/oneproc.) Go collects when the heap has doubled, but not before
// it reaches 4 MiB; svcwrap's live heap is a few hundred KiB, and each
// heartbeat leaves about 12 KiB of garbage, so with the default the heap
// grows for twenty minutes to 4 MiB and stays there. At 25 it is collected
// at about 1 MiB, a collection of well under a millisecond every few
// minutes.
const gcPercent = 25

func tuneRuntime() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
}
