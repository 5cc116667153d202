package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's supervisord block is examples/supervisord.conf's own lines,
// in the file's order: a copy that drifted would be copied by readers.
func TestReadme_SupervisordBlockIsTheFiles(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	conf, err := os.ReadFile("examples/supervisord.conf")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(readme), "\n    [program:web]\n")
	require.True(t, ok, "no supervisord block in README.md")
	block, _, _ := strings.Cut("    [program:web]\n"+rest, "\n\n")
	var fileLines []string
	for _, l := range strings.Split(string(conf), "\n") {
		if l != "" && !strings.HasPrefix(l, ";") {
			fileLines = append(fileLines, l)
		}
	}
	at := 0
	for _, l := range strings.Split(block, "\n") {
		l = strings.TrimPrefix(l, "    ")
		for at < len(fileLines) && fileLines[at] != l {
			at++
		}
		assert.Less(t, at, len(fileLines), "README.md's supervisord line is not the file's (or out of its order): %q", l)
	}
}
