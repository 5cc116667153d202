package examples_test

// Readers for the example files, and the one rule for turning an example's
// svcwrap command line into one that runs here.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/svcwrap/svcwrap/wrapper"
)

// exampleSvcwrap is where every example expects svcwrap to be installed.
const exampleSvcwrap = "/usr/local/bin/svcwrap"

// iniFile is a file of [section] headers and key=value lines: a systemd unit,
// or a supervisord configuration. Entries keep their order, since some keys
// add up (Environment=) and others take the last value.
type iniFile map[string][]keyValue

type keyValue struct{ key, value string }

// readINI reads path (relative to examples/). Lines ending in a backslash
// continue on the next; lines starting with # or ; are comments.
func readINI(t *testing.T, path string) iniFile {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	file := iniFile{}
	section := ""
	sc := bufio.NewScanner(f)
	var pending string
	for sc.Scan() {
		line := pending + sc.Text()
		pending = ""
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending = cont + " "
			continue
		}
		line = strings.TrimSpace(line)
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
		default:
			key, value, ok := strings.Cut(line, "=")
			require.True(t, ok, "%s: not key=value: %q", path, line)
			file[section] = append(file[section], keyValue{strings.TrimSpace(key), strings.TrimSpace(value)})
		}
	}
	require.NoError(t, sc.Err())
	return file
}

// last returns the last value of key in section, "" if none.
func (f iniFile) last(section, key string) string {
	all := f.all(section, key)
	if len(all) == 0 {
		return ""
	}
	return all[len(all)-1]
}

// all returns every value of key in section; an empty value resets the list,
// as it does in a systemd unit.
func (f iniFile) all(section, key string) []string {
	var out []string
	for _, kv := range f[section] {
		if kv.key == key {
			if kv.value == "" {
				out = nil
				continue
			}
			out = append(out, kv.value)
		}
	}
	return out
}

// list returns the whitespace-separated words of every value of key, as
// systemd reads After=, Wants= and the like.
func (f iniFile) list(section, key string) []string {
	var out []string
	for _, v := range f.all(section, key) {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// environment returns what the unit's Environment= lines set.
func (f iniFile) environment() map[string]string {
	env := map[string]string{}
	for _, v := range f.all("Service", "Environment") {
		for _, word := range splitWords(v) {
			if k, val, ok := strings.Cut(word, "="); ok {
				env[k] = val
			}
		}
	}
	return env
}

// cleanExitStatuses returns the exit statuses a unit counts as success: 0,
// and the numbers SuccessExitStatus= lists (signal names there are about
// deaths by signal, which svcwrap never reports: it exits 128+N instead).
func (f iniFile) cleanExitStatuses(t *testing.T) map[int]bool {
	t.Helper()
	clean := map[int]bool{0: true}
	for _, word := range f.list("Service", "SuccessExitStatus") {
		if n, err := strconv.Atoi(word); err == nil {
			clean[n] = true
		}
	}
	return clean
}

// readUnit reads a systemd unit.
func readUnit(t *testing.T, path string) iniFile { return readINI(t, path) }

// systemdSeconds parses a systemd time span as used by TimeoutStopSec=
// ("30", "30s", "1min 30s"). Empty: systemd's default, 90s.
func systemdSeconds(t *testing.T, v string) time.Duration {
	t.Helper()
	if v == "" {
		return 90 * time.Second
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Duration(n * float64(time.Second))
	}
	norm := strings.NewReplacer(" ", "", "min", "m", "sec", "s").Replace(v)
	d, err := time.ParseDuration(norm)
	require.NoError(t, err, "time span %q", v)
	return d
}

// supervisordProgram is the [program:web] section of supervisord.conf.
const supervisordProgram = "program:web"

// supervisorEnv parses supervisord's environment= value: KEY="value" pairs
// separated by commas, quotes optional.
func supervisorEnv(t *testing.T, value string) map[string]string {
	t.Helper()
	env := map[string]string{}
	var pairs []string
	var cur strings.Builder
	quote := rune(0)
	for _, r := range value {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '"' || r == '\''):
			quote = r
		case quote == 0 && r == ',':
			pairs = append(pairs, cur.String())
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	require.Zero(t, quote, "unbalanced quote in environment=%s", value)
	pairs = append(pairs, cur.String())
	for _, p := range pairs {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		require.True(t, ok, "environment=: not KEY=value: %q", p)
		env[k] = v
	}
	return env
}

// localSupervisordProgram returns supervisord.conf's text with what only this
// machine knows put in: the command line as localArgv makes it, the agent's
// address for CONSUL_HTTP_ADDR, and the log file in dir. Every other line,
// comments included, stays as it is.
func localSupervisordProgram(t *testing.T, dir, agentAddr string, port int, web []string) string {
	t.Helper()
	data, err := os.ReadFile("supervisord.conf")
	require.NoError(t, err)
	var out []string
	section := ""
	replaced := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "[") {
			section = strings.Trim(trimmed, "[]")
		}
		key, value, _ := strings.Cut(trimmed, "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if section == supervisordProgram {
			switch key {
			case "command":
				argv := localArgv(t, splitCommandLine(t, value), port, web)
				line = "command=" + shellJoin(argv)
				replaced[key] = true
			case "environment":
				env := supervisorEnv(t, value)
				require.Contains(t, env, "CONSUL_HTTP_ADDR")
				env["CONSUL_HTTP_ADDR"] = agentAddr
				var pairs []string
				for k, v := range env {
					pairs = append(pairs, fmt.Sprintf("%s=%q", k, v))
				}
				sort.Strings(pairs)
				line = "environment=" + strings.Join(pairs, ",")
				replaced[key] = true
			case "stdout_logfile":
				line = "stdout_logfile=" + dir + "/web.log"
				replaced[key] = true
			}
		}
		out = append(out, line)
	}
	for _, key := range []string{"command", "environment", "stdout_logfile"} {
		require.True(t, replaced[key], "supervisord.conf: no %s= in [%s]", key, supervisordProgram)
	}
	return strings.Join(out, "\n")
}

// shellJoin quotes argv for supervisord's command=, which splits it as a
// POSIX shell would (Python's shlex), without running a shell.
func shellJoin(argv []string) string {
	safe := regexp.MustCompile(`^[A-Za-z0-9_./:=,@+-]+$`)
	words := make([]string, len(argv))
	for i, a := range argv {
		if safe.MatchString(a) {
			words[i] = a
		} else {
			words[i] = "'" + strings.ReplaceAll(a, "'", `'"'"'`) + "'"
		}
	}
	return strings.Join(words, " ")
}

// dockerfile is what the final stage of a Dockerfile sets.
type dockerfile struct {
	entrypoint  []string // nil unless in exec form
	cmd         []string // nil unless in exec form
	env         map[string]string
	stopSignal  string
	healthcheck bool
	expose      []string // ports, without /tcp
}

// readDockerfile reads the instructions of path's last stage.
func readDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	ini := func() dockerfile { return dockerfile{env: map[string]string{}} }
	df := ini()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		execForm := func() []string {
			var argv []string
			if err := json.Unmarshal([]byte(rest), &argv); err != nil {
				t.Errorf("%s: %s %s: not in exec form (a JSON array): %v", path, instr, rest, err)
				return nil
			}
			return argv
		}
		switch strings.ToUpper(instr) {
		case "FROM":
			df = ini()
		case "ENTRYPOINT":
			df.entrypoint = execForm()
		case "CMD":
			df.cmd = execForm()
		case "ENV":
			words := splitWords(rest)
			if len(words) > 0 && !strings.Contains(words[0], "=") {
				df.env[words[0]] = strings.Join(words[1:], " ") // ENV KEY value
				continue
			}
			for _, w := range words {
				k, v, _ := strings.Cut(w, "=")
				df.env[k] = v
			}
		case "STOPSIGNAL":
			df.stopSignal = rest
		case "HEALTHCHECK":
			df.healthcheck = !strings.EqualFold(rest, "NONE")
		case "EXPOSE":
			for _, p := range strings.Fields(rest) {
				df.expose = append(df.expose, strings.TrimSuffix(p, "/tcp"))
			}
		}
	}
	return df
}

// splitCommandLine splits an example's command line into words, as
// supervisord, systemd and a shell agree on for simple lines: whitespace
// between words, '...' and "..." quoting. It refuses $ and %, which each
// manager would expand in its own way.
func splitCommandLine(t *testing.T, line string) []string {
	t.Helper()
	require.NotContains(t, line, "$", "the test does not expand variables: %s", line)
	require.NotContains(t, line, "%", "the test does not expand specifiers: %s", line)
	words := splitWords(line)
	require.NotEmpty(t, words, "empty command line")
	return words
}

// splitWords splits on whitespace outside '...' and "..." (where \" and \\
// are escapes).
func splitWords(s string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	quote := rune(0)
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quote == '"' && r == '\\':
			escaped = true
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// localArgv returns an example's svcwrap command line with what only this
// machine knows put in: the svcwrap under test for /usr/local/bin/svcwrap,
// port for --port's value, and web for the command after "--". Every other
// word stays. The example's own command must listen on the port it gives
// --port, or the example would never pass.
func localArgv(t *testing.T, argv []string, port int, web []string) []string {
	t.Helper()
	require.Equal(t, exampleSvcwrap, argv[0], "the example's svcwrap path")
	dash := slices.Index(argv, "--")
	require.Greater(t, dash, 0, "no -- before the command in %q", argv)
	require.Less(t, dash, len(argv)-1, "no command after -- in %q", argv)
	examplePort := flagValue(t, argv, "--port")
	require.NotEmpty(t, examplePort, "no --port in %q", argv)
	require.Contains(t, strings.Join(argv[dash+1:], " "), ":"+examplePort,
		"the example's command does not listen on --port %s", examplePort)

	out := []string{svcwrapBin}
	for i := 1; i < dash; i++ {
		switch a := argv[i]; {
		case a == "--port":
			out = append(out, a, strconv.Itoa(port))
			i++
		case strings.HasPrefix(a, "--port="):
			out = append(out, "--port="+strconv.Itoa(port))
		case strings.Contains(a, "127.0.0.1:"+examplePort+"/"):
			// --check http://127.0.0.1:PORT/health: the same web
			out = append(out, strings.Replace(a, "127.0.0.1:"+examplePort+"/", "127.0.0.1:"+strconv.Itoa(port)+"/", 1))
		default:
			out = append(out, a)
		}
	}
	out = append(out, "--")
	return append(out, web...)
}

// flagValue returns the value of svcwrap's flag name ("--drain") in argv,
// before "--", or "" if it is not there.
func flagValue(t *testing.T, argv []string, name string) string {
	t.Helper()
	value := ""
	for i := 1; i < len(argv) && argv[i] != "--"; i++ {
		if argv[i] == name {
			require.Less(t, i+1, len(argv), "%s without a value", name)
			value = argv[i+1]
			i++
		} else if v, ok := strings.CutPrefix(argv[i], name+"="); ok {
			value = v
		}
	}
	return value
}

// stopBudget is the longest svcwrap may take to stop after SIGTERM, from its
// flags or SVCWRAP_* variables: deregistration (bounded by --consul-timeout),
// then --drain, then up to --kill-timeout before it SIGKILLs the command.
func stopBudget(t *testing.T, argv []string, env map[string]string) time.Duration {
	t.Helper()
	setting := func(name string, def time.Duration) time.Duration {
		v := flagValue(t, argv, "--"+name)
		if v == "" {
			v = env["SVCWRAP_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))]
		}
		if v == "" {
			return def
		}
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			return time.Duration(n * float64(time.Second))
		}
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "--%s %s", name, v)
		return d
	}
	return setting("consul-timeout", wrapper.DefaultConsulTimeout) +
		setting("drain", 0) +
		setting("kill-timeout", wrapper.DefaultKillTimeout)
}
