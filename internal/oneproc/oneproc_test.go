package oneproc

import (
	"os"
	"runtime"
	"strconv"
	"testing"
)

// The test binary has run this package's init: one P, unless GOMAXPROCS in
// the environment says otherwise.
func TestOneP(t *testing.T) {
	want := 1
	if v, ok := os.LookupEnv("GOMAXPROCS"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("GOMAXPROCS=%q in the test's environment is not a count of Ps", v)
		}
		want = n
	}
	if got := runtime.GOMAXPROCS(0); got != want {
		t.Fatalf("GOMAXPROCS is %d, want %d", got, want)
	}
}
