package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

func init() { commands = append(commands, newConfigCmd) }

func newConfigCmd(a *app) *cobra.Command {
	cmd := asGroup(&cobra.Command{
		Use:   "config",
		Short: "Show the effective settings, or a commented config file of every setting",
		Long: `Every flag of every command can also be set by an environment variable and in
the config file; the command line wins, then the environment, then the file,
then the flag's default.

Environment: BMCTL_<FLAG>, dashes as underscores (BMCTL_AGENTSTART_PARALLELISM),
unless the flag's help names another variable (--db: BMCTL_DATABASE_URL).

Config file: --config FILE, else $BMCTL_CONFIG, else the first that exists of
$XDG_CONFIG_HOME/bmctl/config.yaml (~/.config/bmctl/config.yaml) and
` + systemConfig + `. Its keys are flag names, grouped by command; a key
applies to its command and every command below it, the most specific wins:

  db: postgres://bmctl@bmdb.example/bmdb
  log-format: json
  shepherd:
    agentstart-parallelism: 16
    run:
      max-machines: 40

An unknown key or a value its flag rejects is an error naming the file, the
line and the key. Keep secrets (the database password) in the file or the
environment, never on a command line.`,
	})
	cmd.AddCommand(newConfigViewCmd(a), newConfigDefaultCmd(a))
	return cmd
}

func newConfigViewCmd(a *app) *cobra.Command {
	var (
		output string
		all    bool
	)
	cmd := &cobra.Command{
		Use:   "view",
		Short: "Print the effective settings and where each comes from (secrets masked)",
		Long: `Prints each setting that is not at its default (with --all: every setting) of
every command, its value and where it comes from: flag, env (the variable),
file (file:line and key) or default. The top-level settings are always shown.
Passwords in URLs are masked.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(output, "table", "json")
			if err != nil {
				return err
			}
			ss := a.effectiveSettings(cmd, all)
			if format == "json" {
				for i := range ss {
					ss[i].Value = ss[i].masked()
				}
				return writeJSON(a.Out, struct {
					ConfigFile string    `json:"config_file"`
					Settings   []setting `json:"settings"`
				}{a.settings.path, ss})
			}
			if a.settings.path != "" {
				fmt.Fprintf(a.Out, "config file: %s\n\n", a.settings.path)
			} else {
				fmt.Fprintf(a.Out, "config file: none (looked for %s)\n\n", strings.Join(configSearchPath(), ", "))
			}
			t := newTable("COMMAND", "FLAG", "VALUE", "SOURCE").flex("VALUE", "SOURCE")
			for _, s := range ss {
				src := s.Source
				if s.From != "" {
					src += " " + s.From
				}
				t.add(s.Command, "--"+s.Flag, s.masked(), src)
			}
			return a.printTable(t)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().BoolVar(&all, "all", false, "every setting, defaults too")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// effectiveSettings resolves every command's settings as that command would
// (the command line counts only for the flags of run, the command running).
// An inherited flag is listed where a more specific key changes it.
func (a *app) effectiveSettings(run *cobra.Command, all bool) []setting {
	cf := a.settings
	root := run.Root()
	at := func(c *cobra.Command, f *pflag.Flag) setting {
		given := a.given[f.Name] && run.Flags().Lookup(f.Name) == f
		s := cf.resolve(c, f, given)
		if s.Source == "default" && given {
			s.Value = f.Value.String()
		}
		return s
	}
	var out []setting
	eachCommand(root, func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if !configurable(f) {
				return
			}
			if s := at(c, f); all || s.Source != "default" || c == root {
				out = append(out, s)
			}
		})
		c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
			if !configurable(f) {
				return
			}
			if s := at(c, f); s.From != at(c.Parent(), f).From {
				out = append(out, s)
			}
		})
	})
	return out
}

// eachCommand calls fn for cmd and every visible command below it.
func eachCommand(cmd *cobra.Command, fn func(*cobra.Command)) {
	if cmd.Hidden || cmd.Name() == "help" {
		return
	}
	fn(cmd)
	for _, c := range cmd.Commands() {
		eachCommand(c, fn)
	}
}

func newConfigDefaultCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "default",
		Short: "Print a config file of every setting at its default, commented out",
		Long: `Prints every setting of every command as YAML, commented out, each with its
help and default: a starting point for ` + systemConfig + `. Uncomment what you
change; a key left commented keeps its default.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return writeDefaultConfig(a.Out, cmd.Root())
		},
	}
}

// writeDefaultConfig writes every command's settings, commented out.
func writeDefaultConfig(w io.Writer, root *cobra.Command) error {
	var b strings.Builder
	b.WriteString(`# bmctl's configuration. Every setting is a flag name, grouped by command; a
# key applies to its command and to every command below it. The command line
# wins over the environment (BMCTL_<FLAG>), which wins over this file, which
# wins over the defaults shown. Uncomment a line (and the command lines above
# it) to change a setting; see: bmctl config --help, bmctl config view.
#
# The packaged services (bmctl-shepherd, bmctl-endpoint) read this file. Set
# at least db (the endpoint and the shepherds share one BMDB), shepherd: run:
# agent-endpoint, and server: tls-cert and tls-key (or dev-ca-dir), then
# systemctl enable --now bmctl-shepherd bmctl-endpoint.
`)
	writeDefaults(&b, root, -1)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeDefaults writes c's settings, then its subcommands', at depth
// (-1 for the top level, which has no key of its own).
func writeDefaults(b *strings.Builder, c *cobra.Command, depth int) {
	if c.Hidden || !hasSettings(c) {
		return
	}
	switch c.Name() {
	case "help", "completion", "config":
		return
	}
	ind := strings.Repeat("  ", max(depth, 0))
	if depth >= 0 {
		if depth == 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(b, "# %s%s:\n", strings.Repeat("  ", depth), c.Name())
		ind += "  "
	} else {
		b.WriteString("\n")
	}
	c.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if !configurable(f) {
			return
		}
		usage := oneLine(f.Usage)
		if !strings.Contains(usage, "env ") {
			usage += " (env " + strings.Join(flagEnvVars(f), " or ") + ")"
		}
		fmt.Fprintf(b, "# %s# %s\n", ind, usage)
		fmt.Fprintf(b, "# %s%s: %s\n", ind, f.Name, yamlDefault(f))
	})
	for _, sub := range c.Commands() {
		writeDefaults(b, sub, depth+1)
	}
}

// hasSettings says whether c or a command below it has a setting of its own.
func hasSettings(c *cobra.Command) bool {
	found := false
	c.LocalFlags().VisitAll(func(f *pflag.Flag) { found = found || configurable(f) })
	for _, sub := range c.Commands() {
		found = found || (!sub.Hidden && hasSettings(sub))
	}
	return found
}

// yamlDefault is f's default as a YAML value.
func yamlDefault(f *pflag.Flag) string {
	if sv, ok := f.Value.(pflag.SliceValue); ok && !f.Changed {
		var items []string
		for _, it := range sv.GetSlice() {
			q, _ := json.Marshal(it) // quoted: "::1" is no plain YAML in a list
			items = append(items, string(q))
		}
		return "[" + strings.Join(items, ", ") + "]"
	}
	if f.Value.Type() == "string" {
		return yamlString(f.DefValue)
	}
	return f.DefValue
}

func yamlString(s string) string {
	out, _ := yaml.Marshal(s)
	return strings.TrimSpace(string(out))
}
