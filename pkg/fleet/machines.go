package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// MachineSummary is one row of a machine list: who the machine is, what state
// it is in, what holds it and what it waits for.
type MachineSummary struct {
	ID              uuid.UUID  `json:"machine_id"`
	CreatedAt       time.Time  `json:"created_at"`
	Provider        string     `json:"provider"`
	ProviderID      string     `json:"provider_id"`
	Address         string     `json:"address"`
	Location        string     `json:"location"`
	ProviderStatus  string     `json:"provider_status"`
	State           State      `json:"state"`
	AgentStartedAt  *time.Time `json:"agent_started_at"`
	LastHeartbeatAt *time.Time `json:"last_heartbeat_at"`
	// Work is the shepherd work held on the machine, if any.
	Work *WorkHeld `json:"work"`
	// Backoff is the unexpired backoff that matters for the machine's state
	// (AgentStart before the agent started, Recovery after), else any
	// unexpired one.
	Backoff *ActiveBackoff `json:"backoff"`
}

// WorkHeld is a work item and the session that holds it.
type WorkHeld struct {
	Process          bmdb.Process `json:"process"`
	Detail           string       `json:"detail"`
	StartedAt        time.Time    `json:"started_at"`
	SessionID        uuid.UUID    `json:"session_id"`
	SessionComponent string       `json:"session_component"`
	SessionHost      string       `json:"session_host"`
}

// ActiveBackoff is why and until when a process leaves a machine alone.
type ActiveBackoff struct {
	Process bmdb.Process `json:"process"`
	Until   time.Time    `json:"until"`
	Cause   string       `json:"cause"`
}

// Sort names a machine list order. Every order ends with the machine id, so
// pages are stable.
type Sort string

const (
	SortID        Sort = "id"
	SortProvider  Sort = "provider" // provider, then provider id
	SortLocation  Sort = "location"
	SortState     Sort = "state"
	SortSince     Sort = "since" // when the current work started
	SortHeartbeat Sort = "heartbeat"
	SortCreated   Sort = "created"
)

// Sorts lists the orders a list accepts.
var Sorts = []Sort{SortID, SortProvider, SortLocation, SortState, SortSince, SortHeartbeat, SortCreated}

var sortSQL = map[Sort]string{
	SortID:        "machine_id",
	SortProvider:  "provider, provider_id",
	SortLocation:  "location, provider, provider_id",
	SortState:     stateOrderSQL + ", provider, provider_id",
	SortSince:     "work_started_at",
	SortHeartbeat: "agent_heartbeat_at",
	SortCreated:   "machine_created_at",
}

// stateOrderSQL orders states as States does (a machine's life, then
// trouble), not alphabetically. No ", " inside: sortSQL's values are split
// on it.
var stateOrderSQL = func() string {
	names := make([]string, len(States))
	for i, st := range States {
		names[i] = "'" + string(st) + "'"
	}
	return "array_position(ARRAY[" + strings.Join(names, ",") + "],state)"
}()

// ParseSort accepts a sort name, case-insensitively.
func ParseSort(s string) (Sort, error) {
	for _, o := range Sorts {
		if strings.EqualFold(s, string(o)) {
			return o, nil
		}
	}
	names := make([]string, len(Sorts))
	for i, o := range Sorts {
		names[i] = string(o)
	}
	return "", fmt.Errorf("unknown sort %q (want one of %s)", s, strings.Join(names, ", "))
}

// ListOptions filter, sort and page a machine list. Zero values mean no
// filter, sort by id, no paging and the default recovery thresholds.
type ListOptions struct {
	// States keeps machines in any of these states.
	States []State
	// Process keeps machines this process holds work on or backs off from.
	Process bmdb.Process
	// Provider and Location keep machines with exactly this provider or location.
	Provider string
	Location string
	// Match keeps machines whose id, provider id, address, location or work
	// detail contains this text, case-insensitively; MatchInvert keeps the others.
	Match       string
	MatchInvert bool

	Sort       Sort
	Descending bool
	// Limit caps the rows returned (0: all); Offset skips rows first.
	Limit  int
	Offset int

	// Thresholds decide healthy, awaiting_heartbeat, no_heartbeat and
	// heartbeat_stale; zero fields take bmdb.DefaultRecoveryThresholds.
	Thresholds bmdb.RecoveryThresholds
}

func thresholdsOrDefault(th bmdb.RecoveryThresholds) bmdb.RecoveryThresholds {
	if th.NoHeartbeatAfterStart <= 0 {
		th.NoHeartbeatAfterStart = bmdb.DefaultRecoveryThresholds.NoHeartbeatAfterStart
	}
	if th.StaleHeartbeat <= 0 {
		th.StaleHeartbeat = bmdb.DefaultRecoveryThresholds.StaleHeartbeat
	}
	return th
}

// machineRowsSQL is every machine with its state: one row per machine, since
// each join matches at most one row (the shepherd's work is unique per
// machine by the work_exclusion index, backoffs by their primary key). Plain
// left joins let the planner walk an index for a short sorted page and hash
// the tables for a whole-fleet scan. $1, $2: thresholds in seconds.
const machineRowsSQL = `
	SELECT m.machine_id, m.machine_created_at,
		coalesce(p.provider, '') AS provider, coalesce(p.provider_id, '') AS provider_id,
		coalesce(p.provider_address, '') AS address, coalesce(p.provider_location, '') AS location,
		coalesce(p.provider_status, '') AS provider_status,
		s.agent_started_at, h.agent_heartbeat_at,
		w.process AS work_process, w.work_detail, w.work_started_at, w.session_id,
		ws.session_component, ws.session_host,
		CASE WHEN s.machine_id IS NULL THEN coalesce(ba.process, br.process) ELSE coalesce(br.process, ba.process) END AS backoff_process,
		CASE WHEN s.machine_id IS NULL THEN coalesce(ba.backoff_until, br.backoff_until) ELSE coalesce(br.backoff_until, ba.backoff_until) END AS backoff_until,
		CASE WHEN s.machine_id IS NULL THEN coalesce(ba.backoff_cause, br.backoff_cause) ELSE coalesce(br.backoff_cause, ba.backoff_cause) END AS backoff_cause,
		` + stateSQL + ` AS state
	FROM machines m
	LEFT JOIN machine_provided p ON p.machine_id = m.machine_id
	LEFT JOIN machine_agent_started s ON s.machine_id = m.machine_id
	LEFT JOIN machine_agent_heartbeat h ON h.machine_id = m.machine_id
	LEFT JOIN work w ON w.machine_id = m.machine_id AND process_exclusion_group(w.process) = 'shepherd'
	LEFT JOIN sessions ws ON ws.session_id = w.session_id
	LEFT JOIN work_backoff ba ON ba.machine_id = m.machine_id AND ba.process = 'ShepherdAgentStart' AND ba.backoff_until > now()
	LEFT JOIN work_backoff br ON br.machine_id = m.machine_id AND br.process = 'ShepherdRecovery' AND br.backoff_until > now()`

const summaryColumns = `machine_id, machine_created_at, provider, provider_id, address, location, provider_status,
	state, agent_started_at, agent_heartbeat_at,
	work_process, work_detail, work_started_at, session_id, session_component, session_host,
	backoff_process, backoff_until, backoff_cause`

func scanSummary(row pgx.CollectableRow) (MachineSummary, error) {
	// A scanner of its own: the summary may point into it.
	m, err := newSummaryScanner().scan(row)
	if err != nil {
		return MachineSummary{}, err
	}
	return *m, nil
}

// summaryScanner reads summary rows. Its scan destinations are made once and
// reused for every row: made per row they escape to the heap, a dozen
// allocations per machine of a whole fleet's list. Nullable columns go
// through pgtype values, and the id through pgtype.UUID, whose binary form
// needs no parsing.
type summaryScanner struct {
	m                                                      MachineSummary
	id, wSession                                           pgtype.UUID
	startedAt, heartbeatAt, wStarted, bUntil               pgtype.Timestamptz
	wProcess, wDetail, wComponent, wHost, bProcess, bCause pgtype.Text
	work                                                   WorkHeld
	backoff                                                ActiveBackoff
	dest                                                   []any
}

func newSummaryScanner() *summaryScanner {
	s := &summaryScanner{}
	m := &s.m
	s.dest = []any{&s.id, &m.CreatedAt, &m.Provider, &m.ProviderID, &m.Address, &m.Location, &m.ProviderStatus,
		&m.State, &s.startedAt, &s.heartbeatAt,
		&s.wProcess, &s.wDetail, &s.wStarted, &s.wSession, &s.wComponent, &s.wHost,
		&s.bProcess, &s.bUntil, &s.bCause}
	return s
}

// scan reads a row into the scanner's summary and returns it. The summary's
// pointers point into the scanner, so it is valid until the next scan; kept
// makes a copy that stays.
func (s *summaryScanner) scan(row pgx.Row) (*MachineSummary, error) {
	if err := row.Scan(s.dest...); err != nil {
		return nil, err
	}
	m := &s.m
	m.ID = s.id.Bytes
	m.AgentStartedAt, m.LastHeartbeatAt, m.Work, m.Backoff = nil, nil, nil, nil
	if s.startedAt.Valid {
		m.AgentStartedAt = &s.startedAt.Time
	}
	if s.heartbeatAt.Valid {
		m.LastHeartbeatAt = &s.heartbeatAt.Time
	}
	if s.wProcess.Valid {
		s.work = WorkHeld{Process: bmdb.Process(s.wProcess.String), Detail: s.wDetail.String, StartedAt: s.wStarted.Time,
			SessionID: s.wSession.Bytes, SessionComponent: s.wComponent.String, SessionHost: s.wHost.String}
		m.Work = &s.work
	}
	if s.bProcess.Valid {
		s.backoff = ActiveBackoff{Process: bmdb.Process(s.bProcess.String), Until: s.bUntil.Time, Cause: s.bCause.String}
		m.Backoff = &s.backoff
	}
	return m, nil
}

// kept copies the last row scanned, pointers included, so that it outlives
// the next scan.
func (s *summaryScanner) kept() MachineSummary { return s.m.Clone() }

// Clone copies m with what it points to, for keeping a machine EachMachine
// hands over.
func (m *MachineSummary) Clone() MachineSummary {
	c := *m
	if c.AgentStartedAt != nil {
		t := *c.AgentStartedAt
		c.AgentStartedAt = &t
	}
	if c.LastHeartbeatAt != nil {
		t := *c.LastHeartbeatAt
		c.LastHeartbeatAt = &t
	}
	if c.Work != nil {
		w := *c.Work
		c.Work = &w
	}
	if c.Backoff != nil {
		b := *c.Backoff
		c.Backoff = &b
	}
	return c
}

// collectSummaries reads summary rows in chunks and copies them once into a
// slice of the exact size: growing one slice of a hundred thousand structs by
// doubling costs more than the query.
func collectSummaries(rows pgx.Rows) ([]MachineSummary, error) {
	defer rows.Close()
	var (
		chunks [][]MachineSummary
		cur    = make([]MachineSummary, 0, 256)
		total  int
	)
	s := newSummaryScanner()
	for rows.Next() {
		if len(cur) == cap(cur) {
			chunks = append(chunks, cur)
			cur = make([]MachineSummary, 0, min(2*cap(cur), 16384))
		}
		if _, err := s.scan(rows); err != nil {
			return nil, err
		}
		cur = append(cur, s.kept())
		total++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(chunks) == 0 {
		return cur, nil
	}
	out := make([]MachineSummary, 0, total)
	for _, c := range chunks {
		out = append(out, c...)
	}
	return append(out, cur...), nil
}

// narrowSQL is, per state, a cheap superset of the machines in that state,
// read from a small table or a partial index (migration 0004); absent
// for the states most of a fleet is in, where only a full scan can tell.
var narrowSQL = map[State]string{
	StateAgentStarting:     "SELECT machine_id FROM work",
	StateRecovering:        "SELECT machine_id FROM work",
	StateAccessing:         "SELECT machine_id FROM work",
	StateNew:               "SELECT machine_id FROM machine_provided WHERE awaiting_agent",
	StateBackedOff:         "SELECT machine_id FROM work_backoff WHERE backoff_until > now()",
	StateAwaitingHeartbeat: "SELECT machine_id FROM machine_agent_started WHERE NOT agent_heartbeat_seen",
	StateNoHeartbeat:       "SELECT machine_id FROM machine_agent_started WHERE NOT agent_heartbeat_seen",
	StateHeartbeatStale:    "SELECT machine_id FROM machine_agent_heartbeat WHERE agent_heartbeat_coarse_at < now() - make_interval(secs => $2)",
}

// where builds the WHERE clause of a list over "(machineRowsSQL) x", with
// parameters numbered after the two thresholds.
func (o ListOptions) where() (string, []any) {
	th := thresholdsOrDefault(o.Thresholds)
	args := []any{th.NoHeartbeatAfterStart.Seconds(), th.StaleHeartbeat.Seconds()}
	param := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var conds []string
	if len(o.States) > 0 {
		states := make([]string, len(o.States))
		for i, st := range o.States {
			states[i] = string(st)
		}
		conds = append(conds, "state = ANY("+param(states)+"::text[])")
	}
	if o.Process != "" {
		p := param(string(o.Process))
		conds = append(conds, "(work_process::text = "+p+" OR backoff_process::text = "+p+")")
	}
	if o.Provider != "" {
		conds = append(conds, "provider = "+param(o.Provider))
	}
	if o.Location != "" {
		conds = append(conds, "location = "+param(o.Location))
	}
	if o.Match != "" {
		p := param("%" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(o.Match) + "%")
		cond := "(machine_id::text ILIKE " + p + " OR provider_id ILIKE " + p + " OR address ILIKE " + p +
			" OR location ILIKE " + p + " OR coalesce(work_detail, '') ILIKE " + p + ")"
		if o.MatchInvert {
			cond = "NOT " + cond
		}
		conds = append(conds, cond)
	}
	if len(conds) == 0 {
		return "", args
	}
	return "WHERE " + strings.Join(conds, " AND "), args
}

// listWorkMem lets a whole-fleet list sort in memory rather than on disk.
const listWorkMem = "64MB"

// ListMachines returns the machines that pass the filters of o, sorted and
// paged in SQL.
func ListMachines(ctx context.Context, db DB, o ListOptions) ([]MachineSummary, error) {
	var list []MachineSummary
	err := o.run(ctx, db, func(rows pgx.Rows) error {
		var err error
		list, err = collectSummaries(rows)
		return err
	})
	return list, err
}

// EachMachine calls fn with the machines ListMachines would return, in its
// order, each as its row arrives: a caller that prints them decodes while
// the server still sends, and holds one machine at a time. m and what it
// points to are reused for the next row, so fn must copy what it keeps. fn
// runs inside the list's read-only transaction, so it should not wait on
// anything slow (print to memory, not to a pager). An error from fn stops
// the list and is returned.
func EachMachine(ctx context.Context, db DB, o ListOptions, fn func(m *MachineSummary) error) error {
	return o.run(ctx, db, func(rows pgx.Rows) error {
		defer rows.Close()
		s := newSummaryScanner()
		for rows.Next() {
			m, err := s.scan(rows)
			if err != nil {
				return err
			}
			if err := fn(m); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// run queries the list o asks for in one snapshot and hands its rows to fn.
func (o ListOptions) run(ctx context.Context, db DB, fn func(pgx.Rows) error) error {
	from, args := o.query()
	sort := o.Sort
	if sort == "" {
		sort = SortID
	}
	cols, ok := sortSQL[sort]
	if !ok {
		return fmt.Errorf("unknown sort %q", sort)
	}
	dir := " ASC NULLS LAST"
	if o.Descending {
		dir = " DESC NULLS LAST"
	}
	var order []string
	for _, c := range strings.Split(cols, ", ") {
		order = append(order, c+dir)
	}
	if sort != SortID {
		order = append(order, "machine_id"+dir)
	}
	q := "SELECT " + summaryColumns + " FROM " + from + " ORDER BY " + strings.Join(order, ", ")
	if o.Limit > 0 {
		args = append(args, o.Limit)
		q += fmt.Sprintf(" LIMIT $%d", len(args))
	}
	if o.Offset > 0 {
		args = append(args, o.Offset)
		q += fmt.Sprintf(" OFFSET $%d", len(args))
	}
	return snapshot(ctx, db, func(db DB) error {
		if _, err := db.Exec(ctx, "SELECT set_config('work_mem', $1, true)", listWorkMem); err != nil {
			return err
		}
		rows, err := db.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		return fn(rows)
	})
}

// CountMachines returns how many machines pass the filters of o (ignoring
// its sort and paging), for a pager's "rows x-y of n".
func CountMachines(ctx context.Context, db DB, o ListOptions) (int, error) {
	from, args := o.query()
	var n int
	err := db.QueryRow(ctx, "SELECT count(*) FROM "+from, args...).Scan(&n)
	return n, err
}

// GetMachine returns the summary of one machine, or ErrUnknownMachine.
func GetMachine(ctx context.Context, db DB, id uuid.UUID, th bmdb.RecoveryThresholds) (MachineSummary, error) {
	th = thresholdsOrDefault(th)
	rows, err := db.Query(ctx, "SELECT "+summaryColumns+" FROM ("+machineRowsSQL+") x WHERE machine_id = $3",
		th.NoHeartbeatAfterStart.Seconds(), th.StaleHeartbeat.Seconds(), id)
	if err != nil {
		return MachineSummary{}, err
	}
	m, err := pgx.CollectExactlyOneRow(rows, scanSummary)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, fmt.Errorf("%w: %s", ErrUnknownMachine, id)
	}
	return m, err
}

// query is the FROM item of a filtered list, "(machine rows) x WHERE ...",
// with its parameters (the two thresholds first). When every state asked for
// has a cheap superset (narrowSQL), or a process is asked for, the machine
// rows are driven from that small set of ids rather than from the whole fleet,
// so a filter for trouble costs what the trouble costs. (The narrowing must
// come first in the FROM list: with this many joins the planner keeps the
// written join order.)
func (o ListOptions) query() (string, []any) {
	where, args := o.where()
	var sets []string
	if len(o.States) > 0 {
		var narrow []string
		for _, st := range o.States {
			if n, ok := narrowSQL[st]; ok {
				narrow = append(narrow, n)
			}
		}
		if len(narrow) == len(o.States) {
			sets = append(sets, "("+strings.Join(narrow, " UNION ")+")")
		}
	}
	if o.Process != "" {
		args = append(args, string(o.Process))
		p := fmt.Sprintf("$%d", len(args))
		sets = append(sets, "(SELECT machine_id FROM work WHERE process::text = "+p+
			" UNION SELECT machine_id FROM work_backoff WHERE process::text = "+p+" AND backoff_until > now())")
	}
	rows := machineRowsSQL
	if len(sets) > 0 {
		rows = strings.Replace(rows, "FROM machines m",
			"FROM ("+strings.Join(sets, " INTERSECT ")+") narrowed JOIN machines m ON m.machine_id = narrowed.machine_id", 1)
	}
	return "(" + rows + ") x " + where, args
}
