package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

func init() { commands = append(commands, newHistoryCmd) }

type historyOptions struct {
	process string
	since   string
	limit   int
	output  string
	follow  bool
}

func newHistoryCmd(a *app) *cobra.Command {
	var o historyOptions
	cmd := &cobra.Command{
		Use:   "history <machine>",
		Short: "Show a machine's work history, oldest first",
		Long: `Shows the audit trail of one machine: every work item started, finished, failed,
canceled or lost, and every backoff an operator cleared, oldest first, with the
time (local, and its age), the process, the session (component and host) and
the cause. Machines that no longer exist still have their history.

The machine is a UUID, a unique UUID prefix or a provider id.

--follow keeps printing new events as they are written (LISTEN/NOTIFY) until
interrupted; with -o json it prints one JSON object per line (JSON Lines).`,
		Example: `  bmctl history 3f2a
  bmctl history srv-1234 --process AgentStart --since 2h
  bmctl history 3f2a9c10 --limit 20 --follow
  bmctl history 3f2a -o json | jq '.[] | select(.event == "Failed")'`,
		Args:              exactArgs(1),
		ValidArgsFunction: a.completeMachines(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runHistory(cmd.Context(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.process, "process", "", "only this process's events (AgentStart, Recovery, Access)")
	f.StringVar(&o.since, "since", "", `only events since a time ("2026-11-25 10:00", RFC 3339) or for a duration back ("90m", "2h", "3d")`)
	f.IntVar(&o.limit, "limit", 0, "only the newest N events (still printed oldest first)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.BoolVarP(&o.follow, "follow", "f", false, "keep printing new events as they happen")
	_ = cmd.RegisterFlagCompletionFunc("process", completeProcesses)
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (a *app) runHistory(ctx context.Context, ref string, o historyOptions) error {
	format, err := outputFormat(o.output, "table", "json")
	if err != nil {
		return err
	}
	var ho fleet.HistoryOptions
	if o.process != "" {
		if ho.Process, err = bmdb.ParseProcess(o.process); err != nil {
			return usageError{err}
		}
	}
	if o.since != "" {
		if ho.Since, err = parseSince(o.since, time.Now()); err != nil {
			return usageError{err}
		}
	}
	if o.limit < 0 {
		return usageError{fmt.Errorf("--limit must not be negative, got %d", o.limit)}
	}
	ho.Limit = o.limit

	conn, err := a.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	id, err := resolveMachine(ctx, conn.Pool, ref, true)
	if err != nil {
		return err
	}
	if !o.follow {
		events, err := fleet.History(ctx, conn.Pool, id, ho)
		if err != nil {
			return err
		}
		if format == "json" {
			return writeJSONList(a.Out, events)
		}
		if len(events) == 0 {
			fmt.Fprintf(a.Err, "bmctl: no history for machine %s%s\n", id, filterNote(ho))
		}
		return a.printTable(historyTable(events, time.Now(), true))
	}

	// Following: rows are printed as they come, so columns cannot be sized
	// from all of them; the header comes first, once.
	first := true
	err = fleet.FollowHistory(ctx, conn.Pool, id, ho, func(events []fleet.HistoryEvent) error {
		if format == "json" {
			for _, e := range events {
				if err := jsonLine(a.Out, e); err != nil {
					return err
				}
			}
			return nil
		}
		t := historyTable(events, time.Now(), first)
		first = false
		t.width = terminalWidth(a.Out)
		return t.writeFixed(a.Out, historyWidths)
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func filterNote(o fleet.HistoryOptions) string {
	var parts []string
	if o.Process != "" {
		parts = append(parts, "process "+string(o.Process))
	}
	if !o.Since.IsZero() {
		parts = append(parts, "since "+localTime(o.Since))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// historyWidths are fixed column widths for --follow, where rows print before
// the widest is known.
var historyWidths = []int{19, 9, 10, 14, 24, 0}

func historyTable(events []fleet.HistoryEvent, now time.Time, header bool) *table {
	t := newTable("TIME ("+zoneName()+")", "AGE", "PROCESS", "EVENT", "SESSION", "CAUSE").flex("SESSION", "CAUSE")
	t.noHeader = !header
	for _, e := range events {
		t.add(localTime(e.At), age(e.At, now), shortProcess(string(e.Process)), string(e.Event),
			sessionName(e.SessionComponent, e.SessionHost), orDash(e.Cause))
	}
	return t
}

// sessionName is "component@host", or "-".
func sessionName(component, host string) string {
	switch {
	case component == "" && host == "":
		return "-"
	case host == "":
		return component
	}
	return component + "@" + host
}

// parseSince reads --since: a duration back from now ("90m", "2h", "3d") or
// a local time ("2026-11-25 10:00[:05]", "2026-11-25") or RFC 3339.
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if n, ok := strings.CutSuffix(s, "d"); ok {
		if days, err := strconv.Atoi(n); err == nil && days >= 0 {
			return now.Add(-time.Duration(days) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			d = -d
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf(`--since %q is neither a duration ("90m", "2h", "3d") nor a time ("2026-11-25 10:00", RFC 3339)`, s)
}

// resolveMachine turns a command-line machine reference into an id; a
// reference that cannot name any machine is a usage error.
func resolveMachine(ctx context.Context, db fleet.DB, ref string, withHistory bool) (uuid.UUID, error) {
	id, err := fleet.Resolve(ctx, db, ref, fleet.ResolveOptions{WithHistory: withHistory})
	if errors.Is(err, fleet.ErrInvalidMachineRef) {
		return id, usageError{err}
	}
	return id, err
}
