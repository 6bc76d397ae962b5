package main

import (
	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/ops"
)

func init() { commands = append(commands, newRecoverCmd) }

func newRecoverCmd(a *app) *cobra.Command {
	var o opsFlags
	cmd := &cobra.Command{
		Use:   "recover <machine>...",
		Short: "Ask Recovery to reboot machines now, whatever their heartbeat says",
		Long: `Makes machines Recovery candidates now, whatever their heartbeat says: the
shepherd reboots each through its provider (after any active Recovery backoff
and work already held on it). An operator's request passes an open breaker.
The request lasts until Recovery succeeds (it clears the agent's tags and the
request with them); a machine without a started agent is AgentStart's and is
left alone. Each request is a RecoveryRequested event in the machine's history.
` + opsHelp,
		Example: `  bmctl recover srv-1234
  bmctl recover --state heartbeat_stale --location fra1 --dry-run`,
		ValidArgsFunction: a.completeMachines(false),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runOps(cmd.Context(), &o, args, func(ms []uuid.UUID) ops.Action {
				return ops.RequestRecovery{Machines: ms}
			}, nil)
		},
	}
	o.register(cmd)
	return cmd
}
