package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Queries of the live view (`bmctl machines watch`): a window of the sorted,
// filtered fleet with its total, the position of one machine in it, a
// machine's detail with the sessions holding its work, and the operator's
// recovery request. They reuse machineRowsSQL, so the state is the one every
// view shows.

// Orders only the watch view offers, beside the list's.
const (
	SortAddress Sort = "address"
	SortWork    Sort = "work"    // process, then when the work started
	SortBackoff Sort = "backoff" // when the backoff ends
)

// watchOrder is the ORDER BY of a sort. State sorts in the order of a
// machine's life (States), not alphabetically.
func watchOrder(s Sort, desc bool) (string, error) {
	var cols []string
	switch s {
	case "", SortID:
		cols = []string{"machine_id"}
	case SortAddress:
		cols = []string{"address"}
	case SortWork:
		cols = []string{"work_process", "work_started_at"}
	case SortBackoff:
		cols = []string{"backoff_until"}
	case SortState:
		names := make([]string, len(States))
		for i, st := range States {
			names[i] = "'" + string(st) + "'"
		}
		cols = []string{"array_position(ARRAY[" + strings.Join(names, ",") + "], state)", "provider", "provider_id"}
	default:
		c, ok := sortSQL[s]
		if !ok {
			return "", fmt.Errorf("unknown sort %q", s)
		}
		cols = strings.Split(c, ", ")
	}
	if s != "" && s != SortID {
		cols = append(cols, "machine_id")
	}
	dir := " ASC NULLS LAST"
	if desc {
		dir = " DESC NULLS LAST"
	}
	for i := range cols {
		cols[i] += dir
	}
	return strings.Join(cols, ", "), nil
}

// Window is one page of a filtered, sorted machine list, the number of
// machines that pass the filter, and the whole fleet's counts, read in one
// snapshot.
type Window struct {
	Machines []MachineSummary
	Offset   int
	Total    int
	Summary  Summary
}

// Summary is the fleet at a glance: machines per state, work and unexpired
// backoffs per process (zero counts left out).
type Summary struct {
	Machines int
	ByState  map[State]int
	Work     map[bmdb.Process]int
	Backoffs map[bmdb.Process]int
	// Brakes are the breakers, observer, holds and marks.
	Brakes bmdb.BrakesStatus
}

// WatchWindow returns the machines o.Offset to o.Offset+o.Limit of the list o
// describes (its Sort may also be SortAddress, SortWork or SortBackoff), how
// many pass its filter, and the fleet summary. A live view runs it on every
// change, so it avoids whole-fleet work where it can: the page is sorted
// without counting (so an index order can stop early), the count of an
// unfiltered list is the count of machines, and the summary derives states
// from the small sets of machines that can be in trouble (FleetSummary).
func WatchWindow(ctx context.Context, db DB, o ListOptions) (Window, error) {
	w := Window{Offset: o.Offset}
	order, err := watchOrder(o.Sort, o.Descending)
	if err != nil {
		return w, err
	}
	filtered := len(o.States) > 0 || o.Process != "" || o.Provider != "" || o.Location != "" || o.Match != ""
	err = snapshot(ctx, db, func(tx DB) error {
		o, err := o.withPolicy(ctx, tx)
		if err != nil {
			return err
		}
		from, args := o.query()
		args = append(args, max(o.Limit, 1), max(o.Offset, 0))
		q := "SELECT " + summaryColumns + " FROM " + from +
			" ORDER BY " + order + fmt.Sprintf(" LIMIT $%d OFFSET $%d", len(args)-1, len(args))
		keys, keyArgs, keyed := keyQuery(o.Sort, o)
		// A view refreshes with the same few statements over and over:
		// plan each once per connection (generic plans of the prepared
		// statements) instead of on every refresh, since planning these
		// joins costs more than running them for a page. Filtered lists
		// keep custom plans: their cost depends on the filter's values.
		if _, err := tx.Exec(ctx, "SELECT set_config('work_mem', $1, true), set_config('plan_cache_mode', 'force_generic_plan', true)", listWorkMem); err != nil {
			return err
		}
		if w.Summary, err = fleetSummary(ctx, tx, o); err != nil {
			return err
		}
		w.Total = w.Summary.Machines
		if keyed && !filtered {
			w.Machines, err = keyedWindow(ctx, tx, o, keys, keyArgs)
			return err
		}
		if filtered {
			if _, err := tx.Exec(ctx, "SELECT set_config('plan_cache_mode', 'auto', true)"); err != nil {
				return err
			}
			if w.Total, err = CountMachines(ctx, tx, o); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		w.Machines, err = pgx.CollectRows(rows, scanSummary)
		return err
	})
	return w, err
}

// keyQuery is, for an unfiltered list, a query of every machine's id and
// sort key that joins only the tables the key needs; "%s" is the direction.
// The view's pages then cost a scan of one or two narrow tables and the rows
// of one page, not the derivation of every machine's row. Each key matches
// machineRowsSQL's column (the tests compare both paths).
func keyQuery(s Sort, o ListOptions) (string, []any, bool) {
	const provided = `FROM machines m LEFT JOIN machine_provided p ON p.machine_id = m.machine_id`
	switch s {
	case SortProvider:
		// Unprovided machines (empty provider) sort apart; the provided ones
		// come in order from the (provider, provider_id) index, as many as
		// the window can need.
		return `SELECT machine_id FROM (
				SELECT m.machine_id, '' AS provider, '' AS provider_id FROM machines m
				WHERE NOT EXISTS (SELECT 1 FROM machine_provided p WHERE p.machine_id = m.machine_id)
				UNION ALL
				(SELECT p.machine_id, p.provider, p.provider_id FROM machine_provided p
				 ORDER BY p.provider {dir}, p.provider_id {dir}
				 LIMIT {window_end})
			) k
			ORDER BY provider %[1]s, provider_id %[1]s, machine_id %[1]s`, nil, true
	case SortLocation:
		return `SELECT m.machine_id ` + provided + `
			ORDER BY coalesce(p.provider_location, '') %[1]s, coalesce(p.provider, '') %[1]s, coalesce(p.provider_id, '') %[1]s, m.machine_id %[1]s`, nil, true
	case SortAddress:
		return `SELECT m.machine_id ` + provided + `
			ORDER BY coalesce(p.provider_address, '') %[1]s, m.machine_id %[1]s`, nil, true
	case SortCreated:
		return `SELECT machine_id FROM machines ORDER BY machine_created_at %[1]s, machine_id %[1]s`, nil, true
	case SortHeartbeat:
		return `SELECT m.machine_id FROM machines m LEFT JOIN machine_agent_heartbeat h ON h.machine_id = m.machine_id
			ORDER BY h.agent_heartbeat_at %[1]s, m.machine_id %[1]s`, nil, true
	case SortWork, SortSince:
		order := `w.process %[1]s, w.work_started_at %[1]s`
		if s == SortSince {
			order = `w.work_started_at %[1]s`
		}
		return `SELECT m.machine_id FROM machines m
			LEFT JOIN work w ON w.machine_id = m.machine_id AND process_exclusion_group(w.process) = 'shepherd'
			ORDER BY ` + order + `, m.machine_id %[1]s`, nil, true
	case SortBackoff:
		// The backoff a row shows: AgentStart's before the agent started,
		// Recovery's after, else the other one.
		return `SELECT m.machine_id FROM machines m LEFT JOIN (
				SELECT b.machine_id, CASE WHEN EXISTS (SELECT 1 FROM machine_agent_started s WHERE s.machine_id = b.machine_id)
					THEN coalesce(max(b.backoff_until) FILTER (WHERE b.process = 'ShepherdRecovery'), max(b.backoff_until) FILTER (WHERE b.process = 'ShepherdAgentStart'))
					ELSE coalesce(max(b.backoff_until) FILTER (WHERE b.process = 'ShepherdAgentStart'), max(b.backoff_until) FILTER (WHERE b.process = 'ShepherdRecovery'))
					END AS backoff_until
				FROM work_backoff b WHERE b.backoff_until > now() AND b.process IN ('ShepherdAgentStart', 'ShepherdRecovery')
				GROUP BY b.machine_id) b ON b.machine_id = m.machine_id
			ORDER BY b.backoff_until %[1]s, m.machine_id %[1]s`, nil, true
	case SortState:
		// Machines in trouble get their state from the full derivation over
		// their narrow sets; every other machine is healthy or unprovided
		// (see FleetSummary). The healthy block, nearly the whole fleet, is
		// all one state, so its part of any window is among its first
		// offset+limit rows in provider order: those come from the
		// (provider, provider_id) index without sorting the fleet.
		names := make([]string, len(States))
		for i, st := range States {
			names[i] = "'" + string(st) + "'"
		}
		from, args := ListOptions{States: troubleStates, Policy: o.Policy, Thresholds: o.Thresholds}.query()
		return `WITH trouble AS MATERIALIZED (SELECT machine_id, state, provider, provider_id FROM ` + from + `)
			SELECT machine_id FROM (
				SELECT machine_id, state, provider, provider_id FROM trouble
				UNION ALL
				SELECT m.machine_id, 'unprovided', '', '' FROM machines m
				WHERE NOT EXISTS (SELECT 1 FROM machine_provided p WHERE p.machine_id = m.machine_id)
				  AND NOT EXISTS (SELECT 1 FROM trouble t WHERE t.machine_id = m.machine_id)
				UNION ALL
				(SELECT p.machine_id, 'healthy', p.provider, p.provider_id FROM machine_provided p
				 WHERE NOT EXISTS (SELECT 1 FROM trouble t WHERE t.machine_id = p.machine_id)
				 ORDER BY p.provider {dir}, p.provider_id {dir}
				 LIMIT {window_end})
			) k
			ORDER BY array_position(ARRAY[` + strings.Join(names, ",") + `], state) %[1]s, provider %[1]s, provider_id %[1]s, machine_id %[1]s`, args, true
	}
	return "", nil, false
}

// keyedWindow reads the ids of one page through a key query, then the rows
// of just those machines.
func keyedWindow(ctx context.Context, tx DB, o ListOptions, keys string, args []any) ([]MachineSummary, error) {
	dir := "ASC NULLS LAST"
	if o.Descending {
		dir = "DESC NULLS LAST"
	}
	pol := o.policy()
	args = append(slices.Clip(args), max(o.Limit, 1), max(o.Offset, 0))
	q := fmt.Sprintf(keys, dir) + fmt.Sprintf(" LIMIT $%d OFFSET $%d", len(args)-1, len(args))
	q = strings.NewReplacer(
		"{dir}", strings.TrimSuffix(dir, " NULLS LAST"), // the columns are NOT NULL; plain order matches the index
		"{window_end}", fmt.Sprintf("($%d::bigint + $%d::bigint)", len(args)-1, len(args)),
	).Replace(q)
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil || len(ids) == 0 {
		return nil, err
	}
	rows, err = tx.Query(ctx, "SELECT "+summaryColumns+" FROM ("+machineRowsSQL(pol)+") x WHERE machine_id = ANY($3)",
		append(thresholdArgs(pol), ids)...)
	if err != nil {
		return nil, err
	}
	list, err := pgx.CollectRows(rows, scanSummary)
	if err != nil {
		return nil, err
	}
	pos := make(map[uuid.UUID]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	slices.SortFunc(list, func(a, b MachineSummary) int { return pos[a.ID] - pos[b.ID] })
	return list, nil
}

// troubleStates are the states a machine outside every narrowSQL set cannot
// be in: such a machine is healthy if provided, else unprovided.
var troubleStates = []State{StateNew, StateAgentStarting, StateAwaitingHeartbeat, StateNoHeartbeat,
	StateHeartbeatStale, StateRecovering, StateBackedOff, StateAccessing,
	StateHeld, StateNeedsAttention, StateObserverGap, StateBreakerOpen, StateRecoveryRequested}

// FleetSummary counts the fleet by state, and work and unexpired backoffs by
// process, at the cost of the machines in trouble rather than of the fleet.
// The trouble states are counted exactly over their narrowSQL sets (the same
// rows and state every list shows). A machine in none of those sets has no
// work, no unexpired backoff, no pending agent start, a heartbeat and a fresh
// coarse heartbeat (never later than the exact one): healthy when provided,
// unprovided when not. So unprovided is the machines without a provided tag
// less those held by shepherd work, and healthy is the rest. A test checks
// this against the whole-fleet GROUP BY of GetStats.
func FleetSummary(ctx context.Context, db DB, th bmdb.RecoveryThresholds) (Summary, error) {
	var sum Summary
	err := snapshot(ctx, db, func(tx DB) error {
		o, err := ListOptions{Thresholds: th}.withPolicy(ctx, tx)
		if err != nil {
			return err
		}
		sum, err = fleetSummary(ctx, tx, o)
		return err
	})
	return sum, err
}

// fleetSummary is FleetSummary under o's resolved policy.
func fleetSummary(ctx context.Context, db DB, o ListOptions) (Summary, error) {
	sum := Summary{ByState: map[State]int{}, Work: map[bmdb.Process]int{}, Backoffs: map[bmdb.Process]int{}}
	err := snapshot(ctx, db, func(tx DB) error {
		from, args := ListOptions{States: troubleStates, Policy: o.Policy, Thresholds: o.Thresholds}.query()
		rows, err := tx.Query(ctx, "SELECT state, count(*) FROM "+from+" GROUP BY state", args...)
		if err != nil {
			return err
		}
		var st State
		var n, trouble int
		if _, err := pgx.ForEachRow(rows, []any{&st, &n}, func() error {
			sum.ByState[st] = n
			trouble += n
			return nil
		}); err != nil {
			return err
		}
		var provided, heldUnprovided int
		err = tx.QueryRow(ctx, `
			SELECT (SELECT count(*) FROM machines), (SELECT count(*) FROM machine_provided),
			       (SELECT count(DISTINCT w.machine_id) FROM work w
			        WHERE process_exclusion_group(w.process) = 'shepherd'
			          AND NOT EXISTS (SELECT 1 FROM machine_provided p WHERE p.machine_id = w.machine_id))`).
			Scan(&sum.Machines, &provided, &heldUnprovided)
		if err != nil {
			return err
		}
		if n := sum.Machines - provided - heldUnprovided; n > 0 {
			sum.ByState[StateUnprovided] = n
		}
		if n := sum.Machines - trouble - sum.ByState[StateUnprovided]; n > 0 {
			sum.ByState[StateHealthy] = n
		}
		if sum.Brakes, err = bmdb.Brakes(ctx, tx, o.policy()); err != nil {
			return err
		}
		rows, err = tx.Query(ctx, `
			SELECT process, count(*), 'work' FROM work GROUP BY process
			UNION ALL
			SELECT process, count(*), 'backoff' FROM work_backoff WHERE backoff_until > now() GROUP BY process`)
		if err != nil {
			return err
		}
		var p bmdb.Process
		var kind string
		_, err = pgx.ForEachRow(rows, []any{&p, &n, &kind}, func() error {
			if kind == "work" {
				sum.Work[p] = n
			} else {
				sum.Backoffs[p] = n
			}
			return nil
		})
		return err
	})
	return sum, err
}

// ErrFilteredOut means a machine exists but the list's filter leaves it out.
var ErrFilteredOut = errors.New("machine is not in the filtered list")

// WatchLocate returns the position (from 0) of machine id in the list o
// describes, or ErrFilteredOut.
func WatchLocate(ctx context.Context, db DB, o ListOptions, id uuid.UUID) (int, error) {
	order, err := watchOrder(o.Sort, o.Descending)
	if err != nil {
		return 0, err
	}
	from, args := o.query()
	args = append(args, id)
	q := "SELECT n FROM (SELECT machine_id, row_number() OVER (ORDER BY " + order + ") - 1 AS n FROM " +
		from + fmt.Sprintf(") r WHERE machine_id = $%d", len(args))
	var n int
	err = db.QueryRow(ctx, q, args...).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: %s", ErrFilteredOut, id)
	}
	return n, err
}

// WatchDetail is a machine's detail plus what the live view adds: the
// sessions holding its work and an operator's recovery request.
type WatchDetail struct {
	MachineDetail
	Sessions        map[uuid.UUID]SessionInfo
	RecoveryRequest *RecoveryRequest
	// SSHHostKey is the host key the shepherd pinned (migration 0006).
	SSHHostKey *SSHHostKeyTag
}

// SSHHostKeyTag is a pinned SSH host key: its SHA256 fingerprint, as ssh-keygen
// -l shows it, and when it was pinned.
type SSHHostKeyTag struct {
	Fingerprint string
	PinnedAt    time.Time
}

// RecoveryRequest is an operator's request that Recovery act on a machine now.
type RecoveryRequest struct {
	At time.Time
	By string
}

// GetWatchDetail reads a machine's detail with the sessions of its work and
// its recovery request, in one snapshot.
func GetWatchDetail(ctx context.Context, db DB, id uuid.UUID, o DetailOptions) (WatchDetail, error) {
	d := WatchDetail{Sessions: map[uuid.UUID]SessionInfo{}}
	err := snapshot(ctx, db, func(tx DB) error {
		var err error
		if d.MachineDetail, err = GetMachineDetail(ctx, tx, id, o); err != nil {
			return err
		}
		ids := make([]uuid.UUID, 0, len(d.Work))
		for _, w := range d.Work {
			ids = append(ids, w.SessionID)
		}
		rows, err := tx.Query(ctx, `
			SELECT session_id, session_component, session_host, session_pid, session_version, session_created_at,
			       session_interval_seconds, session_deadline, session_deadline <= now()
			FROM sessions WHERE session_id = ANY($1)`, ids)
		if err != nil {
			return err
		}
		var s SessionInfo
		if _, err := pgx.ForEachRow(rows, []any{&s.ID, &s.Component, &s.Host, &s.PID, &s.Version, &s.CreatedAt,
			&s.IntervalSeconds, &s.Deadline, &s.Expired}, func() error {
			d.Sessions[s.ID] = s
			return nil
		}); err != nil {
			return err
		}
		var key []byte
		var pinned time.Time
		err = tx.QueryRow(ctx, `SELECT ssh_host_key, ssh_host_key_pinned_at FROM machine_ssh_host_key WHERE machine_id = $1`, id).
			Scan(&key, &pinned)
		switch {
		case err == nil:
			sum := sha256.Sum256(key)
			d.SSHHostKey = &SSHHostKeyTag{Fingerprint: "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:]), PinnedAt: pinned}
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		var r RecoveryRequest
		err = tx.QueryRow(ctx, `SELECT recovery_requested_at, recovery_requested_by FROM machine_recovery_requested WHERE machine_id = $1`, id).
			Scan(&r.At, &r.By)
		switch {
		case err == nil:
			d.RecoveryRequest = &r
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		return nil
	})
	return d, err
}
