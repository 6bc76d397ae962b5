package main

import (
	"fmt"
	"io"
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
	printBrakes(a.Out, st.Brakes, now)
	fmt.Fprintf(a.Out, "policy: %s\n", policyLine(st.Policy))
	return nil
}

// printBrakes says where Recovery is stopped and why, holds and marks, and
// whether the heartbeat observer is watching.
func printBrakes(w io.Writer, b bmdb.BrakesStatus, now time.Time) {
	fmt.Fprintf(w, "holds: %d active; needs attention: %d\n", b.Holds, b.Attention)
	if b.Stale {
		fmt.Fprintln(w, "BREAKER: fleet breaker not evaluated lately (no shepherd running Recovery?): Recovery counts it open")
	}
	for _, br := range b.Breakers {
		state := "closed"
		switch {
		case br.Open:
			state = "OPEN: Recovery stopped"
		case br.Tripped && br.Override != nil:
			state = fmt.Sprintf("overridden by %s until %s (%s)", br.Override.Actor, timeAndAge(br.Override.Until, now), br.Override.Reason)
		}
		since := ""
		if br.OpenedAt != nil {
			since = ", tripped since " + timeAndAge(*br.OpenedAt, now)
		}
		fmt.Fprintf(w, "breaker %s: %s; %d of %d silent, max %d%s\n", br.Scope, state, br.Silent, br.Machines, br.Limit, since)
	}
	switch o := b.Observer; {
	case o == nil:
		fmt.Fprintln(w, "observer: no heartbeat endpoint has ever recorded itself: no machine counts as stale")
	case !o.Alive:
		fmt.Fprintf(w, "observer: NO heartbeat endpoint alive and writing since %s: staleness does not count meanwhile\n", timeAndAge(o.AliveAt, now))
	default:
		fmt.Fprintf(w, "observer: heartbeat endpoint on %s alive, watching since %s\n", orDash(o.Host), timeAndAge(o.Since, now))
	}
}
