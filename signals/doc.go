// Package signals starts svcwrap's child and stays in charge of it at the
// process level: it puts the child in its own process group, learns of its end
// from the kernel (never by polling), delivers signals to the whole group, and,
// when svcwrap runs as PID 1, reaps every zombie without losing the child's exit
// status. It also decides which signals svcwrap catches and forwards.
//
// The package is Linux-only: it relies on the parent-death signal, the child
// subreaper flag and Linux's signal numbering.
//
// It keeps exactly two pieces of process-wide state, both started lazily: the
// goroutine that owns the thread every child is forked from, and, once a child
// is started with ReapAll, the one loop that reaps every child of the process.
// It never logs; everything it knows is returned to the caller.
package signals
