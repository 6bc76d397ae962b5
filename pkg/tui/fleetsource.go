package tui

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
	"github.com/bmctl/bmctl/pkg/ops"
)

// FleetSource reads BMDB through pkg/fleet, so the view shows the state every
// bmctl view derives.
type FleetSource struct {
	DB         ops.DB
	Thresholds bmdb.RecoveryThresholds
	// Operator is recorded with actions ("user@host"); default ops.Actor().
	Operator string
	// HistoryLimit is how many history events the detail shows (default 200).
	HistoryLimit int
}

var columnSorts = [numColumns]fleet.Sort{
	ColMachine:   fleet.SortID,
	ColProvider:  fleet.SortProvider,
	ColLocation:  fleet.SortLocation,
	ColAddress:   fleet.SortAddress,
	ColState:     fleet.SortState,
	ColWork:      fleet.SortWork,
	ColBackoff:   fleet.SortBackoff,
	ColHeartbeat: fleet.SortHeartbeat,
}

func (s FleetSource) list(q Query) (fleet.ListOptions, error) {
	o := fleet.ListOptions{
		Match:       q.Text,
		MatchInvert: q.Invert && q.Text != "",
		Process:     bmdb.Process(q.Process),
		Sort:        columnSorts[q.Sort],
		Descending:  q.Desc,
		Limit:       q.Limit,
		Offset:      q.Offset,
		Thresholds:  s.Thresholds,
	}
	if q.State != "" {
		st, err := resolveState(q.State)
		if err != nil {
			return o, err
		}
		o.States = []fleet.State{st}
	}
	return o, nil
}

// resolveState accepts a state's name or any part of it that names only one
// ("stale" is heartbeat_stale), as operators type in a filter.
func resolveState(v string) (fleet.State, error) {
	if st, err := fleet.ParseState(v); err == nil {
		return st, nil
	}
	var match []fleet.State
	for _, st := range fleet.States {
		if strings.Contains(normal(string(st)), normal(v)) {
			match = append(match, st)
		}
	}
	if len(match) == 1 {
		return match[0], nil
	}
	names := make([]string, len(fleet.States))
	for i, st := range fleet.States {
		names[i] = string(st)
	}
	if len(match) > 1 {
		names = names[:0]
		for _, st := range match {
			names = append(names, string(st))
		}
		return "", fmt.Errorf("state %q is ambiguous: %s", v, strings.Join(names, ", "))
	}
	return "", fmt.Errorf("unknown state %q (want one of %s)", v, strings.Join(names, ", "))
}

// Page implements Source.
func (s FleetSource) Page(ctx context.Context, q Query) (Page, error) {
	o, err := s.list(q)
	if err != nil {
		return Page{}, err
	}
	w, err := fleet.WatchWindow(ctx, s.DB, o)
	if err != nil {
		return Page{}, err
	}
	p := Page{Offset: w.Offset, Total: w.Total, Rows: make([]Row, len(w.Machines))}
	for i, m := range w.Machines {
		p.Rows[i] = rowOf(m)
	}
	p.Summary.Machines = w.Summary.Machines
	for _, st := range fleet.States {
		if n := w.Summary.ByState[st]; n > 0 {
			p.Summary.States = append(p.Summary.States, Count{Name: string(st), N: n})
		}
	}
	p.Summary.Alerts = alerts(w.Summary.Brakes, time.Now())
	for _, proc := range bmdb.Processes {
		if n := w.Summary.Work[proc]; n > 0 {
			p.Summary.Work = append(p.Summary.Work, Count{Name: string(proc), N: n})
		}
		if n := w.Summary.Backoffs[proc]; n > 0 {
			p.Summary.Backoffs = append(p.Summary.Backoffs, Count{Name: string(proc), N: n})
		}
	}
	return p, nil
}

func rowOf(m fleet.MachineSummary) Row {
	r := Row{
		ID: m.ID, Provider: m.Provider, ProviderID: m.ProviderID, Location: m.Location, Address: m.Address,
		State: string(m.State),
	}
	if m.Work != nil {
		r.WorkProcess, r.WorkDetail, r.WorkStarted = string(m.Work.Process), m.Work.Detail, m.Work.StartedAt
		r.WorkComponent, r.WorkHost = m.Work.SessionComponent, m.Work.SessionHost
	}
	if m.Backoff != nil {
		r.BackoffProcess, r.BackoffUntil, r.BackoffCause = string(m.Backoff.Process), m.Backoff.Until, m.Backoff.Cause
	}
	r.AgentStarted = m.AgentStartedAt != nil
	if m.LastHeartbeatAt != nil {
		r.HeartbeatAt = *m.LastHeartbeatAt
	}
	return r
}

// Locate implements Source.
func (s FleetSource) Locate(ctx context.Context, q Query, ref string) (int, error) {
	id, err := fleet.Resolve(ctx, s.DB, ref, fleet.ResolveOptions{})
	if err != nil {
		return 0, err
	}
	o, err := s.list(q)
	if err != nil {
		return 0, err
	}
	n, err := fleet.WatchLocate(ctx, s.DB, o, id)
	if errors.Is(err, fleet.ErrFilteredOut) {
		return 0, ErrNotInView
	}
	return n, err
}

// Detail implements Source.
func (s FleetSource) Detail(ctx context.Context, id uuid.UUID) (Detail, error) {
	limit := s.HistoryLimit
	if limit <= 0 {
		limit = 200
	}
	d, err := fleet.GetWatchDetail(ctx, s.DB, id, fleet.DetailOptions{HistoryLimit: limit, Thresholds: s.Thresholds})
	if err != nil {
		return Detail{}, err
	}
	out := Detail{Row: rowOf(d.MachineSummary), CreatedAt: d.CreatedAt, ProviderStatus: d.ProviderStatus}
	if t := d.Tags.AgentStarted; t != nil {
		out.AgentStartedAt = t.At
		out.AgentKey = t.PublicKey
		if len(out.AgentKey) > 16 {
			out.AgentKey = out.AgentKey[:16] + "…"
		}
	}
	if t := d.Tags.HardwareReport; t != nil {
		out.HardwareAt = t.At
	}
	if k := d.SSHHostKey; k != nil {
		out.SSHHostKey, out.SSHHostKeyPinned = k.Fingerprint, k.PinnedAt
	}
	if r := d.RecoveryRequest; r != nil {
		out.RecoveryRequested, out.RecoveryRequester = r.At, r.By
	}
	for _, w := range d.Work {
		item := WorkItem{Process: string(w.Process), Detail: w.Detail, Started: w.StartedAt,
			SessionID: w.SessionID, Component: w.SessionComponent, Host: w.SessionHost}
		if se, ok := d.Sessions[w.SessionID]; ok {
			item.PID, item.Version, item.Deadline = se.PID, se.Version, se.Deadline
		}
		out.Work = append(out.Work, item)
	}
	for _, b := range d.Backoffs {
		out.Backoffs = append(out.Backoffs, BackoffItem{Process: string(b.Process), Until: b.Until, Cause: b.Cause,
			LastInterval: time.Duration(b.LastIntervalSeconds) * time.Second})
	}
	ex, err := bmdb.Explain(ctx, s.DB, id)
	if err != nil {
		return Detail{}, err
	}
	for _, v := range ex.Processes {
		item := WhyItem{Process: string(v.Process), Candidate: v.Candidate, Reason: v.Reason}
		if v.NextEligible != nil && !v.Candidate {
			item.Next = *v.NextEligible
		}
		for _, c := range v.Conditions {
			if !c.Holds {
				item.Failing = append(item.Failing, c.Name+": "+c.Detail)
			}
		}
		out.Why = append(out.Why, item)
	}
	for _, h := range slices.Backward(d.History) {
		out.History = append(out.History, HistoryItem{ID: h.ID, At: h.At, Process: string(h.Process), Event: string(h.Event),
			Cause: h.Cause, Component: h.SessionComponent, Host: h.SessionHost, Actor: h.Actor})
	}
	return out, nil
}

func (s FleetSource) operator() string {
	if s.Operator != "" {
		return s.Operator
	}
	return ops.Actor()
}

// act runs an operator action as the bmctl commands do; the view has
// already asked for confirmation.
func (s FleetSource) act(ctx context.Context, a ops.Action) error {
	_, err := ops.Run(ctx, s.DB, a, ops.Options{Actor: s.operator()})
	return err
}

// ClearBackoff implements Source, as `bmctl backoff clear` does.
func (s FleetSource) ClearBackoff(ctx context.Context, id uuid.UUID, process string) error {
	return s.act(ctx, ops.ClearBackoff{Machines: []uuid.UUID{id}, Process: bmdb.Process(process)})
}

// RequestRecovery implements Source, as `bmctl recover` does.
func (s FleetSource) RequestRecovery(ctx context.Context, id uuid.UUID) error {
	return s.act(ctx, ops.RequestRecovery{Machines: []uuid.UUID{id}})
}

func (s FleetSource) action(a Action) ops.Action {
	ids := []uuid.UUID{a.Machine}
	switch a.Kind {
	case ActionHold:
		h := ops.Hold{Machines: ids, Reason: a.Reason}
		if !a.Until.IsZero() {
			h.Until = &a.Until
		}
		return h
	case ActionRelease:
		return ops.Release{Machines: ids, Reason: a.Reason}
	}
	return ops.CancelWork{Machines: ids, Reason: a.Reason}
}

// Preview implements Source: a dry run of the action, as --dry-run does.
func (s FleetSource) Preview(ctx context.Context, a Action) ([]string, error) {
	res, err := ops.Run(ctx, s.DB, s.action(a), ops.Options{Actor: s.operator(), DryRun: true})
	if err != nil {
		return nil, err
	}
	lines := make([]string, len(res.Changes))
	for i, c := range res.Changes {
		lines[i] = c.What
	}
	return lines, nil
}

// Do implements Source, as the bmctl commands do.
func (s FleetSource) Do(ctx context.Context, a Action) error {
	return s.act(ctx, s.action(a))
}

// alerts are the brakes' banner lines: where Recovery is stopped fleet-wide
// or per location, and a heartbeat observer that is not watching.
func alerts(b bmdb.BrakesStatus, now time.Time) []string {
	var out []string
	if b.Stale {
		out = append(out, "Recovery stopped: the fleet breaker was not evaluated lately (no shepherd running Recovery?)")
	}
	for _, br := range b.Breakers {
		if br.Open {
			out = append(out, fmt.Sprintf("Recovery stopped: %s breaker open, %d of %d silent (max %d)", scopeName(br.Scope), br.Silent, br.Machines, br.Limit))
		}
	}
	switch o := b.Observer; {
	case o == nil:
		out = append(out, "no heartbeat endpoint has ever recorded itself: no machine counts as stale")
	case !o.Alive:
		out = append(out, fmt.Sprintf("no heartbeat endpoint alive and writing for %s: staleness does not count", shortDuration(now.Sub(o.AliveAt))))
	}
	return out
}

func scopeName(scope string) string {
	if loc, ok := strings.CutPrefix(scope, "location:"); ok {
		return "location " + strconv.Quote(loc)
	}
	return scope
}
