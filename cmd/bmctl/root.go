package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/localpg"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// streams is where a command reads and writes, so tests can capture it.
type streams struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// app is what every command shares: its I/O and how to reach BMDB.
type app struct {
	streams
	dbURL      string
	logLevel   string
	logFormat  string
	configPath string
	settings   *configFile     // the config file, once read (settings.go)
	given      map[string]bool // the flags given on the command line
}

// commands registers the command groups; each file adds its own in init, so
// command groups stay independent of each other.
var commands []func(*app) *cobra.Command

func newRootCmd(io streams) *cobra.Command {
	a := &app{streams: io}
	root := &cobra.Command{
		Use:   "bmctl",
		Short: "Run and inspect a fleet of bare-metal servers kept in BMDB",
		Long: "Run and inspect a fleet of bare-metal servers kept in BMDB.\n\n" +
			"Every flag can also be set by a BMCTL_<FLAG> environment variable or in the\n" +
			"config file (" + systemConfig + "); see bmctl config --help.",
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	asGroup(root)
	root.SetIn(io.In)
	root.SetOut(io.Out)
	root.SetErr(io.Err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.configPath, "config", "", "config file (env BMCTL_CONFIG); default: $XDG_CONFIG_HOME/bmctl/config.yaml, else "+systemConfig)
	pf.StringVar(&a.dbURL, "db", "", "BMDB connection URL (env BMCTL_DATABASE_URL); default: the embedded local database")
	setEnvVars(pf, "db", "BMCTL_DATABASE_URL")
	markSecret(pf, "db", "url")
	pf.Var(newChoice(&a.logLevel, "info", "debug", "info", "warn", "error"), "log-level", "log level: debug, info, warn, error")
	pf.Var(newChoice(&a.logFormat, "text", "text", "json"), "log-format", "log lines as text (key=value) or json (one object per line)")
	// Every command's flags not on the command line come from the
	// environment or the config file (settings.go).
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error { return a.applySettings(cmd) }
	for _, c := range commands {
		root.AddCommand(c(a))
	}
	return root
}

// asGroup makes cmd a group of subcommands: without one it prints its help,
// with an unknown one it fails as a usage error.
func asGroup(cmd *cobra.Command) *cobra.Command {
	cmd.Args = cobra.ArbitraryArgs
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) > 0 {
			return usageError{fmt.Errorf("unknown command %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())}
		}
		return cmd.Help()
	}
	return cmd
}

// noArgs rejects positional arguments as a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("%s takes no arguments, got %q", cmd.CommandPath(), args[0])}
	}
	return nil
}

// exactArgs requires n positional arguments, as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s needs %d argument(s), got %d; see --help", cmd.CommandPath(), n, len(args))}
		}
		return nil
	}
}

// envOr is key's value, else def. Not for flag defaults: a flag gets its
// variable through settings.go, which puts it above the config file.
func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// logger writes slog lines to stderr at the configured level, as text or
// as JSON (--log-format).
func (a *app) logger() *slog.Logger { return a.loggerTo(a.Err) }

// loggerTo is logger writing to w.
func (a *app) loggerTo(w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(a.logLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if a.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// embeddedCluster is the local database people get when they configure none.
func embeddedCluster() *localpg.Cluster {
	return &localpg.Cluster{Dir: filepath.Join(stateDir(), "postgres")}
}

// stateDir is bmctl's state directory: $XDG_STATE_HOME/bmctl,
// ~/.local/state/bmctl, or /var/lib/bmctl for root (whose home the
// unprivileged server account cannot enter).
func stateDir() string {
	if d := os.Getenv("BMCTL_STATE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "bmctl")
	}
	if os.Geteuid() == 0 {
		return "/var/lib/bmctl"
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "bmctl")
	}
	return filepath.Join(home, ".local", "state", "bmctl")
}

const embeddedDB = "bmdb"

// databaseURL is the configured database, or the embedded one, started and
// migrated on demand.
func (a *app) databaseURL(ctx context.Context) (string, error) {
	if a.dbURL != "" {
		return a.dbURL, nil
	}
	url, err := a.embedded(ctx, embeddedDB)
	if err != nil {
		return "", err
	}
	return url, bmdb.MigrateUp(url)
}

// embedded starts the embedded cluster if it is not running, saying where,
// and returns the URL of its database db, created if missing (not migrated).
func (a *app) embedded(ctx context.Context, db string) (string, error) {
	c := embeddedCluster()
	if !c.Running() {
		fmt.Fprintf(a.Err, "bmctl: no database configured (--db / BMCTL_DATABASE_URL); starting the embedded one in %s\n", c.Dir)
		if err := c.Start(ctx); err != nil {
			return "", err
		}
	}
	if err := c.CreateDatabase(ctx, db); err != nil {
		return "", err
	}
	return c.URL(db), nil
}

// connectAs is connect, then the start-up check of role's grants: a
// component run under a login that lacks one exits at once naming it.
func (a *app) connectAs(ctx context.Context, role bmdb.Role) (*bmdb.Conn, error) {
	conn, err := a.connect(ctx)
	if err != nil {
		return nil, err
	}
	if err := conn.CheckGrants(ctx, role); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// connectMachine is the first steps of every command about one machine:
// open BMDB with open (a.connect, or a role's check around it) and resolve
// ref. The connection is closed if ref does not resolve.
func (a *app) connectMachine(ctx context.Context, open func(context.Context) (*bmdb.Conn, error), ref string) (*bmdb.Conn, uuid.UUID, error) {
	conn, err := open(ctx)
	if err != nil {
		return nil, uuid.Nil, err
	}
	id, err := resolveMachine(ctx, conn.Pool, ref, false)
	if err != nil {
		conn.Close()
		return nil, uuid.Nil, err
	}
	return conn, id, nil
}

// connect opens BMDB, refusing a schema that is not the one this binary knows.
func (a *app) connect(ctx context.Context) (*bmdb.Conn, error) {
	if a.dbURL == "" {
		// The common case first: the embedded database is up and current.
		if c := embeddedCluster(); c.Running() {
			if conn, err := bmdb.Open(ctx, c.URL(embeddedDB)); err == nil {
				if conn.CheckSchema(ctx) == nil {
					return conn, nil
				}
				conn.Close()
			}
		}
	}
	url, err := a.databaseURL(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	if err := conn.CheckSchema(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}
