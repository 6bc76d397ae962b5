package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/charmbracelet/x/term"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/demo"
	"github.com/bmctl/bmctl/pkg/tui"
)

func init() { commands = append(commands, newDemoCmd) }

// demoDB is the embedded cluster's database for the demo, apart from the
// user's own bmdb so that --fresh never touches it.
const demoDB = "bmdb_demo"

func newDemoCmd(a *app) *cobra.Command {
	var (
		cfg      demo.Config
		fresh    bool
		noTUI    bool
		duration time.Duration
		logFile  string
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole system on this machine: a simulated fleet, the endpoint, the shepherd and the live view",
		Long: `Runs a simulated fleet of machines, each a real SSH server on 127.0.0.1 that
runs the real agent when the shepherd starts it, the real heartbeat endpoint,
the shepherd's loops, and for each machine a simulated Redfish BMC (HTTPS with
the demo's CA, sessions, a power state that changes after a delay and takes the
machine's SSH server down and up) that Recovery reboots it through, against the
embedded database (or --db), and opens 'bmctl machines watch' on it.

Faults are injected at --failure-rate, seeded by --seed: SSH refusals after a
reboot, agents that fail to start, agents that stop heart-beating, BMCs that
allow only some reset types, list them only through ActionInfo, or restart
without showing Off, and BMCs that for a while time out, answer resets with an
error, or rate-limit. Thresholds are seconds, so machines move through AgentStart,
backoff and Recovery within a minute. q or Ctrl-C shuts everything down.
A second run resumes where the last one stopped; --fresh starts over.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Machines < 1 || cfg.Machines > 5000 {
				return usageError{fmt.Errorf("--machines must be between 1 and 5000, got %d", cfg.Machines)}
			}
			if cfg.FailureRate < 0 || cfg.FailureRate > 1 {
				return usageError{fmt.Errorf("--failure-rate must be between 0 and 1, got %v", cfg.FailureRate)}
			}
			if !noTUI {
				if out, ok := a.Out.(*os.File); !ok || !term.IsTerminal(out.Fd()) {
					return usageError{errors.New("the demo's live view needs a terminal; run with --no-tui to run it headless")}
				}
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Self = self
			cfg.StateDir = filepath.Join(stateDir(), "demo")
			if fresh {
				if err := os.RemoveAll(cfg.StateDir); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
				return err
			}
			if logFile == "" {
				logFile = filepath.Join(cfg.StateDir, "demo.log")
			}
			log, closeLog, err := a.fileLogger(logFile)
			if err != nil {
				return err
			}
			defer closeLog()
			cfg.Logger = log

			ctx := cmd.Context()
			url, err := a.demoDatabase(ctx, fresh)
			if err != nil {
				return err
			}
			conn, err := bmdb.Open(ctx, url)
			if err != nil {
				return err
			}
			defer conn.Close()
			cfg.Conn = conn

			runCtx, stop := context.WithCancel(ctx)
			defer stop()
			if duration > 0 {
				runCtx, stop = context.WithTimeout(runCtx, duration)
				defer stop()
			}
			done := make(chan error, 1)
			go func() { done <- demo.Run(runCtx, cfg) }()
			fmt.Fprintf(a.Err, "bmctl: demo of %d machines running (failure rate %v, seed %d); logs in %s\n", cfg.Machines, cfg.FailureRate, cfg.Seed, logFile)
			fmt.Fprintf(a.Err, "bmctl: more shepherds can join: set -a; . %s; set +a; bmctl shepherd run\n", filepath.Join(cfg.StateDir, demo.JoinFile))

			if !noTUI {
				err := a.demoWatch(runCtx, conn, log)
				stop()
				fmt.Fprintln(a.Err, "bmctl: shutting the demo down")
				if err != nil {
					<-done
					return err
				}
			}
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
			fmt.Fprintln(a.Err, "bmctl: demo stopped; run it again to resume, or with --fresh to start over")
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&cfg.NoShepherd, "no-shepherd", false, "run the fleet and the endpoint only; shepherds started with the state directory's "+demo.JoinFile+" work it")
	f.IntVar(&cfg.Machines, "machines", 50, "machines in the simulated fleet")
	f.Float64Var(&cfg.FailureRate, "failure-rate", 0.15, "probability of each fault (0 to 1)")
	f.Uint64Var(&cfg.Seed, "seed", 1, "seed of the faults, for reproducible runs")
	f.BoolVar(&fresh, "fresh", false, "start over: forget the previous run's fleet, history and keys")
	f.BoolVar(&noTUI, "no-tui", false, "run headless, without the live view")
	f.DurationVar(&duration, "duration", 0, "stop after this long (default: until q or Ctrl-C)")
	f.StringVar(&logFile, "log-file", "", "log file (default: demo.log in the demo's state directory)")

	return cmd
}

// demoDatabase is --db when given, else the embedded cluster's demo
// database; --fresh empties it first. It is migrated either way.
func (a *app) demoDatabase(ctx context.Context, fresh bool) (string, error) {
	url := a.dbURL
	if url == "" {
		var err error
		if url, err = a.embedded(ctx, demoDB); err != nil {
			return "", err
		}
		if fresh {
			c := embeddedCluster()
			admin, err := pgx.Connect(ctx, c.URL("postgres"))
			if err != nil {
				return "", err
			}
			_, err = admin.Exec(ctx, "DROP DATABASE "+demoDB+" WITH (FORCE)")
			admin.Close(ctx)
			if err != nil {
				return "", err
			}
			if err := c.CreateDatabase(ctx, demoDB); err != nil {
				return "", err
			}
		}
	} else if fresh {
		return "", usageError{errors.New("--fresh empties only the embedded demo database; with --db, empty your database yourself")}
	}
	return url, bmdb.MigrateUp(url)
}

// demoWatch opens the live view on the demo, with the demo's thresholds.
func (a *app) demoWatch(ctx context.Context, conn *bmdb.Conn, log *slog.Logger) error {
	model := tui.New(tui.Options{
		Source:  tui.FleetSource{DB: conn.Pool, Thresholds: demo.Thresholds},
		Events:  tui.Listen(ctx, conn.URL(), log),
		Refresh: 2 * time.Second,
		Log:     log,
	})
	return a.runView(ctx, a.Out.(*os.File), model)
}
