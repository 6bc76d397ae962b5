package fleet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// HistoryEvent is one entry of a machine's work history.
type HistoryEvent struct {
	ID               int64        `json:"id"`
	MachineID        uuid.UUID    `json:"machine_id"`
	At               time.Time    `json:"at"`
	Process          bmdb.Process `json:"process"`
	Event            bmdb.Event   `json:"event"`
	Cause            string       `json:"cause"`
	SessionID        *uuid.UUID   `json:"session_id"`
	SessionComponent string       `json:"session_component"`
	SessionHost      string       `json:"session_host"`
	// Actor is who did it: the operator of an operator action
	// ("alice@jump1"), else the session's component@host.
	Actor string `json:"actor"`
}

// HistoryOptions filter a machine's history.
type HistoryOptions struct {
	// Process keeps only this process's events.
	Process bmdb.Process
	// Since keeps events at or after this time.
	Since time.Time
	// Limit keeps only the newest Limit events (still returned oldest first).
	Limit int
	// AfterID keeps events with a larger id (to continue from a seen event).
	AfterID int64
	// Events keeps only these events.
	Events []bmdb.Event
	// Actor keeps events whose actor is this ("alice@jump1"), or whose
	// actor's part before the @ is ("alice", "shepherd").
	Actor string
	// Location keeps events of machines at this location now.
	Location string
}

// actorSQL is an event's actor: the operator an operator action recorded
// (migration 0011), else the session that wrote it.
const actorSQL = `coalesce(actor, CASE WHEN session_host = '' THEN session_component ELSE session_component || '@' || session_host END)`

const historyColumns = `work_history_id, machine_id, event_at, process, event, cause, session_id, session_component, session_host, ` + actorSQL

func scanHistory(row pgx.CollectableRow) (HistoryEvent, error) {
	var e HistoryEvent
	err := row.Scan(&e.ID, &e.MachineID, &e.At, &e.Process, &e.Event, &e.Cause, &e.SessionID, &e.SessionComponent, &e.SessionHost, &e.Actor)
	return e, err
}

// where filters history; machine nil means every machine's.
func (o HistoryOptions) where(machine *uuid.UUID) (string, []any) {
	var args []any
	conds := []string{"true"}
	if machine != nil {
		args = append(args, *machine)
		conds = []string{"machine_id = $1"}
	}
	if len(o.Events) > 0 {
		evs := make([]string, len(o.Events))
		for i, e := range o.Events {
			evs[i] = string(e)
		}
		args = append(args, evs)
		conds = append(conds, fmt.Sprintf("event::text = ANY($%d)", len(args)))
	}
	if o.Actor != "" {
		args = append(args, o.Actor)
		conds = append(conds, fmt.Sprintf("(%s = $%d OR split_part(%s, '@', 1) = $%d)", actorSQL, len(args), actorSQL, len(args)))
	}
	if o.Location != "" {
		args = append(args, o.Location)
		conds = append(conds, fmt.Sprintf("machine_id IN (SELECT machine_id FROM machine_provided WHERE provider_location = $%d)", len(args)))
	}
	if o.Process != "" {
		args = append(args, string(o.Process))
		conds = append(conds, fmt.Sprintf("process = $%d", len(args)))
	}
	if !o.Since.IsZero() {
		args = append(args, o.Since)
		conds = append(conds, fmt.Sprintf("event_at >= $%d", len(args)))
	}
	if o.AfterID > 0 {
		args = append(args, o.AfterID)
		conds = append(conds, fmt.Sprintf("work_history_id > $%d", len(args)))
	}
	return strings.Join(conds, " AND "), args
}

// History returns a machine's work history, oldest first. It reads the
// (machine_id, work_history_id) index, newest first when limited, so its
// cost follows the events returned, not the machine's whole history. It works
// for machines that no longer exist.
func History(ctx context.Context, db DB, machine uuid.UUID, o HistoryOptions) ([]HistoryEvent, error) {
	return history(ctx, db, &machine, o)
}

// FleetHistory returns every machine's history that passes o's filters,
// oldest first. A time range (Since) reads the BRIN index on event_at
// (migration 0011), Limit alone the newest ids backwards, so neither costs
// what the whole history costs.
func FleetHistory(ctx context.Context, db DB, o HistoryOptions) ([]HistoryEvent, error) {
	return history(ctx, db, nil, o)
}

func history(ctx context.Context, db DB, machine *uuid.UUID, o HistoryOptions) ([]HistoryEvent, error) {
	where, args := o.where(machine)
	order := " ORDER BY machine_id, work_history_id"
	if machine == nil {
		order = " ORDER BY work_history_id"
	}
	q := "SELECT " + historyColumns + " FROM work_history WHERE " + where + order
	if o.Limit > 0 && machine == nil {
		// Newest first along the primary key, stopping after Limit.
		args = append(args, o.Limit)
		q = "SELECT * FROM (SELECT " + historyColumns + " FROM work_history WHERE " + where +
			fmt.Sprintf(" ORDER BY work_history_id DESC LIMIT $%d) newest ORDER BY work_history_id", len(args))
	} else if o.Limit > 0 {
		// The newest events, ordered by an expression no index provides: a
		// backward walk of the primary key, filtering for the machine, looks
		// cheap to the planner when the machine's events are recent, and
		// reads the whole table when they are not. This way the cost is the
		// machine's own events, whatever their age.
		args = append(args, o.Limit)
		q = "SELECT * FROM (SELECT " + historyColumns + " FROM work_history WHERE " + where +
			fmt.Sprintf(" ORDER BY work_history_id + 0 DESC LIMIT $%d) newest ORDER BY work_history_id", len(args))
	}
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanHistory)
}

// HistoryChannel is the NOTIFY channel of new work history events; the
// payload is "<machine_id> <work_history_id>".
const HistoryChannel = "work_history"

// FollowHistory sends a machine's history to emit, oldest first, and then
// each new event as it is written, until ctx ends (it then returns nil) or
// the connection fails. It listens before it reads, so an event written at
// any moment is either in the first read or announced afterwards; events are
// read back by id, so ones that commit out of id order are not skipped.
func FollowHistory(ctx context.Context, pool *pgxpool.Pool, machine uuid.UUID, o HistoryOptions, emit func([]HistoryEvent) error) error {
	return follow(ctx, pool, &machine, o, emit)
}

// FollowFleetHistory is FollowHistory over every machine's history.
func FollowFleetHistory(ctx context.Context, pool *pgxpool.Pool, o HistoryOptions, emit func([]HistoryEvent) error) error {
	return follow(ctx, pool, nil, o, emit)
}

func follow(ctx context.Context, pool *pgxpool.Pool, machine *uuid.UUID, o HistoryOptions, emit func([]HistoryEvent) error) error {
	f := &follower{pool: pool, machine: machine, seen: map[int64]bool{}, emit: emit}
	retry := 250 * time.Millisecond
	for {
		err := f.once(ctx, o)
		if ctx.Err() != nil {
			return nil
		}
		if !bmdb.Unreachable(err) && !errors.Is(err, bmdb.ErrListenLapsed) {
			return err
		}
		// The database went away (a restart, a failover) or the listener
		// stalled past its lease: listen again and re-read from shortly
		// before the newest event shown, so nothing is missed or repeated.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
		retry = min(2*retry, 5*time.Second)
		if !f.newest.IsZero() {
			o.Limit, o.AfterID, o.Since = 0, 0, f.newest.Add(-resumeOverlap)
		}
	}
}

// resumeOverlap is how far before the newest event shown a resumed follow
// reads again: an event's time is its transaction's start, so one that
// committed late can carry an earlier time than events already shown.
const resumeOverlap = time.Minute

// follower is one follow of history across reconnections: what it has shown.
type follower struct {
	pool    *pgxpool.Pool
	machine *uuid.UUID
	seen    map[int64]bool
	newest  time.Time
	emit    func([]HistoryEvent) error
}

func (f *follower) show(evs []HistoryEvent) error {
	var fresh []HistoryEvent
	for _, e := range evs {
		if !f.seen[e.ID] {
			f.seen[e.ID] = true
			fresh = append(fresh, e)
			if e.At.After(f.newest) {
				f.newest = e.At
			}
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	return f.emit(fresh)
}

// once listens on a connection of its own, reads what o selects, then each
// announced event, until the connection fails.
func (f *follower) once(ctx context.Context, o HistoryOptions) error {
	machine := f.machine
	conn, err := f.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection carries a LISTEN; do not give it back to the pool.
	pc := conn.Hijack()
	defer pc.Close(context.Background())
	l, err := bmdb.Listen(ctx, pc, HistoryChannel)
	if err != nil {
		return err
	}
	defer l.Close(ctx)
	first, err := history(ctx, pc, machine, o)
	if err != nil {
		return err
	}
	if err := f.show(first); err != nil {
		return err
	}
	after := o
	after.Limit, after.AfterID = 0, 0
	for {
		n, err := l.Wait(ctx)
		if err != nil {
			return err
		}
		mid, hid, ok := parseHistoryPayload(n.Payload)
		if !ok || (machine != nil && mid != *machine) || f.seen[hid] {
			continue
		}
		where, args := after.where(machine)
		args = append(args, hid)
		rows, err := pc.Query(ctx, "SELECT "+historyColumns+" FROM work_history WHERE "+where+fmt.Sprintf(" AND work_history_id = $%d", len(args)), args...)
		if err != nil {
			return err
		}
		evs, err := pgx.CollectRows(rows, scanHistory)
		if err != nil {
			return err
		}
		if err := f.show(evs); err != nil {
			return err
		}
	}
}

func parseHistoryPayload(p string) (uuid.UUID, int64, bool) {
	mid, hid, ok := strings.Cut(p, " ")
	if !ok {
		return uuid.Nil, 0, false
	}
	id, err := uuid.Parse(mid)
	if err != nil {
		return uuid.Nil, 0, false
	}
	n, err := strconv.ParseInt(hid, 10, 64)
	if err != nil {
		return uuid.Nil, 0, false
	}
	return id, n, true
}
