package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stage is one FROM ... [AS name] of a Dockerfile and its instructions, each
// as written (continuation lines joined).
type stage struct {
	image, name string
	lines       []string
}

// readStages splits path into its build stages.
func readStages(t *testing.T, path string) []stage {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var stages []stage
	for _, line := range strings.Split(strings.ReplaceAll(string(data), "\\\n", " "), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if strings.EqualFold(f[0], "FROM") {
			s := stage{image: f[1]}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				s.name = f[3]
			}
			stages = append(stages, s)
			continue
		}
		require.NotEmpty(t, stages, "%s: %q before the first FROM", path, line)
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	return stages
}

// find returns the instructions of s that start with prefix.
func (s stage) find(prefix string) []string {
	var out []string
	for _, l := range s.lines {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

// The Dockerfile builds svcwrap from the source tree it sits in, in a stage
// of its own, and the image that runs holds the binary alone: no `go
// install` of a published version, no Go toolchain. The build stage's go
// build runs here, on this tree, and stamps the version it is given.
func TestDockerfile_BuildsFromSource(t *testing.T) {
	stages := readStages(t, "Dockerfile")
	require.Len(t, stages, 2, "a build stage and the image that runs")
	build, final := stages[0], stages[1]

	assert.True(t, strings.HasPrefix(build.image, "golang:"), "the build stage has Go: %s", build.image)
	require.NotEmpty(t, build.name, "the build stage is named, for COPY --from")
	assert.Contains(t, build.lines, "COPY . .", "the build stage copies the source tree (the context)")
	assert.Contains(t, build.lines, "WORKDIR /src")
	for _, l := range build.lines {
		assert.NotContains(t, l, "go install", "built from the tree, not fetched: %s", l)
		assert.NotContains(t, l, "@latest", l)
	}
	runs := build.find("RUN CGO_ENABLED=0 go build ")
	require.Len(t, runs, 1, "one go build, static")
	goBuild := strings.TrimPrefix(runs[0], "RUN ")
	assert.Contains(t, goBuild, `-X main.version=${VERSION}`, "the version is stamped")
	assert.Contains(t, build.lines, "ARG VERSION=")

	assert.False(t, strings.HasPrefix(final.image, "golang:"), "no toolchain in the image that runs: %s", final.image)
	df := readDockerfile(t, "Dockerfile") // the last stage's settings
	require.NotEmpty(t, df.entrypoint)
	copies := final.find("COPY --from=" + build.name + " ")
	require.Len(t, copies, 1, "the binary comes from the build stage")
	src, dst := strings.Fields(copies[0])[2], strings.Fields(copies[0])[3]
	assert.Equal(t, df.entrypoint[0], dst, "ENTRYPOINT runs the copied binary")
	assert.Regexp(t, `-o `+regexp.QuoteMeta(src)+` \.$`, goBuild, "go build writes what is copied")

	// .dockerignore at the context's root keeps the agent binary and .git out.
	ignore, err := os.ReadFile("../.dockerignore")
	require.NoError(t, err, "the context is the source tree: it needs a .dockerignore")
	for _, want := range []string{"bin/", ".git"} {
		assert.Contains(t, strings.Fields(string(ignore)), want)
	}

	// The go build line, run in the module root as WORKDIR /src is after
	// COPY . ., with /out in a temporary directory.
	need(t, "sh", "go")
	out := t.TempDir()
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(goBuild, src, filepath.Join(out, "svcwrap")))
	cmd.Dir = ".."
	cmd.Env = append(childEnv(), "VERSION=v0.0.0-dockertest")
	got, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", goBuild, got)
	version, err := exec.Command(filepath.Join(out, "svcwrap"), "--version").Output()
	require.NoError(t, err)
	assert.Equal(t, "svcwrap version v0.0.0-dockertest\n", string(version))
}
