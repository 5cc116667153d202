//go:build mangen

// The man page generator, behind a build tag so that cobra's doc package and
// its markdown-to-roff converter stay out of svcwrap itself:
//
//	go run -tags mangen . FILE     (make man: bin/svcwrap.1)
//
// It writes svcwrap(1) from the very command svcwrap runs (newRoot), so the
// page's flags, defaults and text are the --help's. It runs from init, before
// main, and exits: a build with this tag is the generator, not svcwrap.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra/doc"
)

func init() {
	if len(os.Args) != 2 || strings.HasPrefix(os.Args[1], "-") {
		fmt.Fprintln(os.Stderr, "usage: go run -tags mangen . FILE")
		os.Exit(2)
	}
	if err := writeMan(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// writeMan writes svcwrap(1) to path, through a temporary file so that a
// failed run leaves no half page.
func writeMan(path string) error {
	var opts options
	cmd := newRoot(&opts)
	cmd.InitDefaultVersionFlag() // added when svcwrap runs (execute), not by GenMan
	cmd.DisableAutoGenTag = true // the page stays the same from one run to the next
	// The text goes through markdown on its way to roff, where <FLAG> would
	// be an HTML tag, dropped.
	cmd.Long = strings.ReplaceAll(cmd.Long, "<", `\<`)
	header := &doc.GenManHeader{
		Title:   "SVCWRAP",
		Section: "1",
		Source:  "svcwrap " + cmd.Version,
		Manual:  "User Commands",
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = doc.GenMan(cmd, header, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("svcwrap(1): %w", err)
	}
	return os.Rename(tmp, path)
}
