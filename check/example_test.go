package check_test

import (
	"fmt"

	"github.com/svcwrap/svcwrap/check"
)

// Several checks combine into the one status of the TTL check: the worst wins,
// and the output names every check with that status.
func ExampleWorst() {
	r := check.Worst(
		check.Result{Status: check.Passing, Output: "listening on port 9999"},
		check.Result{Status: check.Critical, Output: "GET /health: status 503"},
		check.Result{Status: check.Warning, Output: "disk 91% full"},
		check.Result{Status: check.Critical, Output: "script exited 2"},
	)
	fmt.Println(r.Status)
	fmt.Println(r.Output)
	// Output:
	// critical
	// GET /health: status 503; script exited 2
}
