//go:build !linux

package check

import (
	"errors"
	"fmt"
)

// Listening reports whether the process tree rooted at pid has a TCP socket in
// LISTEN state on port. Only Linux is supported: the answer comes from the
// kernel's socket tables in /proc, and elsewhere the error wraps
// errors.ErrUnsupported so that the port check reports Critical rather than a
// guess.
func Listening(pid, port int) (bool, error) {
	return listening(pid, port, nil)
}

func listening(pid, port int, _ *socketHolder) (bool, error) {
	return false, fmt.Errorf("listening check for pid %d, port %d: %w", pid, port, errors.ErrUnsupported)
}
