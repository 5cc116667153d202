package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is stamped by the Makefile with -ldflags "-X main.version=..." (git
// describe). Empty: the build info's module version or VCS revision.
var version string

// buildVersion is what --version reports: the stamped version, else the
// module version (`go install ...@v1.2.3`), else the VCS revision the build
// recorded ("-dirty" when the tree was modified), else "dev". GOFLAGS holds
// -buildvcs=false on some machines, so a plain `go build` may record none:
// that is why the Makefile stamps.
func buildVersion(info *debug.BuildInfo, ok bool) string {
	if version != "" {
		return version
	}
	if !ok || info == nil {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return rev
}

// The words that start a shell completion request. cobra's scripts ask
// `svcwrap __complete ARGS...`; the scripts svcwrap prints ask with these
// instead, which hold a "/" and so can never be a service name: any SERVICE,
// "__complete" included, stays a service.
const (
	completeRequest       = "/" + cobra.ShellCompRequestCmd
	completeNoDescRequest = "/" + cobra.ShellCompNoDescRequestCmd
)

// completionShells are the shells --completion prints a script for.
var completionShells = []string{"bash", "zsh", "fish", "powershell"}

// completionHelp ends the --help and the man page's description.
const completionHelp = `Shell completion: svcwrap --completion SHELL prints the script for bash, zsh,
fish or powershell; for example
  svcwrap --completion bash > /usr/share/bash-completion/completions/svcwrap
  svcwrap --completion zsh > "${fpath[1]}/_svcwrap"
  svcwrap --completion fish > ~/.config/fish/completions/svcwrap.fish`

// addCompletion adds --completion SHELL, the way to the completion scripts
// (a subcommand would take a service name: `svcwrap completion -- true` runs
// a service called "completion"), and what the scripts complete: flags and
// the values of those with a fixed set, nothing for SERVICE, files after it.
func addCompletion(cmd *cobra.Command) {
	cmd.Flags().String("completion", "", "print the shell completion script for SHELL ("+strings.Join(completionShells, ", ")+") to stdout and exit")
	cmd.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp // SERVICE: a name of the user's
		}
		return nil, cobra.ShellCompDirectiveDefault
	}
	for flag, values := range map[string][]string{
		"completion": completionShells,
		"deregister": {"on-exit", "on-success", "never"},
		"reap":       {"auto", "always", "never"},
		"log-format": {"text", "json"},
	} {
		if cmd.Flags().Lookup(flag) != nil {
			_ = cmd.RegisterFlagCompletionFunc(flag, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
}

// execute does what cobra's Execute does for a command without subcommands,
// except look for one: cobra would take a SERVICE named "completion",
// "help" or "__complete" for its own command of that name. It handles
// --help, --version and --completion, and otherwise runs cmd.RunE.
//
// Flags are read only up to where the command begins (see commandStart):
// a command's own flags (`svcwrap web nc -l 9999`) are not svcwrap's, so
// the error is the missing --, not an unknown flag.
func execute(cmd *cobra.Command, args []string) error {
	if len(args) > 0 && (args[0] == completeRequest || args[0] == completeNoDescRequest) {
		cmd.SetArgs(append([]string{strings.TrimPrefix(args[0], "/")}, args[1:]...))
		return cmd.Execute()
	}
	cmd.InitDefaultHelpFlag()
	cmd.InitDefaultVersionFlag()
	fs := cmd.Flags()
	at, err := commandStart(fs, args)
	if err != nil {
		return err
	}
	var command []string
	if at >= 0 {
		args, command = args[:at], args[at:]
	}
	if err := cmd.ParseFlags(args); err != nil {
		return err
	}
	if help, _ := fs.GetBool("help"); help {
		return cmd.Help()
	}
	if v, _ := fs.GetBool("version"); v {
		_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s version %s\n", cmd.Name(), cmd.Version)
		return err
	}
	if fs.Changed("completion") {
		shell, _ := fs.GetString("completion")
		return completionScript(cmd, shell, cmd.OutOrStdout())
	}
	return cmd.RunE(cmd, append(fs.Args(), command...))
}

// commandStart is the index of the word where the command begins when the
// -- before it is missing, else -1. Flags may come before and after SERVICE,
// as ianitor's argparse allowed; after SERVICE, a word that is neither a
// flag, nor the value of a flag that takes one, nor -- is the command's
// first word. Words are read as pflag reads them, and fs says which flags
// take a value: those without a NoOptDefVal (bools and -v have one). So a
// command's own -- (`svcwrap web rsync -a -- src dst`) is the command's.
//
// A word before the first --, where SERVICE belongs, that begins with "-"
// and is no flag of svcwrap's is refused: a service name cannot begin with
// "-" (it would read as a flag).
func commandStart(fs *pflag.FlagSet, args []string) (int, error) {
	service := false
	unknown := -1 // the last word that looked like a flag svcwrap lacks
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if !service && unknown == i-1 && unknown >= 0 {
				return -1, fmt.Errorf("%s before --: not a flag of svcwrap's, and a service name cannot begin with \"-\"", args[unknown])
			}
			return -1, nil
		case strings.HasPrefix(a, "--"):
			name, _, inline := strings.Cut(a[2:], "=")
			f := fs.Lookup(name)
			switch {
			case f == nil:
				unknown = i
			case !inline && f.NoOptDefVal == "":
				i++ // its value, whatever it looks like
			}
		case len(a) > 1 && a[0] == '-':
			n, known := shorthandValue(fs, a[1:])
			if !known {
				unknown = i
			}
			i += n
		case service:
			return i, nil
		default:
			service = true
		}
	}
	return -1, nil
}

// shorthandValue reads a word of shorthands (-vv, -p80, -p 80) as pflag
// does: n is 1 when the next word is the last shorthand's value. known is
// false for a shorthand svcwrap lacks, which pflag reports.
func shorthandValue(fs *pflag.FlagSet, shorthands string) (n int, known bool) {
	for j := 0; j < len(shorthands); j++ {
		f := fs.ShorthandLookup(shorthands[j : j+1])
		switch {
		case f == nil:
			return 0, false
		case f.NoOptDefVal != "":
			continue
		case j+1 < len(shorthands):
			return 0, true // -p80, -p=80: the value is in the word
		default:
			return 1, true
		}
	}
	return 0, true
}

// completionScript writes cobra's completion script for shell, its request
// word changed to completeRequest.
func completionScript(cmd *cobra.Command, shell string, w io.Writer) error {
	var b strings.Builder
	var err error
	switch shell {
	case "bash":
		err = cmd.GenBashCompletionV2(&b, true)
	case "zsh":
		err = cmd.GenZshCompletion(&b)
	case "fish":
		err = cmd.GenFishCompletion(&b, true)
	case "powershell":
		err = cmd.GenPowerShellCompletionWithDesc(&b)
	default:
		return fmt.Errorf("--completion %q: want one of %s", shell, strings.Join(completionShells, ", "))
	}
	if err != nil {
		return fmt.Errorf("--completion %s: %w", shell, err)
	}
	// Each script has exactly one request: " __complete " after the
	// program's name. A script without it would ask the wrong question.
	script := b.String()
	req := " " + cobra.ShellCompRequestCmd + " "
	if strings.Count(script, req) != 1 {
		return fmt.Errorf("--completion %s: cobra's script has %d completion requests, want 1", shell, strings.Count(script, req))
	}
	_, err = io.WriteString(w, strings.Replace(script, req, " "+completeRequest+" ", 1))
	return err
}
