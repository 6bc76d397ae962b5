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
	// Hold is the operator's active hold that matters most (machine-wide,
	// else the process the machine waits for), if any.
	Hold *HoldMark `json:"hold"`
	// Attention is a needs-attention mark, if any (Recovery's first).
	Attention *AttentionMark `json:"attention"`
}

// HoldMark is an operator's hold on a machine.
type HoldMark struct {
	// Process is the process held, or "all".
	Process string     `json:"process"`
	Reason  string     `json:"reason"`
	Actor   string     `json:"actor"`
	Until   *time.Time `json:"until"` // nil: until released
}

// AttentionMark is a needs-attention mark: the process leaves the machine
// alone until an operator clears it.
type AttentionMark struct {
	Process bmdb.Process `json:"process"`
	Reason  string       `json:"reason"`
	Since   time.Time    `json:"since"`
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

	// Policy is the candidate rules' policy machines are judged by; nil
	// takes the one the running shepherd recorded (bmdb.CurrentPolicy).
	Policy *bmdb.Policy
	// Thresholds, where not zero, replace the policy's.
	Thresholds bmdb.RecoveryThresholds
}

// withPolicy resolves o.Policy (reading the recorded one if nil) with
// o.Thresholds over it, once per snapshot, so every query of a list judges
// by the same numbers.
func (o ListOptions) withPolicy(ctx context.Context, db DB) (ListOptions, error) {
	pol, err := resolvePolicy(ctx, db, o.Policy, o.Thresholds)
	o.Policy, o.Thresholds = &pol, pol.Thresholds
	return o, err
}

func resolvePolicy(ctx context.Context, db DB, pol *bmdb.Policy, th bmdb.RecoveryThresholds) (bmdb.Policy, error) {
	var p bmdb.Policy
	if pol != nil {
		p = *pol
	} else {
		rp, err := bmdb.CurrentPolicy(ctx, db)
		if err != nil {
			return p, err
		}
		p = rp.Policy
	}
	if th.NoHeartbeatAfterStart > 0 {
		p.Thresholds.NoHeartbeatAfterStart = th.NoHeartbeatAfterStart
	}
	if th.StaleHeartbeat > 0 {
		p.Thresholds.StaleHeartbeat = th.StaleHeartbeat
	}
	return p.WithDefaults(), nil
}

// policy is o's resolved policy (the defaults if withPolicy did not run).
func (o ListOptions) policy() bmdb.Policy {
	if o.Policy == nil {
		p, _ := resolvePolicy(context.Background(), nil, &bmdb.Policy{}, o.Thresholds)
		return p
	}
	return o.Policy.WithDefaults()
}

// machineRowsSQL is every machine with its state under pol: one row per
// machine, since each join of the candidate rules (bmdb.ViewSQL) matches at
// most one row. Plain left joins let the planner walk an index for a short
// sorted page and hash the tables for a whole-fleet scan. $1, $2: the
// policy's thresholds in seconds (thresholdArgs).
func machineRowsSQL(pol bmdb.Policy) string {
	joins, state := bmdb.ViewSQL(pol)
	return `
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
		CASE WHEN hall.machine_id IS NOT NULL THEN 'all' WHEN s.machine_id IS NULL THEN coalesce(ha.process, hr.process)::text ELSE coalesce(hr.process, ha.process)::text END AS hold_process,
		coalesce(hall.hold_reason, CASE WHEN s.machine_id IS NULL THEN coalesce(ha.hold_reason, hr.hold_reason) ELSE coalesce(hr.hold_reason, ha.hold_reason) END) AS hold_reason,
		coalesce(hall.hold_actor, CASE WHEN s.machine_id IS NULL THEN coalesce(ha.hold_actor, hr.hold_actor) ELSE coalesce(hr.hold_actor, ha.hold_actor) END) AS hold_actor,
		CASE WHEN hall.machine_id IS NOT NULL THEN hall.hold_until WHEN s.machine_id IS NULL THEN coalesce(ha.hold_until, hr.hold_until) ELSE coalesce(hr.hold_until, ha.hold_until) END AS hold_until,
		coalesce(attr.process, atta.process) AS attention_process,
		coalesce(attr.attention_reason, atta.attention_reason) AS attention_reason,
		coalesce(attr.attention_since, atta.attention_since) AS attention_since,
		` + state + ` AS state
	FROM machines m` + joins + `
	LEFT JOIN sessions ws ON ws.session_id = w.session_id`
}

// thresholdArgs are $1 and $2 of machineRowsSQL.
func thresholdArgs(pol bmdb.Policy) []any {
	return []any{pol.Thresholds.NoHeartbeatAfterStart.Seconds(), pol.Thresholds.StaleHeartbeat.Seconds()}
}

const summaryColumns = `machine_id, machine_created_at, provider, provider_id, address, location, provider_status,
	state, agent_started_at, agent_heartbeat_at,
	work_process, work_detail, work_started_at, session_id, session_component, session_host,
	backoff_process, backoff_until, backoff_cause,
	hold_process, hold_reason, hold_actor, hold_until, attention_process, attention_reason, attention_since`

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
	hProcess, hReason, hActor, aProcess, aReason           pgtype.Text
	hUntil, aSince                                         pgtype.Timestamptz
	work                                                   WorkHeld
	backoff                                                ActiveBackoff
	hold                                                   HoldMark
	attention                                              AttentionMark
	dest                                                   []any
}

func newSummaryScanner() *summaryScanner {
	s := &summaryScanner{}
	m := &s.m
	s.dest = []any{&s.id, &m.CreatedAt, &m.Provider, &m.ProviderID, &m.Address, &m.Location, &m.ProviderStatus,
		&m.State, &s.startedAt, &s.heartbeatAt,
		&s.wProcess, &s.wDetail, &s.wStarted, &s.wSession, &s.wComponent, &s.wHost,
		&s.bProcess, &s.bUntil, &s.bCause,
		&s.hProcess, &s.hReason, &s.hActor, &s.hUntil, &s.aProcess, &s.aReason, &s.aSince}
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
	m.AgentStartedAt, m.LastHeartbeatAt, m.Work, m.Backoff, m.Hold, m.Attention = nil, nil, nil, nil, nil, nil
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
	if s.hProcess.Valid {
		s.hold = HoldMark{Process: s.hProcess.String, Reason: s.hReason.String, Actor: s.hActor.String}
		if s.hUntil.Valid {
			t := s.hUntil.Time
			s.hold.Until = &t
		}
		m.Hold = &s.hold
	}
	if s.aProcess.Valid {
		s.attention = AttentionMark{Process: bmdb.Process(s.aProcess.String), Reason: s.aReason.String, Since: s.aSince.Time}
		m.Attention = &s.attention
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
	if c.Hold != nil {
		h := *c.Hold
		if h.Until != nil {
			t := *h.Until
			h.Until = &t
		}
		c.Hold = &h
	}
	if c.Attention != nil {
		a := *c.Attention
		c.Attention = &a
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
	StateHeartbeatStale:    staleNarrow,
	StateHeld:              "SELECT machine_id FROM machine_holds",
	StateNeedsAttention:    "SELECT machine_id FROM machine_attention UNION " + deadNarrow,
	StateObserverGap:       deadNarrow,
	StateBreakerOpen:       deadNarrow,
	StateRecoveryRequested: "SELECT machine_id FROM machine_recovery_requested",
}

// deadNarrow holds every machine Recovery's dead condition may hold for,
// requests aside: started agents that never heart-beat and stale heartbeats.
const (
	staleNarrow = "SELECT machine_id FROM machine_agent_heartbeat WHERE agent_heartbeat_coarse_at < now() - make_interval(secs => $2)"
	deadNarrow  = "SELECT machine_id FROM machine_agent_started WHERE NOT agent_heartbeat_seen UNION " + staleNarrow
)

// where builds the WHERE clause of a list over "(machineRowsSQL) x", with
// parameters numbered after the two thresholds.
func (o ListOptions) where() (string, []any) {
	args := thresholdArgs(o.policy())
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
	return snapshot(ctx, db, func(db DB) error {
		o, err := o.withPolicy(ctx, db)
		if err != nil {
			return err
		}
		return o.runIn(ctx, db, fn)
	})
}

func (o ListOptions) runIn(ctx context.Context, db DB, fn func(pgx.Rows) error) error {
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
	if _, err := db.Exec(ctx, "SELECT set_config('work_mem', $1, true)", listWorkMem); err != nil {
		return err
	}
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return err
	}
	return fn(rows)
}

// CountMachines returns how many machines pass the filters of o (ignoring
// its sort and paging), for a pager's "rows x-y of n".
func CountMachines(ctx context.Context, db DB, o ListOptions) (int, error) {
	o, err := o.withPolicy(ctx, db)
	if err != nil {
		return 0, err
	}
	from, args := o.query()
	var n int
	err = db.QueryRow(ctx, "SELECT count(*) FROM "+from, args...).Scan(&n)
	return n, err
}

// GetMachine returns the summary of one machine, or ErrUnknownMachine.
func GetMachine(ctx context.Context, db DB, id uuid.UUID, th bmdb.RecoveryThresholds) (MachineSummary, error) {
	pol, err := resolvePolicy(ctx, db, nil, th)
	if err != nil {
		return MachineSummary{}, err
	}
	rows, err := db.Query(ctx, "SELECT "+summaryColumns+" FROM ("+machineRowsSQL(pol)+") x WHERE machine_id = $3",
		append(thresholdArgs(pol), id)...)
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
	rows := machineRowsSQL(o.policy())
	if len(sets) > 0 {
		rows = strings.Replace(rows, "FROM machines m",
			"FROM ("+strings.Join(sets, " INTERSECT ")+") narrowed JOIN machines m ON m.machine_id = narrowed.machine_id", 1)
	}
	return "(" + rows + ") x " + where, args
}
