package signals

import (
	"runtime"
	"sync"
)

// Every child is forked from one OS thread that lives as long as the process.
//
// Why: the kernel sends the parent-death signal (PR_SET_PDEATHSIG) when the
// *thread* that forked the child exits, not when the process does. The Go
// runtime forks from whatever thread the calling goroutine happens to run on,
// and it ends threads on its own (a goroutine that exits while locked to its
// thread takes the thread with it). A child forked there would be killed while
// svcwrap is still alive and well. So the forks go through one goroutine that
// locks itself to its thread and never returns: that thread exits only with
// the process, which is exactly when the child should get the signal.
var forker struct {
	once  sync.Once
	calls chan func()
}

// onForkThread runs fn on the forking thread and waits for it. A panic in fn
// is re-raised in the caller so that it cannot end the forking thread.
func onForkThread(fn func()) {
	forker.once.Do(func() {
		forker.calls = make(chan func())
		go forkLoop(forker.calls)
	})
	done := make(chan struct{})
	var panicked any
	forker.calls <- func() {
		defer close(done)
		defer func() { panicked = recover() }()
		fn()
	}
	<-done
	if panicked != nil {
		panic(panicked)
	}
}

// forkLoop is the forking goroutine. It never unlocks its thread and never
// returns; see the comment on forker.
func forkLoop(calls <-chan func()) {
	runtime.LockOSThread()
	for fn := range calls {
		fn()
	}
}
