package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/ops"
)

func init() {
	commands = append(commands, newHoldCmd, newReleaseCmd, newAttentionCmd, newBreakerCmd)
}

func newHoldCmd(a *app) *cobra.Command {
	var forDur, until string
	var end *time.Time
	cmd := a.wire(&cobra.Command{
		Use:   "hold <machine>... --reason R [--for 4h | --until T] [--process P]",
		Short: "Hold machines: no process starts new work on them until released or expired",
		Long: `Places an operator hold on machines: while it lasts, no process (or only
--process) starts new work on them; work already in flight finishes. A hold
lasts --for a duration or --until a time, else until 'bmctl release'; an
expired hold stops holding by itself and the history says so (HoldExpired).
Holding a machine that is already held for the same processes replaces that
hold. Each hold is recorded as HoldPlaced with the operator and reason.
` + opsHelp,
		Example: `  bmctl hold srv-1234 --reason "disk swap" --for 4h
  bmctl hold --location fra1 --process Recovery --reason "switch maintenance" --until "2026-12-02 06:00"
  bmctl hold 3f2a 77c1 --reason "burn-in" --dry-run`,
	}, machineAction{
		processHelp: "hold only this process off the machines (AgentStart, Recovery, Access); default every process",
		reasonHelp:  "why the machines are held (required)",
		check: func(reason string) (err error) {
			if reason == "" {
				return usageError{errors.New(`hold needs --reason (why the machines are held, e.g. --reason "disk swap")`)}
			}
			end, err = parseEnd(forDur, until, time.Now())
			return err
		},
		build: func(ms []uuid.UUID, p bmdb.Process, reason string) ops.Action {
			return ops.Hold{Machines: ms, Process: p, Reason: reason, Until: end}
		},
	})
	cmd.Flags().StringVar(&forDur, "for", "", `how long the hold lasts ("30m", "4h", "2d")`)
	cmd.Flags().StringVar(&until, "until", "", `when the hold ends ("2026-12-02 06:00", RFC 3339)`)
	return cmd
}

// parseEnd reads --for or --until (at most one); neither is nil: no end.
func parseEnd(forDur, until string, now time.Time) (*time.Time, error) {
	switch {
	case forDur != "" && until != "":
		return nil, usageError{errors.New("give --for or --until, not both")}
	case forDur != "":
		d, err := parseFor("for", forDur)
		if err != nil {
			return nil, err
		}
		t := now.Add(d)
		return &t, nil
	case until != "":
		t, err := parseTime(until)
		if err != nil {
			return nil, usageError{fmt.Errorf(`--until %q is not a time ("2026-12-02 06:00", "2026-12-02", RFC 3339)`, until)}
		}
		if !t.After(now) {
			return nil, usageError{fmt.Errorf("--until %s has already passed; give a time in the future", localTime(t))}
		}
		return &t, nil
	}
	return nil, nil
}

func newReleaseCmd(a *app) *cobra.Command {
	return a.wire(&cobra.Command{
		Use:   "release <machine>...",
		Short: "Release operator holds, so processes act on the machines again",
		Long: `Releases the holds of machines (every hold of each, or only --process's), so
processes start work on them again. Each release is recorded as HoldReleased
with the operator.
` + opsHelp,
		Example: `  bmctl release srv-1234
  bmctl release --location fra1 --process Recovery --reason "switch is back"`,
	}, machineAction{
		processHelp: "release only the hold for this process (AgentStart, Recovery, Access)",
		reasonHelp:  "why, recorded with the release",
		build: func(ms []uuid.UUID, p bmdb.Process, reason string) ops.Action {
			return ops.Release{Machines: ms, Process: p, Reason: reason}
		},
	})
}

func newAttentionCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "attention",
		Short: "Clear the needs-attention marks that keep processes off machines",
	}
	asGroup(cmd)
	cmd.AddCommand(a.wire(&cobra.Command{
		Use:   "clear <machine>...",
		Short: "Clear needs-attention marks, so the process may act on the machines again",
		Long: `Clears the needs-attention marks of machines (only --process's, if given). A
mark is set when a machine exhausts its remediation budget (Recovery tried too
often in the window); the process leaves the machine alone until an operator
clears it. Each clear is recorded as AttentionCleared with the operator.
` + opsHelp,
		Example: `  bmctl attention clear srv-1234 --reason "replaced the PSU"`,
	}, machineAction{
		processHelp: "clear only this process's mark (AgentStart, Recovery, Access)",
		reasonHelp:  "why, recorded with the clear",
		build: func(ms []uuid.UUID, p bmdb.Process, reason string) ops.Action {
			return ops.ClearAttention{Machines: ms, Process: p, Reason: reason}
		},
	}))
	return cmd
}

func newBreakerCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "breaker",
		Short: "Override Recovery's circuit breaker",
	}
	asGroup(cmd)
	var (
		location, reason, forDur string
		o                        = opsFlags{noMachines: true}
	)
	override := &cobra.Command{
		Use:   "override --for D --reason R [--location L]",
		Short: "Force the breaker closed for a bounded time, so Recovery reboots again",
		Long: `Forces Recovery's circuit breaker closed for --for (the fleet's, or with
--location that location's), even while more machines are stale than the
breaker allows: use it when you know the silence is real (the machines are
down, not the network). An override already in place is replaced. Recorded as
BreakerOverridden with the operator and reason (history --all shows it as
machine "(fleet)").

--dry-run prints what would change and changes nothing; on a terminal the
change must be confirmed with y (--yes skips the question).`,
		Example: `  bmctl breaker override --for 30m --reason "rack 7 really lost power"
  bmctl breaker override --location fra1 --for 1h --reason "PDU swap, reboots expected"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if reason == "" {
				return usageError{errors.New(`breaker override needs --reason (why the breaker may be overridden)`)}
			}
			if forDur == "" {
				return usageError{errors.New(`breaker override needs --for (how long, e.g. --for 30m): an override always ends`)}
			}
			d, err := parseFor("for", forDur)
			if err != nil {
				return err
			}
			until := time.Now().Add(d)
			return a.runOps(cmd.Context(), &o, nil, func([]uuid.UUID) ops.Action {
				return ops.OverrideBreaker{Location: location, Until: until, Reason: reason}
			}, nil)
		},
	}
	f := override.Flags()
	f.StringVar(&forDur, "for", "", `how long the override lasts ("30m", "4h"; required)`)
	f.StringVar(&reason, "reason", "", "why (required)")
	f.StringVar(&location, "location", "", "override only this location's breaker (default: the fleet's)")
	o.register(override)
	cmd.AddCommand(override)
	return cmd
}
