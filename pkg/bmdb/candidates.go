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
// says (and that meet extra, if given), in id order, locking them.
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
	return `
		SELECT m.machine_id
		FROM machine_provided p
		JOIN machines m ON m.machine_id = p.machine_id
		WHERE p.awaiting_agent AND p.machine_id ` + cmp + ` $1 AND m.machine_id ` + cmp + ` $1` + extra + `
		  AND NOT EXISTS (SELECT 1 FROM machine_agent_started s WHERE s.machine_id = p.machine_id AND s.machine_id ` + cmp + ` $1)
		  AND NOT EXISTS (SELECT 1 FROM work w WHERE w.machine_id = p.machine_id AND w.machine_id ` + cmp + ` $1
		                  AND process_exclusion_group(w.process) = process_exclusion_group('ShepherdAgentStart'))
		  AND NOT EXISTS (SELECT 1 FROM work_backoff b WHERE b.machine_id = p.machine_id AND b.machine_id ` + cmp + ` $1
		                  AND b.process = 'ShepherdAgentStart' AND b.backoff_until > now())
		ORDER BY p.machine_id
		LIMIT ` + strconv.Itoa(limit) + `
		FOR NO KEY UPDATE OF m SKIP LOCKED`
}

// RecoveryThresholds are the liveness rules of Recovery.
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

// RecoveryCandidates returns provided machines with a started agent that never
// heart-beat within th.NoHeartbeatAfterStart, or whose last heartbeat is older
// than th.StaleHeartbeat, or for which an operator requested recovery
// (migration 0007; those come first); with no shepherd work and no unexpired
// Recovery backoff.
func RecoveryCandidates(ctx context.Context, tx pgx.Tx, th RecoveryThresholds, limit int) ([]uuid.UUID, error) {
	// Thresholds and limit are written into the SQL, as in
	// AgentStartCandidates, so the statement is planned once per connection.
	noHeartbeat := strconv.FormatFloat(th.NoHeartbeatAfterStart.Seconds(), 'f', -1, 64)
	stale := strconv.FormatFloat(th.StaleHeartbeat.Seconds(), 'f', -1, 64)
	rows, err := tx.Query(ctx, `
		SELECT m.machine_id
		FROM (
			SELECT r.machine_id FROM machine_recovery_requested r
			UNION ALL
			SELECT s.machine_id FROM machine_agent_started s
			WHERE NOT s.agent_heartbeat_seen
			  AND s.agent_started_at < now() - make_interval(secs => `+noHeartbeat+`)
			  AND NOT EXISTS (SELECT 1 FROM machine_agent_heartbeat h WHERE h.machine_id = s.machine_id)
			UNION ALL
			SELECT h.machine_id FROM machine_agent_heartbeat h
			WHERE h.agent_heartbeat_coarse_at < now() - make_interval(secs => `+stale+`)
			  AND h.agent_heartbeat_at < now() - make_interval(secs => `+stale+`)
			  AND EXISTS (SELECT 1 FROM machine_agent_started s WHERE s.machine_id = h.machine_id)
		) c
		JOIN machines m ON m.machine_id = c.machine_id
		WHERE EXISTS (SELECT 1 FROM machine_provided p WHERE p.machine_id = c.machine_id)
		  AND NOT EXISTS (SELECT 1 FROM work w WHERE w.machine_id = c.machine_id
		                  AND process_exclusion_group(w.process) = process_exclusion_group('ShepherdRecovery'))
		  AND NOT EXISTS (SELECT 1 FROM work_backoff b WHERE b.machine_id = c.machine_id
		                  AND b.process = 'ShepherdRecovery' AND b.backoff_until > now())
		LIMIT `+strconv.Itoa(limit)+`
		FOR NO KEY UPDATE OF m SKIP LOCKED`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
}
