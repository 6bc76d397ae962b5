package main

import (
	"time"

	"github.com/google/uuid"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
	"github.com/bmctl/bmctl/pkg/ops"
)

func init() { commands = append(commands, newBackoffCmd) }

func newBackoffCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "backoff",
		Aliases: []string{"backoffs"},
		Short:   "List and clear the backoffs that keep processes off machines",
	}
	asGroup(cmd)
	cmd.AddCommand(newBackoffListCmd(a), newBackoffClearCmd(a))
	return cmd
}

func newBackoffListCmd(a *app) *cobra.Command {
	var (
		output, process, machine string
		active                   bool
	)
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List backoffs, the ones ending soonest first",
		Long: `Lists backoffs: which process leaves which machine alone, until when and why.
An expired backoff no longer keeps the machine out, but the next failure grows
from its interval; --active shows only the unexpired ones.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(output, "table", "json")
			if err != nil {
				return err
			}
			var f fleet.BackoffFilter
			f.ActiveOnly = active
			if process != "" {
				if f.Process, err = bmdb.ParseProcess(process); err != nil {
					return usageError{err}
				}
			}
			ctx := cmd.Context()
			conn, err := a.connectAs(ctx, bmdb.RoleOperator)
			if err != nil {
				return err
			}
			defer conn.Close()
			if machine != "" {
				if f.Machine, err = resolveMachine(ctx, conn.Pool, machine, false); err != nil {
					return err
				}
			}
			list, err := fleet.ListBackoffs(ctx, conn.Pool, f)
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSONList(a.Out, list)
			}
			return a.printTable(backoffTable(list, time.Now()))
		},
	}
	f := cmd.Flags()
	f.StringVar(&process, "process", "", "only this process's backoffs (AgentStart, Recovery, Access)")
	f.StringVar(&machine, "machine", "", "only this machine's backoffs (UUID, prefix or provider id)")
	f.BoolVar(&active, "active", false, "only backoffs that have not expired")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("process", completeProcesses)
	_ = cmd.RegisterFlagCompletionFunc("machine", a.completeMachines(false))
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func backoffTable(list []fleet.BackoffInfo, now time.Time) *table {
	t := newTable("MACHINE", "PROVIDER ID", "PROCESS", "UNTIL ("+zoneName()+")", "ENDS", "STATUS", "INTERVAL", "CAUSE").flex("PROVIDER ID", "CAUSE")
	for _, b := range list {
		t.add(fleet.ShortID(b.MachineID), orDash(b.ProviderID), shortProcess(string(b.Process)), localTime(b.Until), age(b.Until, now),
			backoffStatus(b), span(time.Duration(b.LastIntervalSeconds)*time.Second), orDash(b.Cause))
	}
	return t
}

func newBackoffClearCmd(a *app) *cobra.Command {
	return a.wire(&cobra.Command{
		Use:   "clear <machine>...",
		Short: "Clear machines' backoffs so their processes may act on them now",
		Long: `Clears backoffs (only --process's, if given), active or expired, so the
process may act on the machine at once and its next failure starts again from
the initial interval. Each cleared backoff is recorded in the machine's history
as a BackoffCleared event naming the operator.
` + opsHelp,
		Example: `  bmctl backoff clear 3f2a
  bmctl backoff clear srv-1234 --process AgentStart
  bmctl backoff clear --location fra1 --process Recovery --dry-run`,
	}, machineAction{
		processHelp: "clear only this process's backoffs (AgentStart, Recovery, Access)",
		build: func(ms []uuid.UUID, p bmdb.Process, _ string) ops.Action {
			return ops.ClearBackoff{Machines: ms, Process: p}
		},
	})
}
