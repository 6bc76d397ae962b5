package main

import (
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
	return a.wire(&cobra.Command{
		Use:   "cancel <machine>... [--process P]",
		Short: "Cancel work held on machines",
		Long: `Cancels the work held on machines (only --process's, if given).

Work whose session is alive is asked to cancel: its holder sees the request
when it renews its session, stops and ends the work as Canceled, within a few
seconds. Work whose session is dead (past its deadline) can no longer be ended
by its holder, so its lock is broken at once. The history records
CancelRequested or LockBroken with the operator and --reason.
` + opsHelp,
		Example: `  bmctl work cancel srv-1234 --process Recovery --reason "wrong rack"
  bmctl work cancel --location fra1 --process AgentStart --dry-run`,
	}, machineAction{
		processHelp: "cancel only this process's work (AgentStart, Recovery, Access)",
		reasonHelp:  "why, recorded with the request",
		build: func(ms []uuid.UUID, p bmdb.Process, reason string) ops.Action {
			return ops.CancelWork{Machines: ms, Process: p, Reason: reason}
		},
	})
}
