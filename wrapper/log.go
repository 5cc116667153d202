package wrapper

import "log/slog"

// LevelNotice is for what an operator must see even at the default verbosity,
// where svcwrap is otherwise silent as ianitor was: a failure to keep Consul
// true that persists (and the moment it heals), and a move to another agent.
// It sorts above slog.LevelError so that -v, -vv and -vvv show it too. Each
// such condition is logged once when it starts and once when it ends, never
// once per retry.
const LevelNotice = slog.LevelError + 2
