// Package check answers "is the child healthy right now?" cheaply and without
// side effects, in the vocabulary of a Consul TTL check: a Status and an output.
//
// Every output is a constant string for a given status and configuration,
// because Consul writes to its servers whenever a check's output changes.
package check

import "strings"

// Status is a check status, ordered from best to worst so that combining checks
// is a comparison. The zero value is Passing: a Result that nobody filled in
// reports healthy, so checks must always set Status explicitly when they fail.
type Status int

// The statuses of a Consul check, in order of badness.
const (
	// Passing means the child is ready for traffic.
	Passing Status = iota
	// Warning means the child still serves but something needs attention
	// (the Nagios/Consul exit code 1).
	Warning
	// Critical means the child must not receive traffic. Any value outside
	// the known range is treated as Critical, so that a bug fails safe.
	Critical
)

// String returns the word Consul's API uses for the status ("passing",
// "warning", "critical"), so it can be sent to the agent as is. Unknown values
// read as "critical": sending an unhealthy status is the safe mistake.
func (s Status) String() string {
	switch s.severity() {
	case Passing:
		return "passing"
	case Warning:
		return "warning"
	default:
		return "critical"
	}
}

// severity maps s onto the three known statuses; anything unknown (negative
// or beyond Critical) counts as Critical so that it can never hide a failure.
func (s Status) severity() Status {
	switch s {
	case Passing, Warning:
		return s
	default:
		return Critical
	}
}

// Result is one evaluation of a check.
//
// Output should be the same from one evaluation to the next while Status
// is: no timestamps, counters or durations, because Consul replicates a check
// to its servers whenever its output changes (a script's first line is the
// script's to keep steady). svcwrap's supervisor adds the child, "(pid N:
// command)" as Describe names it, only when the combined status changes, and
// hands Consul the same output, byte for byte, while it stays.
type Result struct {
	Status Status
	Output string
}

// Worst combines the results of several checks into one, because Consul's TTL
// check carries a single status: the worst status wins, and the outputs of the
// results with that status are joined with "; " in argument order, so the
// output names exactly what is wrong. Empty outputs are left out of the join.
// Unknown statuses count as Critical.
//
// With no results, Worst returns Passing with an empty output: no check means
// nothing is failing (liveness itself comes from the child's exit, not from a
// check).
func Worst(results ...Result) Result {
	worst := Passing
	for _, r := range results {
		worst = max(worst, r.Status.severity())
	}

	var outputs []string
	for _, r := range results {
		if r.Status.severity() == worst && r.Output != "" {
			outputs = append(outputs, r.Output)
		}
	}
	return Result{Status: worst, Output: strings.Join(outputs, "; ")}
}
