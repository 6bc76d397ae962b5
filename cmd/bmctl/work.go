package main

import (
	"github.com/google/uuid"
	"github.com/spf13/cobra"

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
	var (
		process, reason string
		o               opsFlags
	)
	cmd := &cobra.Command{
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
		ValidArgsFunction: a.completeMachines(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parseProcess(process)
			if err != nil {
				return err
			}
			return a.runOps(cmd.Context(), &o, args, func(ms []uuid.UUID) ops.Action {
				return ops.CancelWork{Machines: ms, Process: p, Reason: reason}
			})
		},
	}
	cmd.Flags().StringVar(&process, "process", "", "cancel only this process's work (AgentStart, Recovery, Access)")
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded with the request")
	o.register(cmd)
	_ = cmd.RegisterFlagCompletionFunc("process", completeProcesses)
	return cmd
}
