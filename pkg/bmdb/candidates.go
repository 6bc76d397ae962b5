package bmdb

import (
	"context"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Candidate queries return machines a process may claim. Each reads a partial
// index holding only machines that may be eligible (see migration 0004),
// checks the tags themselves, and skips machines another claimer has locked
// right now, so parallel workers spread over different machines. They lock
// the rows they return until the transaction ends.

// AgentStartCandidates returns provided machines with no started agent, no
// shepherd work and no unexpired AgentStart backoff.
//
// The search starts at a random machine id and wraps around: claimers working
// in parallel then spread over the eligible machines, where starting at the
// lowest id would have each of them lock, or skip, the same few rows at the
// head of the index.
func AgentStartCandidates(ctx context.Context, tx pgx.Tx, limit int) ([]uuid.UUID, error) {
	start := uuid.New()
	ids, err := agentStartCandidates(ctx, tx, ">=", start, limit)
	if err != nil || len(ids) >= limit {
		return ids, err
	}
	more, err := agentStartCandidates(ctx, tx, "<", start, limit-len(ids))
	return append(ids, more...), err
}

// agentStartCandidates returns up to limit candidates whose id compares to
// start as cmp says, in id order.
func agentStartCandidates(ctx context.Context, tx pgx.Tx, cmp string, start uuid.UUID, limit int) ([]uuid.UUID, error) {
	rows, err := tx.Query(ctx, agentStartSQL(cmp, "", limit), start)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}

// agentStartSQL selects AgentStart candidates whose id compares to $1 as cmp
// says (and that meet extra, if given), in id order, locking them: every
// condition of AgentStartRule over the machines awaiting an agent (a partial
// index, migration 0004). It locks the machine_provided row, not the
// machines row: every AgentStart claimer locks the same table, so they skip
// each other's candidates, and the statement needs no join on machines (a
// seventh of a claim's cost).
//
// The bound is repeated on every joined table: the planner may merge-join them
// with the candidates in id order, and without it that merge reads them from
// the lowest id up to the bound (measured on the started tags: 50,000 rows,
// 40 ms at 100k machines; on machines: 850 rows at 10k). The limit is written
// into the SQL, not bound: with a bound LIMIT the server replans the statement
// on every call (a generic plan, which must assume any limit, loses to a
// custom one), and planning these joins costs more than running them. The
// order is the partial index's: it makes the plan a plain index scan that
// stops at the first eligible machine, where a bitmap scan would read every
// machine awaiting an agent first.
func agentStartSQL(cmp, extra string, limit int) string {
	if extra != "" {
		extra = " AND " + extra
	}
	q := literalParams(DefaultPolicy()) // AgentStart's rule reads no policy number
	q.key = "p.machine_id"
	q.bound = func(alias string) string { return " AND " + alias + ".machine_id " + cmp + " $1" }
	r := &AgentStartRule
	return `
		SELECT p.machine_id
		FROM machine_provided p` + joins(q, r.aliases(), "p") + `
		WHERE p.awaiting_agent AND p.machine_id ` + cmp + ` $1` + extra + `
		  AND ` + r.where(q, "") + `
		ORDER BY p.machine_id
		LIMIT ` + strconv.Itoa(limit) + `
		FOR NO KEY UPDATE OF p SKIP LOCKED`
}

// RecoveryThresholds are the liveness thresholds of Recovery.
type RecoveryThresholds struct {
	// NoHeartbeatAfterStart: an agent that never heart-beat this long after
	// it was started needs recovery (DESIGN: 30 min).
	NoHeartbeatAfterStart time.Duration
	// StaleHeartbeat: an agent whose last heartbeat is older needs recovery
	// (DESIGN: 10 min).
	StaleHeartbeat time.Duration
}

// DefaultRecoveryThresholds are DESIGN.md's.
var DefaultRecoveryThresholds = RecoveryThresholds{NoHeartbeatAfterStart: 30 * time.Minute, StaleHeartbeat: 10 * time.Minute}

// RecoveryCandidates returns up to limit machines that RecoveryRule makes
// candidates under pol, those an operator requested first.
func RecoveryCandidates(ctx context.Context, tx pgx.Tx, pol Policy, limit int) ([]uuid.UUID, error) {
	rows, err := tx.Query(ctx, recoverySQL(literalParams(pol), "", "", limit))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}

// recoverySQL selects Recovery candidates: every condition of RecoveryRule
// (invert, if set, names one that must fail instead) over a small driving
// set that holds every candidate: the requested machines, the started agents
// that never heart-beat (a partial index, migration 0004) and the coarse
// heartbeats older than the threshold (never later than the exact ones).
// The thresholds and limit are written into the SQL, as in agentStartSQL, so
// the statement is planned once per connection. extra, if set, is one more
// condition.
func recoverySQL(q ruleParams, invert, extra string, limit int) string {
	if extra != "" {
		extra = "\n\t\t  AND " + extra
	}
	r := &RecoveryRule
	return `
		SELECT m.machine_id
		FROM (
			SELECT r.machine_id FROM machine_recovery_requested r
			UNION ALL
			SELECT s.machine_id FROM machine_agent_started s
			WHERE NOT s.agent_heartbeat_seen AND s.agent_started_at < ` + ago(q.noHeartbeat) + `
			UNION ALL
			SELECT h.machine_id FROM machine_agent_heartbeat h
			WHERE h.agent_heartbeat_coarse_at < ` + ago(q.stale) + `
		) c
		JOIN machines m ON m.machine_id = c.machine_id` + joins(q, r.aliases()) + `
		WHERE ` + r.where(q, invert) + extra + `
		LIMIT ` + strconv.Itoa(limit) + `
		FOR NO KEY UPDATE OF m SKIP LOCKED`
}
