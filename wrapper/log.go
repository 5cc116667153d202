package wrapper

import (
	"context"
	"log/slog"
)

// LevelNotice is for what an operator must see even at the default verbosity,
// where svcwrap is otherwise silent as ianitor was: a failure to keep Consul
// true that persists (and the moment it heals), and a move to another agent.
// It sorts above slog.LevelError so that -v, -vv and -vvv show it too. Each
// such condition is logged once when it starts and once when it ends, never
// once per retry.
const LevelNotice = slog.LevelError + 2

// LevelEvent is for what svcwrap does, one line per step of its lifecycle:
// the start, each registration and status change in Consul, each signal
// forwarded, each step of a stop, the child's end. A healthy run writes a
// handful of them, none repeating, so they show from -v on: that is what an
// operator asking for -v wants to see, besides errors. They sort between
// slog.LevelError and LevelNotice, below what the default verbosity shows.
const LevelEvent = slog.LevelError + 1

// event logs one lifecycle step at LevelEvent.
func event(log *slog.Logger, msg string, args ...any) {
	log.Log(context.Background(), LevelEvent, msg, args...)
}

// describeChecks names what must hold for the service to be passing, for
// the start line: each check by the name it has in Consul until it reports.
func describeChecks(cfg Config) []string {
	var names []string
	for _, c := range plannedChecks(cfg) {
		names = append(names, c.name)
	}
	if len(names) == 0 {
		names = append(names, "command running")
	}
	return names
}

// agentList is every agent's address, in order, for the start line.
func agentList(reg Registry) []string {
	addrs := make([]string, reg.Agents())
	for i := range addrs {
		addrs[i] = reg.Addr(i)
	}
	return addrs
}
