package check_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/svcwrap/svcwrap/check"
)

func TestStatus_String(t *testing.T) {
	for status, want := range map[check.Status]string{
		check.Passing:  "passing",
		check.Warning:  "warning",
		check.Critical: "critical",
		// Unknown values fail safe.
		check.Critical + 1: "critical",
		-1:                 "critical",
	} {
		assert.Equal(t, want, status.String(), "Status(%d)", int(status))
	}
}

func TestStatus_order(t *testing.T) {
	// Consul's order of badness, and a zero value that must be set on failure.
	assert.Less(t, check.Passing, check.Warning)
	assert.Less(t, check.Warning, check.Critical)
	assert.Equal(t, check.Passing, check.Result{}.Status)
}

func TestWorst(t *testing.T) {
	var (
		pass  = check.Result{Status: check.Passing, Output: "pass"}
		pass2 = check.Result{Status: check.Passing, Output: "pass2"}
		warn  = check.Result{Status: check.Warning, Output: "warn"}
		warn2 = check.Result{Status: check.Warning, Output: "warn2"}
		crit  = check.Result{Status: check.Critical, Output: "crit"}
		crit2 = check.Result{Status: check.Critical, Output: "crit2"}
	)
	for _, tc := range []struct {
		name    string
		results []check.Result
		want    check.Result
	}{
		{"no results", nil, check.Result{Status: check.Passing}},
		{"one passing", []check.Result{pass}, pass},
		{"one critical", []check.Result{crit}, crit},
		{"all passing", []check.Result{pass, pass2}, check.Result{Status: check.Passing, Output: "pass; pass2"}},
		{"warning beats passing", []check.Result{pass, warn, pass2}, warn},
		{"critical beats warning", []check.Result{warn, crit, pass}, crit},
		{"worst outputs in argument order", []check.Result{crit2, warn, pass, crit}, check.Result{Status: check.Critical, Output: "crit2; crit"}},
		{"several warnings", []check.Result{warn2, pass, warn}, check.Result{Status: check.Warning, Output: "warn2; warn"}},
		{"empty outputs left out", []check.Result{{Status: check.Critical}, crit, {Status: check.Critical}, crit2}, check.Result{Status: check.Critical, Output: "crit; crit2"}},
		{"only empty outputs", []check.Result{{Status: check.Warning}, {Status: check.Warning}}, check.Result{Status: check.Warning}},
		{"unknown status counts as critical", []check.Result{crit, {Status: 7, Output: "odd"}, warn}, check.Result{Status: check.Critical, Output: "crit; odd"}},
		{"negative status counts as critical", []check.Result{pass, {Status: -1, Output: "odd"}}, check.Result{Status: check.Critical, Output: "odd"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, check.Worst(tc.results...))
		})
	}
}
