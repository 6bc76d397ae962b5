package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

func init() { commands = append(commands, newHistoryCmd) }

type historyOptions struct {
	process  string
	since    string
	limit    int
	output   string
	follow   bool
	all      bool
	events   []string
	actor    string
	location string
}

func newHistoryCmd(a *app) *cobra.Command {
	var o historyOptions
	cmd := &cobra.Command{
		Use:   "history <machine> | --all",
		Short: "Show a machine's or the fleet's work history, oldest first",
		Long: `Shows the audit trail of one machine: every work item started, finished, failed,
canceled or lost, and every operator action (backoffs cleared, recoveries
requested, holds, cancels), oldest first, with the time (local, and its age),
the process, the event, the actor and the cause. The actor is the operator of
an operator action (--as, else user@host), else the component@host whose
session did it. Machines that no longer exist still have their history.

The machine is a UUID, a unique UUID prefix or a provider id. --all shows the
whole fleet's history instead (fleet-wide actions such as breaker overrides
show as machine "(fleet)"); narrow it with --since, --limit, --event, --actor,
--process and --location. Without --since or --limit, --all shows the newest
1000 events (a fleet's whole history is millions); --limit 0 --since ... for more.

--follow keeps printing new events as they are written (LISTEN/NOTIFY) until
interrupted; with -o json it prints one JSON object per line (JSON Lines).`,
		Example: `  bmctl history 3f2a
  bmctl history srv-1234 --process AgentStart --since 2h
  bmctl history 3f2a9c10 --limit 20 --follow
  bmctl history 3f2a -o json | jq '.[] | select(.event == "Failed")'
  bmctl history --all --since 1h --event HoldPlaced,HoldReleased
  bmctl history --all --actor alice --follow`,
		ValidArgsFunction: a.completeMachines(true),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case o.all && len(args) > 0:
				return usageError{fmt.Errorf("history takes a machine or --all, not both")}
			case !o.all && len(args) != 1:
				return usageError{fmt.Errorf("history needs one machine (UUID, prefix or provider id), or --all for the whole fleet")}
			}
			ref := ""
			if len(args) == 1 {
				ref = args[0]
			}
			return a.runHistory(cmd.Context(), ref, o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.process, "process", "", "only this process's events (AgentStart, Recovery, Access)")
	f.StringVar(&o.since, "since", "", `only events since a time ("2026-11-25 10:00", RFC 3339) or for a duration back ("90m", "2h", "3d")`)
	f.IntVar(&o.limit, "limit", 0, "only the newest N events (still printed oldest first)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.BoolVarP(&o.follow, "follow", "f", false, "keep printing new events as they happen")
	f.BoolVar(&o.all, "all", false, "every machine's history, not one machine's")
	f.StringSliceVar(&o.events, "event", nil, "only these events (Started, Failed, HoldPlaced, ...; repeat or comma-separate)")
	f.StringVar(&o.actor, "actor", "", `only events by this actor ("alice@jump1", or the part before the @: "alice", "shepherd")`)
	f.StringVar(&o.location, "location", "", "only events of machines at this location")
	cmd.AddCommand(newHistoryPruneCmd(a))
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
	if o.all && o.since == "" && o.limit == 0 {
		ho.Limit = defaultFleetHistoryLimit
	}
	ho.Actor, ho.Location = o.actor, o.location

	conn, err := a.connectAs(ctx, bmdb.RoleViewer)
	if err != nil {
		return err
	}
	defer conn.Close()
	if ho.Events, err = parseEvents(ctx, conn.Pool, o.events); err != nil {
		return err
	}
	var id uuid.UUID
	if !o.all {
		if id, err = resolveMachine(ctx, conn.Pool, ref, true); err != nil {
			return err
		}
	}
	if !o.follow {
		var events []fleet.HistoryEvent
		if o.all {
			events, err = fleet.FleetHistory(ctx, conn.Pool, ho)
		} else {
			events, err = fleet.History(ctx, conn.Pool, id, ho)
		}
		if err != nil {
			return err
		}
		if format == "json" {
			return writeJSONList(a.Out, events)
		}
		if len(events) == 0 {
			what := "machine " + id.String()
			if o.all {
				what = "the fleet"
			}
			fmt.Fprintf(a.Err, "bmctl: no history for %s%s\n", what, filterNote(ho))
		}
		return a.printTable(historyTable(events, time.Now(), true, o.all))
	}

	// Following: rows are printed as they come, so columns cannot be sized
	// from all of them; the header comes first, once.
	first := true
	widths := historyWidths
	if o.all {
		widths = fleetHistoryWidths
	}
	emit := func(events []fleet.HistoryEvent) error {
		if format == "json" {
			for _, e := range events {
				if err := jsonLine(a.Out, e); err != nil {
					return err
				}
			}
			return nil
		}
		t := historyTable(events, time.Now(), first, o.all)
		first = false
		t.width = terminalWidth(a.Out)
		return t.writeFixed(a.Out, widths)
	}
	if o.all {
		err = fleet.FollowFleetHistory(ctx, conn.Pool, ho, emit)
	} else {
		err = fleet.FollowHistory(ctx, conn.Pool, id, ho, emit)
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// defaultFleetHistoryLimit bounds `history --all` without --since or --limit.
const defaultFleetHistoryLimit = 1000

func filterNote(o fleet.HistoryOptions) string {
	var parts []string
	if o.Process != "" {
		parts = append(parts, "process "+string(o.Process))
	}
	if !o.Since.IsZero() {
		parts = append(parts, "since "+localTime(o.Since))
	}
	if len(o.Events) > 0 {
		evs := make([]string, len(o.Events))
		for i, e := range o.Events {
			evs[i] = string(e)
		}
		parts = append(parts, "events "+strings.Join(evs, ","))
	}
	if o.Actor != "" {
		parts = append(parts, "actor "+o.Actor)
	}
	if o.Location != "" {
		parts = append(parts, "location "+o.Location)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// historyWidths are fixed column widths for --follow, where rows print before
// the widest is known.
var (
	historyWidths      = []int{19, 9, 10, 17, 24, 0}
	fleetHistoryWidths = []int{19, 9, 8, 10, 17, 24, 0}
)

// historyTable shows events; the fleet's (all) with the machine of each.
func historyTable(events []fleet.HistoryEvent, now time.Time, header, all bool) *table {
	headers := []string{"TIME (" + zoneName() + ")", "AGE", "PROCESS", "EVENT", "ACTOR", "CAUSE"}
	if all {
		headers = slices.Insert(headers, 2, "MACHINE")
	}
	t := newTable(headers...).flex("ACTOR", "CAUSE")
	t.noHeader = !header
	for _, e := range events {
		cells := []string{localTime(e.At), age(e.At, now), shortProcess(string(e.Process)), string(e.Event), orDash(e.Actor), orDash(e.Cause)}
		if all {
			cells = slices.Insert(cells, 2, machineName(e.MachineID))
		}
		t.add(cells...)
	}
	return t
}

// parseEvents checks --event against the events BMDB knows (its work_event
// enum), case-insensitively.
func parseEvents(ctx context.Context, db fleet.DB, names []string) ([]bmdb.Event, error) {
	if len(names) == 0 {
		return nil, nil
	}
	rows, err := db.Query(ctx, `SELECT unnest(enum_range(NULL::work_event))::text`)
	if err != nil {
		return nil, err
	}
	known, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var out []bmdb.Event
	for _, n := range names {
		i := slices.IndexFunc(known, func(k string) bool { return strings.EqualFold(k, strings.TrimSpace(n)) })
		if i < 0 {
			return nil, usageError{fmt.Errorf("unknown event %q (want one of %s)", n, strings.Join(known, ", "))}
		}
		out = append(out, bmdb.Event(known[i]))
	}
	return out, nil
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
	if t, err := parseTime(s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf(`--since %q is neither a duration ("90m", "2h", "3d") nor a time ("2026-11-25 10:00", RFC 3339)`, s)
}

// parseTime reads a local time ("2026-11-25 10:00[:05]", "2026-11-25") or
// RFC 3339.
func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time", s)
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
