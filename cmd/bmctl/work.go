package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/ops"
)

func init() { commands = append(commands, newWorkCmd) }

func newWorkCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "work",
		Short: "Act on the work the shepherd holds on machines",
	}
	asGroup(cmd)
	cmd.AddCommand(newWorkCancelCmd(a))
	return cmd
}

func newWorkCancelCmd(a *app) *cobra.Command {
	var wait time.Duration
	cmd := a.wire(&cobra.Command{
		Use:   "cancel <machine>... [--process P]",
		Short: "Cancel work held on machines",
		Long: `Cancels the work held on machines (only --process's, if given).

Work whose session is alive is asked to cancel: its holder sees the request
when it renews its session, stops and ends the work as Canceled, within a few
seconds. Work whose session is dead (past its deadline) can no longer be ended
by its holder, so its lock is broken at once. The history records
CancelRequested or LockBroken with the operator and --reason. --wait waits
that long for the holders to end the work, and fails if one has not.

A cancel is not a hold: the process may claim the machine again at once. To
keep it off, 'bmctl hold' the machine first.
` + opsHelp,
		Example: `  bmctl work cancel srv-1234 --process Recovery --reason "wrong rack"
  bmctl work cancel --location fra1 --process AgentStart --dry-run`,
	}, machineAction{
		processHelp: "cancel only this process's work (AgentStart, Recovery, Access)",
		reasonHelp:  "why, recorded with the request",
		build: func(ms []uuid.UUID, p bmdb.Process, reason string) ops.Action {
			return ops.CancelWork{Machines: ms, Process: p, Reason: reason}
		},
		after: func(ctx context.Context, db bmdb.DBTX, res ops.Result) error {
			if wait <= 0 {
				return nil
			}
			wctx, cancel := context.WithTimeout(ctx, wait)
			defer cancel()
			left, err := ops.WaitCanceled(wctx, db, res.Changes, 200*time.Millisecond)
			if err != nil {
				return err
			}
			if len(left) > 0 {
				return fmt.Errorf("after %s, %d holder(s) had not ended the work they were asked to cancel (first: %s on machine %s); the request stays on the work",
					wait, len(left), left[0].Process, left[0].MachineID)
			}
			return nil
		},
	})
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait this long for the holders to end the work (0: do not wait)")
	return cmd
}
