package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/svcwrap/svcwrap/wrapper"
)

// newLogger logs to stderr at ianitor's levels, -v errors, -vv warnings,
// -vvv everything, and below them wrapper.LevelNotice, shown as NOTICE, which
// is all that the default verbosity shows. -v adds wrapper.LevelEvent, shown
// as EVENT: what svcwrap does, a few lines a run.
func newLogger(w io.Writer, verbose int, format string) *slog.Logger {
	var level slog.Level
	switch verbose {
	case 0:
		level = wrapper.LevelNotice
	case 1:
		level = slog.LevelError
	case 2:
		level = slog.LevelWarn
	default:
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: renderNotice}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// renderNotice names wrapper.LevelNotice NOTICE and wrapper.LevelEvent
// EVENT, which slog would print as ERROR+2 and ERROR+1.
func renderNotice(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.LevelKey {
		switch l, _ := a.Value.Any().(slog.Level); l {
		case wrapper.LevelNotice:
			a.Value = slog.StringValue("NOTICE")
		case wrapper.LevelEvent:
			a.Value = slog.StringValue("EVENT")
		}
	}
	return a
}

// errorLine writes the one line run ends with when svcwrap fails: in text,
// "svcwrap: MSG" on w; with --log-format json, an object at ERROR through
// log, whatever the verbosity, with what log's lines carry (the service ID
// and the child's pid, once known). Errors found before the format is known,
// in parsing the command line, are always text.
func errorLine(w io.Writer, log *slog.Logger, msg string) {
	if h, ok := log.Handler().(*slog.JSONHandler); ok {
		_ = h.Handle(context.Background(), slog.NewRecord(time.Now(), slog.LevelError, msg, 0))
		return
	}
	fmt.Fprintf(w, "svcwrap: %s\n", oneLine(msg))
}
