package check

import (
	"testing"
	"time"
)

// SetDrainAfterExit makes a script's output be read for d after it exits,
// until the end of the test.
func SetDrainAfterExit(tb testing.TB, d time.Duration) {
	before := drainAfterExit
	drainAfterExit = d
	tb.Cleanup(func() { drainAfterExit = before })
}
