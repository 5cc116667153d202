// Package oneproc gives the Go runtime one P (GOMAXPROCS=1) as the first of
// svcwrap's packages to be initialized, before the packages svcwrap imports
// allocate anything, unless GOMAXPROCS is set in the environment.
//
// svcwrap's goroutines wait on the child, signals, timers and the agent: a
// second P only costs memory. What runs on it keeps its own cache of spans,
// and the pages it touched stay touched after the P is gone: set from main,
// one P came too late (BENCHMARKS.md, "Footprint"). Packages are initialized
// in the order of their import paths, dependencies first, so this one, which
// imports only runtime and syscall, runs right after syscall.
package oneproc

import (
	"runtime"
	"syscall"
)

func init() {
	if _, set := syscall.Getenv("GOMAXPROCS"); !set {
		runtime.GOMAXPROCS(1)
	}
}
