package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/term"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/tui"
)

func init() { machinesSubcommands = append(machinesSubcommands, newMachinesWatchCmd) }

func newMachinesWatchCmd(a *app) *cobra.Command {
	var (
		allowActions bool
		logFile      string
		refresh      time.Duration
		filter       string
		machine      string
		thresholds   thresholdFlags
	)
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Live view of the fleet: machines, state, work, backoffs and history",
		Long: `A full-screen view of the fleet that updates as BMDB changes (LISTEN/NOTIFY,
with a periodic refresh for ages), for a second screen.

Keys: ↑/↓ (j/k) move, enter shows a machine's tags, work, backoffs and history,
esc goes back, / filters (words match id, provider id, address, location and
work step, !text keeps the others; state:NAME and process:NAME narrow), : jumps
to a machine (UUID, prefix or provider id), 1-8 sort by a column (again to
reverse), p pauses updates, c copies the machine id, ? lists every key, q quits.

Read-only unless --allow-actions: then b clears a machine's backoff, r asks
Recovery to act on the machine now, h holds it (asks a reason and how long),
u releases its holds (asks a reason) and x cancels the work held on it, each
after a y/N confirmation that shows exactly what will change, and each
recorded in the machine's history with the operator (BackoffCleared,
RecoveryRequested, HoldPlaced, HoldReleased, CancelRequested or LockBroken;
the same actions as bmctl backoff clear, recover, hold, release and work
cancel). A recovery
request makes the machine a Recovery candidate whatever its heartbeat says
(still after any active Recovery backoff); it lasts until Recovery clears the
agent's tags.

The view owns the terminal: logs go to --log-file, never to the screen.
Colour follows the terminal and NO_COLOR; states are always written out.`,
		Example: `  bmctl machines watch
  bmctl machines watch --filter state:heartbeat_stale --log-file /tmp/watch.log
  bmctl machines watch --allow-actions --machine m-0042`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if refresh < time.Second {
				return usageError{fmt.Errorf("--refresh must be at least 1s, got %s", refresh)}
			}
			out, ok := a.Out.(*os.File)
			if !ok || !term.IsTerminal(out.Fd()) {
				return errors.New("machines watch needs a terminal; for scripts use 'bmctl machines list' (-o json)")
			}
			log, closeLog, err := a.fileLogger(logFile)
			if err != nil {
				return err
			}
			defer closeLog()

			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			role := bmdb.RoleViewer
			if allowActions {
				role = bmdb.RoleOperator
			}
			conn, err := a.connectAs(ctx, role)
			if err != nil {
				return err
			}
			defer conn.Close()
			log.Info("watch started", "allow_actions", allowActions)
			model := tui.New(tui.Options{
				Source:       tui.FleetSource{DB: conn.Pool, Thresholds: thresholds.th},
				Events:       tui.Listen(ctx, conn.URL(), log),
				AllowActions: allowActions,
				Refresh:      refresh,
				Filter:       filter,
				Jump:         machine,
				Log:          log,
			})
			return a.runView(ctx, out, model)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&allowActions, "allow-actions", false, "enable clearing backoffs (b), requesting recovery (r), holds (h), releases (u) and cancelling work (x), each behind a confirmation")
	f.StringVar(&logFile, "log-file", "", "append logs to this file (env BMCTL_WATCH_LOG_FILE); default: no logs")
	setEnvVars(f, "log-file", "BMCTL_WATCH_LOG_FILE")
	f.DurationVar(&refresh, "refresh", 10*time.Second, "periodic refresh besides change notifications, for ages and heartbeats turning stale")
	f.StringVar(&filter, "filter", "", "start with this filter (as typed after /)")
	f.StringVar(&machine, "machine", "", "start with the cursor on this machine (UUID, prefix or provider id)")
	thresholds.register(cmd)
	return cmd
}

// runView runs a full-screen view on out until it quits or ctx ends (a
// signal), which is not an error.
func (a *app) runView(ctx context.Context, out *os.File, model tea.Model) error {
	opts := []tea.ProgramOption{tea.WithContext(ctx), tea.WithOutput(out)}
	if in, ok := a.In.(*os.File); ok {
		opts = append(opts, tea.WithInput(in))
	}
	_, err := tea.NewProgram(model, opts...).Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// fileLogger logs to a file (--log-level, --log-format), since the screen
// belongs to the view.
func (a *app) fileLogger(path string) (*slog.Logger, func(), error) {
	if path == "" {
		return slog.New(slog.DiscardHandler), func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("opening --log-file: %w", err)
	}
	return a.loggerTo(f), func() { f.Close() }, nil
}
