package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

func init() { commands = append(commands, newSessionsCmd) }

func newSessionsCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "sessions",
		Aliases: []string{"session"},
		Short:   "Inspect the sessions of running components",
	}
	asGroup(cmd)
	var output string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List sessions, live and expired, with the work each holds",
		Long: `Lists every session: the component and where it runs, its lease, and the work
it holds. An expired session is past its deadline but not yet swept; the
sweep records its work as lost.`,
		Args: noArgs,
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
			sessions, err := fleet.ListSessions(ctx, conn.Pool)
			if err != nil {
				return err
			}
			if format == "json" {
				return writeJSONList(a.Out, sessions)
			}
			return a.printTable(sessionsTable(sessions, time.Now()))
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	_ = list.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(list)
	return cmd
}

// maxSessionWorkShown is how many work items a session's table row names.
const maxSessionWorkShown = 5

func sessionsTable(sessions []fleet.SessionInfo, now time.Time) *table {
	t := newTable("SESSION", "COMPONENT", "HOST", "PID", "VERSION", "STARTED", "DEADLINE", "STATUS", "WORK").flex("HOST", "WORK")
	for _, s := range sessions {
		status := "live"
		if s.Expired {
			status = "expired"
		}
		work := "-"
		if n := len(s.Work); n > 0 {
			var items []string
			for _, w := range s.Work[:min(n, maxSessionWorkShown)] {
				item := fleet.ShortID(w.MachineID) + " " + shortProcess(string(w.Process))
				if w.Detail != "" {
					item += " (" + w.Detail + ")"
				}
				items = append(items, item)
			}
			if n > maxSessionWorkShown {
				items = append(items, fmt.Sprintf("+%d more (-o json lists all)", n-maxSessionWorkShown))
			}
			work = fmt.Sprintf("%d: %s", n, strings.Join(items, ", "))
		}
		t.add(fleet.ShortID(s.ID), s.Component, orDash(s.Host), fmt.Sprint(s.PID), orDash(s.Version),
			age(s.CreatedAt, now), age(s.Deadline, now), status, work)
	}
	return t
}
