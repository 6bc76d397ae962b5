package main

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Settings: every flag of every command can also be set by an environment
// variable and by the config file, so that a daemon's unit needs no command
// line. Nothing here lists flags: the keys come from the command tree, so a
// flag added to any command is configurable at once.
//
// Precedence: the command line, then the environment (BMCTL_<FLAG>, dashes as
// underscores, unless the flag names its own variables), then the config
// file, then the flag's default.
//
// The config file's keys are flag names, grouped by command:
//
//	db: postgres://bmdb.example/bmdb
//	log-format: json
//	shepherd:
//	  agentstart-parallelism: 16   # any flag of shepherd or its subcommands
//	  run:
//	    max-machines: 40           # the most specific key wins
//
// A key applies to the flag of that name on its command and on every command
// below it; a top-level key applies everywhere. Unknown keys and values the
// flag does not accept are errors naming the file, the line and the key.

const (
	envAnnotation    = "bmctl_env"    // the flag's environment variables, the first set wins
	secretAnnotation = "bmctl_secret" // "url": mask a URL's password; "all": mask the whole value
	systemConfig     = "/etc/bmctl/config.yaml"
)

// setEnvVars makes flag name on fs read vars instead of BMCTL_<NAME>.
func setEnvVars(fs *pflag.FlagSet, name string, vars ...string) {
	if err := fs.SetAnnotation(name, envAnnotation, vars); err != nil {
		panic(err) // a misspelt flag name in this program
	}
}

// markSecret makes config view mask flag name's value; how is "url" or "all".
func markSecret(fs *pflag.FlagSet, name, how string) {
	if err := fs.SetAnnotation(name, secretAnnotation, []string{how}); err != nil {
		panic(err)
	}
}

// envName is a flag's default environment variable: BMCTL_AGENT_ENDPOINT
// for --agent-endpoint.
func envName(flag string) string {
	return "BMCTL_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func flagEnvVars(f *pflag.Flag) []string {
	if vs, ok := f.Annotations[envAnnotation]; ok {
		return vs
	}
	return []string{envName(f.Name)}
}

// configurable says whether the environment and the file may set f.
func configurable(f *pflag.Flag) bool {
	return !f.Hidden && f.Name != "help" && f.Name != "version" && f.Name != "config"
}

// configFile is a parsed config file: each setting by its dotted key.
type configFile struct {
	path   string
	values map[string]*yaml.Node // "shepherd.agentstart-parallelism" -> its value (scalar or sequence)
	keys   map[string]int        // the line of each key
}

// findConfig is the config file to read: --config, else $BMCTL_CONFIG,
// else the first of $XDG_CONFIG_HOME/bmctl/config.yaml and
// /etc/bmctl/config.yaml that exists; "" for none. A file named by the flag
// or the variable must exist (loadConfig says so).
func findConfig(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if p := os.Getenv("BMCTL_CONFIG"); p != "" {
		return p
	}
	for _, p := range configSearchPath() {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// configSearchPath is where bmctl looks for a config file no one named.
func configSearchPath() []string {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		if home, err := os.UserHomeDir(); err == nil {
			dir = filepath.Join(home, ".config")
		}
	}
	var ps []string
	if dir != "" {
		ps = append(ps, filepath.Join(dir, "bmctl", "config.yaml"))
	}
	return append(ps, systemConfig)
}

// loadConfig reads and parses path ("" gives an empty configuration).
func loadConfig(path string) (*configFile, error) {
	cf := &configFile{path: path, values: map[string]*yaml.Node{}, keys: map[string]int{}}
	if path == "" {
		return cf, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, usageError{fmt.Errorf("config file: %w", err)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, usageError{fmt.Errorf("config file %s: %v", path, strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	if len(doc.Content) == 0 {
		return cf, nil // empty, or only comments
	}
	if err := cf.walk(doc.Content[0], ""); err != nil {
		return nil, usageError{err}
	}
	return cf, nil
}

// walk records the settings under mapping node m, whose keys sit under prefix.
func (cf *configFile) walk(m *yaml.Node, prefix string) error {
	if m.Kind == yaml.AliasNode {
		m = m.Alias
	}
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: %s: want a mapping of settings (key: value)", cf.path, m.Line, orTop(prefix))
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := k.Value
		if prefix != "" {
			key = prefix + "." + k.Value
		}
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if line, dup := cf.keys[key]; dup {
			return fmt.Errorf("%s:%d: %s: set twice, first at line %d", cf.path, k.Line, key, line)
		}
		cf.keys[key] = k.Line
		if v.Kind == yaml.MappingNode {
			if err := cf.walk(v, key); err != nil {
				return err
			}
			continue
		}
		cf.values[key] = v
	}
	return nil
}

func orTop(prefix string) string {
	if prefix == "" {
		return "the top level"
	}
	return prefix
}

// check refuses keys that name no command or flag, and values their flags
// reject. It sets the values on a copy of the command tree, so every
// command's keys are checked, not just those of the command that runs.
func (cf *configFile) check(tree *cobra.Command) error {
	keys := make([]string, 0, len(cf.keys))
	for k := range cf.keys {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cf.keys[a] - cf.keys[b] })
	for _, key := range keys {
		at := fmt.Sprintf("%s:%d: %s", cf.path, cf.keys[key], key)
		parts := strings.Split(key, ".")
		cmd := tree
		for _, p := range parts[:len(parts)-1] {
			if cmd = subcommand(cmd, p); cmd == nil {
				return usageError{fmt.Errorf("%s: unknown key: bmctl has no command %q; keys are flag names, grouped by command", at, strings.Join(parts[:len(parts)-1], " "))}
			}
		}
		name := parts[len(parts)-1]
		v, isSetting := cf.values[key]
		if !isSetting { // a mapping: a group of settings for a command
			if subcommand(cmd, name) == nil {
				return usageError{fmt.Errorf("%s: unknown key: %s has no subcommand %q to group settings under", at, cmd.CommandPath(), name)}
			}
			continue
		}
		if v.Tag == "!!null" && subcommand(cmd, name) != nil {
			continue // "shepherd:" with nothing under it
		}
		flags := flagsBelow(cmd, name)
		if len(flags) == 0 {
			return usageError{fmt.Errorf("%s: unknown key: neither %s nor a command below it has a flag --%s (see bmctl config default)", at, cmd.CommandPath(), name)}
		}
		for _, f := range flags {
			if err := setFromNode(f, v); err != nil {
				return usageError{fmt.Errorf("%s: bad value for --%s: %v", at, name, err)}
			}
		}
	}
	return nil
}

func subcommand(cmd *cobra.Command, name string) *cobra.Command {
	for _, c := range cmd.Commands() {
		if c.Name() == name || c.HasAlias(name) {
			return c
		}
	}
	return nil
}

// flagsBelow is every configurable flag called name that cmd or a command
// below it has, its own or inherited.
func flagsBelow(cmd *cobra.Command, name string) []*pflag.Flag {
	var fs []*pflag.Flag
	var visit func(c *cobra.Command)
	visit = func(c *cobra.Command) {
		f := c.LocalFlags().Lookup(name)
		if f == nil {
			f = c.InheritedFlags().Lookup(name)
		}
		if f != nil && configurable(f) && !slices.Contains(fs, f) {
			fs = append(fs, f)
		}
		for _, sub := range c.Commands() {
			visit(sub)
		}
	}
	visit(cmd)
	return fs
}

// setFromNode sets f from a YAML value: a scalar as on the command line, a
// sequence as a list flag's items. A null leaves f as it is.
func setFromNode(f *pflag.Flag, v *yaml.Node) error {
	switch {
	case v.Tag == "!!null":
		return nil
	case v.Kind == yaml.ScalarNode:
		if err := f.Value.Set(v.Value); err != nil {
			return err
		}
	case v.Kind == yaml.SequenceNode:
		sv, ok := f.Value.(pflag.SliceValue)
		if !ok {
			return fmt.Errorf("want one value, not a list")
		}
		var items []string
		for _, it := range v.Content {
			if it.Kind != yaml.ScalarNode {
				return fmt.Errorf("want a list of plain values")
			}
			items = append(items, it.Value)
		}
		if err := sv.Replace(items); err != nil {
			return err
		}
	default:
		return fmt.Errorf("want a value")
	}
	f.Changed = true
	return nil
}

// lookup finds the file's setting of flag name for cmd: the most specific
// of <path of cmd>.name, ..., name.
func (cf *configFile) lookup(cmd *cobra.Command, name string) (key string, v *yaml.Node, ok bool) {
	var path []string
	for c := cmd; c.HasParent(); c = c.Parent() {
		path = append([]string{c.Name()}, path...)
	}
	for i := len(path); i >= 0; i-- {
		key := strings.Join(append(path[:i:i], name), ".")
		if v, ok := cf.values[key]; ok && v.Tag != "!!null" {
			return key, v, true
		}
	}
	return "", nil, false
}

// setting is one flag's effective value and where it came from.
type setting struct {
	Command string `json:"command"`
	Flag    string `json:"flag"`
	Value   string `json:"value"`
	Source  string `json:"source"`         // flag, env, file or default
	From    string `json:"from,omitempty"` // the variable, or file:line key
	secret  string
}

// resolve says where cmd's flag f takes its value from; given says whether
// it was on the command line.
func (cf *configFile) resolve(cmd *cobra.Command, f *pflag.Flag, given bool) setting {
	s := setting{Command: cmd.CommandPath(), Flag: f.Name, Source: "default", Value: f.DefValue}
	if hows := f.Annotations[secretAnnotation]; len(hows) > 0 {
		s.secret = hows[0]
	}
	switch {
	case given:
		s.Source, s.From, s.Value = "flag", "--"+f.Name, f.Value.String()
		return s
	case !configurable(f):
		return s
	}
	for _, name := range flagEnvVars(f) {
		if v := os.Getenv(name); v != "" {
			s.Source, s.From, s.Value = "env", name, v
			return s
		}
	}
	if key, v, ok := cf.lookup(cmd, f.Name); ok {
		s.Source, s.From = "file", fmt.Sprintf("%s:%d %s", cf.path, cf.keys[key], key)
		s.Value = v.Value
		if v.Kind == yaml.SequenceNode {
			var items []string
			for _, it := range v.Content {
				items = append(items, it.Value)
			}
			s.Value = "[" + strings.Join(items, ",") + "]"
		}
	}
	return s
}

// applySettings sets each flag of cmd not given on the command line from
// the environment or the config file. Root's PersistentPreRunE calls it, so
// it covers every command.
func (a *app) applySettings(cmd *cobra.Command) error {
	cf, err := a.loadSettings()
	if err != nil {
		return err
	}
	var errs []error
	a.given = map[string]bool{}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		a.given[f.Name] = f.Changed
		s := cf.resolve(cmd, f, f.Changed)
		switch s.Source {
		case "env":
			if err := cmd.Flags().Set(f.Name, s.Value); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", s.From, s.Value, err))
			}
		case "file":
			_, v, _ := cf.lookup(cmd, f.Name)
			if err := setFromNode(f, v); err != nil { // check let it pass: a bug
				errs = append(errs, fmt.Errorf("%s: bad value for --%s: %v", s.From, f.Name, err))
			}
		}
	})
	if len(errs) > 0 {
		return usageError{errs[0]}
	}
	return nil
}

// loadSettings finds, reads and checks the config file once per run.
func (a *app) loadSettings() (*configFile, error) {
	if a.settings != nil {
		return a.settings, nil
	}
	cf, err := loadConfig(findConfig(a.configPath))
	if err != nil {
		return nil, err
	}
	if len(cf.keys) > 0 {
		if err := cf.check(newRootCmd(discardStreams())); err != nil {
			return nil, err
		}
	}
	a.settings = cf
	return cf, nil
}

func discardStreams() streams {
	return streams{In: strings.NewReader(""), Out: nopWriter{}, Err: nopWriter{}}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

var dsnPassword = regexp.MustCompile(`(password\s*=\s*)('[^']*'|\S+)`)

// masked is the value config view may print.
func (s setting) masked() string {
	switch {
	case s.secret == "" || s.Value == "":
		return s.Value
	case s.secret == "url":
		if u, err := url.Parse(s.Value); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				return u.Redacted()
			}
		}
		return dsnPassword.ReplaceAllString(s.Value, "${1}xxxxx")
	default:
		return "xxxxx"
	}
}

// A command that adds its own PersistentPreRunE must not skip root's, which
// applies the settings.
func init() { cobra.EnableTraverseRunHooks = true }

// choice is a string flag that accepts only some values, so that a bad one
// fails where it is given (command line, environment or file).
type choice struct {
	v       *string
	allowed []string
}

func newChoice(v *string, def string, allowed ...string) *choice {
	*v = def
	return &choice{v: v, allowed: allowed}
}

func (c *choice) String() string { return *c.v }
func (c *choice) Type() string   { return "string" }

func (c *choice) Set(s string) error {
	if !slices.Contains(c.allowed, s) {
		return fmt.Errorf("%q: want %s", s, strings.Join(c.allowed, ", "))
	}
	*c.v = s
	return nil
}
