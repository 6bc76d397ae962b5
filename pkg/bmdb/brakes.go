package bmdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The brakes' writes: the heartbeat observer's liveness (the endpoint), the
// breakers' evaluation, hold expiry and the remediation budget's marks (the
// shepherd, every second). The rules that read them are in rules.go.

const (
	EventHoldExpired     Event = "HoldExpired"
	EventAttentionMarked Event = "AttentionMarked"
)

// ObserverBeat records that a heartbeat endpoint is alive and writing to
// BMDB. A silence longer than gap since the last beat of any endpoint (the
// endpoints down, or BMDB unreachable) is a gap: it is recorded, and the
// watch restarts now, so no machine counts as stale until a full threshold
// has passed. It returns when the current watch began. (prev is the row as
// it was before this statement: the snapshot every part of it reads.)
func ObserverBeat(ctx context.Context, db DBTX, gap time.Duration, host string) (since time.Time, err error) {
	err = db.QueryRow(ctx, `
		WITH prev AS (
			SELECT observer_alive_at, observer_gap_seconds FROM heartbeat_observer
		), beat AS (
			INSERT INTO heartbeat_observer AS o (observer_alive_at, observer_since, observer_gap_seconds, observer_host)
			VALUES (now(), now(), $1, $2)
			ON CONFLICT (observer_singleton) DO UPDATE SET
				observer_since = CASE WHEN o.observer_alive_at < now() - make_interval(secs => o.observer_gap_seconds)
					THEN now() ELSE o.observer_since END,
				observer_alive_at = greatest(o.observer_alive_at, now()),
				observer_gap_seconds = excluded.observer_gap_seconds,
				observer_host = excluded.observer_host
			RETURNING observer_since
		), gap AS (
			INSERT INTO heartbeat_observer_gaps (gap_from, gap_to)
			SELECT p.observer_alive_at, now() FROM prev p, beat b
			WHERE p.observer_alive_at < now() - make_interval(secs => p.observer_gap_seconds)
			  AND b.observer_since = now() -- this beat started the watch (not a concurrent one)
		)
		SELECT observer_since FROM beat`, gap.Seconds(), host).Scan(&since)
	return since, err
}

// BreakerState is one circuit breaker as last evaluated.
type BreakerState struct {
	// Scope is "fleet" or "location:<name>".
	Scope    string `json:"scope"`
	Open     bool   `json:"open"`
	Tripped  bool   `json:"tripped"` // too many silent, whether or not overridden
	Silent   int64  `json:"silent"`
	Machines int64  `json:"machines"`
	Limit    int64  `json:"limit"`
	// OpenedAt: since when it is tripped.
	OpenedAt    *time.Time `json:"opened_at"`
	EvaluatedAt time.Time  `json:"evaluated_at"`
	// Override is the operator's override closing it, if any.
	Override *BreakerOverride `json:"override"`
}

// BreakerOverride is an operator forcing a breaker closed until Until.
type BreakerOverride struct {
	Until  time.Time `json:"until"`
	Reason string    `json:"reason"`
	Actor  string    `json:"actor"`
}

// Location is the location a scope names, "" for the fleet.
func (b BreakerState) Location() (string, bool) {
	if len(b.Scope) > len("location:") && b.Scope[:len("location:")] == "location:" {
		return b.Scope[len("location:"):], true
	}
	return "", b.Scope == "location:"
}

// silentSQL counts machines the breaker counts as silent: provided, agent
// started, last heartbeat older than the breaker's silence, not excused by
// an operator (held for Recovery, or marked as needing attention).
func breakerSilentSQL(silence string) string {
	return `
		SELECT coalesce(p.provider_location, '') AS loc
		FROM machine_agent_heartbeat h
		JOIN machine_agent_started s ON s.machine_id = h.machine_id
		JOIN machine_provided p ON p.machine_id = h.machine_id
		WHERE h.agent_heartbeat_coarse_at < ` + ago(silence) + ` AND h.agent_heartbeat_at < ` + ago(silence) + `
		  AND NOT EXISTS (SELECT 1 FROM machine_holds x WHERE x.machine_id = h.machine_id
		                  AND (x.process IS NULL OR x.process = 'ShepherdRecovery') AND (x.hold_until IS NULL OR x.hold_until > now()))
		  AND NOT EXISTS (SELECT 1 FROM machine_attention a WHERE a.machine_id = h.machine_id AND a.process = 'ShepherdRecovery')`
}

// EvaluateBreakers judges every breaker under pol in one statement, on one
// snapshot, and records the result in breaker_states, where every claim
// reads it: the fleet's, and one per location with silent machines (a
// location without a row is closed). Evaluations of several shepherds take
// turns. It returns the states, the fleet's first.
func EvaluateBreakers(ctx context.Context, db *pgxpool.Pool, pol Policy) ([]BreakerState, error) {
	pol = pol.WithDefaults()
	b := pol.Breaker
	var states []BreakerState
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('bmctl breakers'))`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			WITH silent AS (`+breakerSilentSQL(num(b.Silence.Seconds()))+`
			), by_loc AS (
				SELECT loc, count(*) AS n FROM silent GROUP BY loc
			), scopes AS (
				SELECT 'fleet' AS scope, (SELECT coalesce(sum(n), 0) FROM by_loc)::bigint AS silent,
				       (SELECT coalesce(sum(location_machines), 0) FROM machine_location_counts)::bigint AS machines,
				       $1::bigint AS absolute, $2::float8 AS fraction
				UNION ALL
				SELECT 'location:' || b.loc, b.n, coalesce(c.location_machines, 0), $3::bigint, $4::float8
				FROM by_loc b LEFT JOIN machine_location_counts c ON c.provider_location = b.loc
			), judged AS (
				SELECT scope, silent, machines, greatest(absolute, floor(fraction * machines))::bigint AS lim FROM scopes
			), upserted AS (
				INSERT INTO breaker_states AS b (breaker_scope, breaker_open, breaker_tripped, breaker_silent,
					breaker_machines, breaker_limit, breaker_evaluated_at, breaker_opened_at)
				SELECT j.scope, j.silent > j.lim AND o.breaker_scope IS NULL, j.silent > j.lim, j.silent,
					j.machines, j.lim, now(), CASE WHEN j.silent > j.lim THEN now() END
				FROM judged j LEFT JOIN breaker_overrides o ON o.breaker_scope = j.scope AND o.override_until > now()
				ORDER BY j.scope
				ON CONFLICT (breaker_scope) DO UPDATE SET
					breaker_open = excluded.breaker_open, breaker_tripped = excluded.breaker_tripped,
					breaker_silent = excluded.breaker_silent, breaker_machines = excluded.breaker_machines,
					breaker_limit = excluded.breaker_limit, breaker_evaluated_at = excluded.breaker_evaluated_at,
					breaker_opened_at = CASE WHEN NOT excluded.breaker_tripped THEN NULL
						WHEN b.breaker_tripped THEN b.breaker_opened_at ELSE excluded.breaker_opened_at END
				RETURNING *
			), removed AS (
				DELETE FROM breaker_states WHERE breaker_scope NOT IN (SELECT scope FROM judged)
			)
			SELECT u.breaker_scope, u.breaker_open, u.breaker_tripped, u.breaker_silent, u.breaker_machines,
			       u.breaker_limit, u.breaker_opened_at, u.breaker_evaluated_at,
			       o.override_until, o.override_reason, o.override_actor
			FROM upserted u LEFT JOIN breaker_overrides o ON o.breaker_scope = u.breaker_scope AND o.override_until > now()
			ORDER BY u.breaker_scope <> 'fleet', u.breaker_scope`,
			b.MaxSilent, b.MaxSilentFraction, b.LocationMaxSilent, b.LocationMaxSilentFraction)
		if err != nil {
			return err
		}
		states, err = collectBreakers(rows)
		return err
	})
	return states, err
}

// Breakers reads the breakers as last evaluated, the fleet's first.
func Breakers(ctx context.Context, db DBTX) ([]BreakerState, error) {
	rows, err := db.Query(ctx, `
		SELECT b.breaker_scope, b.breaker_open, b.breaker_tripped, b.breaker_silent, b.breaker_machines,
		       b.breaker_limit, b.breaker_opened_at, b.breaker_evaluated_at,
		       o.override_until, o.override_reason, o.override_actor
		FROM breaker_states b LEFT JOIN breaker_overrides o ON o.breaker_scope = b.breaker_scope AND o.override_until > now()
		ORDER BY b.breaker_scope <> 'fleet', b.breaker_scope`)
	if err != nil {
		return nil, err
	}
	return collectBreakers(rows)
}

func collectBreakers(rows pgx.Rows) ([]BreakerState, error) {
	var out []BreakerState
	for rows.Next() {
		var (
			s      BreakerState
			until  *time.Time
			reason *string
			actor  *string
		)
		if err := rows.Scan(&s.Scope, &s.Open, &s.Tripped, &s.Silent, &s.Machines, &s.Limit, &s.OpenedAt, &s.EvaluatedAt,
			&until, &reason, &actor); err != nil {
			rows.Close()
			return nil, err
		}
		if until != nil {
			s.Override = &BreakerOverride{Until: *until, Reason: *reason, Actor: *actor}
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// Recorder names who writes a history event the shepherd records itself.
type Recorder struct {
	Session   uuid.UUID
	Component string
	Host      string
}

// ExpireHolds deletes holds past their end and records a HoldExpired event
// for each (a machine-wide hold's under Recovery, as placing it was). The
// rules stop honouring a hold at its end by themselves; this makes it
// history. It returns the number of holds expired.
func ExpireHolds(ctx context.Context, db DBTX, by Recorder) (int, error) {
	tag, err := db.Exec(ctx, `
		WITH gone AS (
			DELETE FROM machine_holds WHERE hold_until <= now()
			RETURNING machine_id, process, hold_reason, hold_actor, hold_placed_at, hold_until
		)
		INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
		SELECT machine_id, coalesce(process, 'ShepherdRecovery'), 'HoldExpired',
		       'hold by ' || hold_actor || ' (' || hold_reason || ') placed ' ||
		       to_char(hold_placed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC expired' ||
		       CASE WHEN process IS NULL THEN ' (every process)' ELSE '' END,
		       $1, $2, $3
		FROM gone`, by.Session, by.Component, by.Host)
	if err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}

// MarkOverBudget gives a needs-attention mark to machines that Recovery
// would act on but for its remediation budget, with an AttentionMarked
// event, and returns them. Recovery then leaves them alone, and views show
// them, until an operator clears the mark.
func MarkOverBudget(ctx context.Context, db DBTX, pol Policy, by Recorder) ([]uuid.UUID, error) {
	pol = pol.WithDefaults()
	reason := fmt.Sprintf("remediation budget exhausted: %d Recovery attempts within %s and still not heart-beating",
		pol.Budget.Attempts, pol.Budget.Window)
	rows, err := db.Query(ctx, `
		WITH over AS (`+recoverySQL(literalParams(pol), "within_budget", "", 100)+`
		), marked AS (
			INSERT INTO machine_attention (machine_id, process, attention_reason)
			SELECT DISTINCT machine_id, 'ShepherdRecovery'::process, $1 FROM over
			ON CONFLICT DO NOTHING
			RETURNING machine_id
		), logged AS (
			INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
			SELECT machine_id, 'ShepherdRecovery', 'AttentionMarked', $1, $2, $3, $4 FROM marked
		)
		SELECT machine_id FROM marked`, reason, by.Session, by.Component, by.Host)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}

// scope names for breaker overrides and states.
func LocationScope(location string) string { return "location:" + location }

// ObserverState is the heartbeat observer as recorded.
type ObserverState struct {
	AliveAt time.Time `json:"alive_at"`
	Since   time.Time `json:"since"`
	Gap     float64   `json:"gap_seconds"`
	Host    string    `json:"host"`
	// Alive: an endpoint wrote within the gap.
	Alive bool `json:"alive"`
	// LastGap is the latest gap seen, if any.
	LastGap *ObserverGap `json:"last_gap"`
}

// ObserverGap is a time no endpoint was alive and writing.
type ObserverGap struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// BrakesStatus is the brakes at a glance, for stats and the TUI.
type BrakesStatus struct {
	Breakers []BreakerState `json:"breakers"`
	// Stopped lists the scopes where Recovery stops: open breakers, and
	// "fleet" when its breaker was not evaluated within the policy's MaxAge
	// (Stale).
	Stopped []string `json:"stopped"`
	Stale   bool     `json:"stale"`
	// Observer is nil when no endpoint ever recorded itself.
	Observer *ObserverState `json:"observer"`
	Holds    int            `json:"holds"`
	// Attention counts needs-attention marks.
	Attention int `json:"attention"`
}

// Brakes reads the brakes' state under pol (for MaxAge).
func Brakes(ctx context.Context, db DBTX, pol Policy) (BrakesStatus, error) {
	pol = pol.WithDefaults()
	var st BrakesStatus
	var err error
	if st.Breakers, err = Breakers(ctx, db); err != nil {
		return st, err
	}
	var fresh bool
	err = db.QueryRow(ctx, `
		SELECT coalesce((SELECT breaker_evaluated_at > now() - make_interval(secs => $1) FROM breaker_states WHERE breaker_scope = 'fleet'), false),
		       (SELECT count(*) FROM machine_holds WHERE hold_until IS NULL OR hold_until > now()),
		       (SELECT count(*) FROM machine_attention)`, pol.Breaker.MaxAge.Seconds()).Scan(&fresh, &st.Holds, &st.Attention)
	if err != nil {
		return st, err
	}
	st.Stale = !fresh
	if st.Stale {
		st.Stopped = append(st.Stopped, "fleet")
	}
	for _, b := range st.Breakers {
		if b.Open && !(st.Stale && b.Scope == "fleet") {
			st.Stopped = append(st.Stopped, b.Scope)
		}
	}
	var o ObserverState
	var from, to *time.Time
	err = db.QueryRow(ctx, `
		SELECT o.observer_alive_at, o.observer_since, o.observer_gap_seconds, o.observer_host,
		       o.observer_alive_at > now() - make_interval(secs => o.observer_gap_seconds), g.gap_from, g.gap_to
		FROM heartbeat_observer o
		LEFT JOIN LATERAL (SELECT gap_from, gap_to FROM heartbeat_observer_gaps ORDER BY gap_id DESC LIMIT 1) g ON true`).
		Scan(&o.AliveAt, &o.Since, &o.Gap, &o.Host, &o.Alive, &from, &to)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return st, nil
	case err != nil:
		return st, err
	}
	if from != nil {
		o.LastGap = &ObserverGap{From: *from, To: *to}
	}
	st.Observer = &o
	return st, nil
}
