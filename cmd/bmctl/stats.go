package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

func init() { commands = append(commands, newStatsCmd) }

func newStatsCmd(a *app) *cobra.Command {
	var (
		output     string
		thresholds thresholdFlags
	)
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Count machines per state, work and backoffs per process, sessions",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := outputFormat(output, "table", "json")
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			conn, err := a.connectAs(ctx, bmdb.RoleViewer)
			if err != nil {
				return err
			}
			defer conn.Close()
			st, err := fleet.GetStats(ctx, conn.Pool, thresholds.th)
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSON(a.Out, st)
			}
			return a.printStats(st, time.Now())
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	thresholds.register(cmd)
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (a *app) printStats(st fleet.Stats, now time.Time) error {
	t := newTable("STATE", "MACHINES")
	for _, s := range fleet.States {
		t.add(string(s), fmt.Sprint(st.ByState[s]))
	}
	t.add("total", fmt.Sprint(st.Machines))
	if err := a.printTable(t); err != nil {
		return err
	}
	fmt.Fprintln(a.Out)
	t = newTable("PROCESS", "WORK", "BACKOFFS")
	for _, p := range st.Processes {
		t.add(shortProcess(string(p.Process)), fmt.Sprint(p.Work), fmt.Sprint(p.Backoffs))
	}
	if err := a.printTable(t); err != nil {
		return err
	}
	fmt.Fprintf(a.Out, "\nsessions: %d live, %d expired\n", st.Sessions.Live, st.Sessions.Expired)
	if w := st.OldestWork; w != nil {
		detail := ""
		if w.Detail != "" {
			detail = " (" + w.Detail + ")"
		}
		fmt.Fprintf(a.Out, "oldest work: %s on %s %s%s, since %s, by %s\n", shortProcess(string(w.Process)),
			fleet.ShortID(w.MachineID), orDash(w.ProviderID), detail, timeAndAge(w.StartedAt, now), sessionName(w.SessionComponent, w.SessionHost))
	} else {
		fmt.Fprintln(a.Out, "oldest work: none")
	}
	return nil
}
