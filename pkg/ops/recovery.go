package ops

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// RequestRecovery asks Recovery to act on the machines now, whatever their
// heartbeat says: each becomes a Recovery candidate (still subject to
// shepherd work already held on it and to an unexpired Recovery backoff) and
// passes an open breaker. The request is a tag on the agent-started tag
// (migration 0007), so it is served once: Recovery removes the agent's tags
// when it succeeds, and the request goes with them. Each request is a
// RecoveryRequested event. A machine already requested keeps its first
// request; one without a started agent is AgentStart's, not Recovery's.
type RequestRecovery struct {
	Machines []uuid.UUID
}

func (RequestRecovery) Name() string { return "request recovery" }

// NoAgent is why a machine without a started agent is skipped.
const NoAgent = "machine has no started agent, so Recovery does not act on it (AgentStart will)"

func (a RequestRecovery) Plan(ctx context.Context, tx pgx.Tx, lock bool) (Plan, error) {
	q := `
		SELECT m.id, s.machine_id IS NOT NULL, r.recovery_requested_at, coalesce(r.recovery_requested_by, '')
		FROM unnest($1::uuid[]) WITH ORDINALITY AS m(id, n)
		LEFT JOIN machine_agent_started s ON s.machine_id = m.id
		LEFT JOIN machine_recovery_requested r ON r.machine_id = m.id
		ORDER BY m.n`
	if lock {
		// Before the read: a concurrent request for the same machine
		// waits, and this plan then sees it.
		if _, err := tx.Exec(ctx, `SELECT FROM machine_agent_started WHERE machine_id = ANY($1) ORDER BY machine_id FOR UPDATE`, a.Machines); err != nil {
			return Plan{}, err
		}
	}
	rows, err := tx.Query(ctx, q, a.Machines)
	if err != nil {
		return Plan{}, err
	}
	var (
		p       Plan
		id      uuid.UUID
		started bool
		at      *time.Time
		by      string
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &started, &at, &by}, func() error {
		switch {
		case !started:
			p.Skipped = append(p.Skipped, Skip{MachineID: id, Why: NoAgent})
		case at != nil:
			p.Skipped = append(p.Skipped, Skip{MachineID: id, Why: "recovery already requested at " + utc(*at) + " by " + by})
		default:
			p.Changes = append(p.Changes, Change{
				MachineID: id, Process: bmdb.ProcessShepherdRecovery, Event: EventRecoveryRequested,
				What: "request recovery now (reboot through its provider)",
				key:  id.String(),
			})
		}
		return nil
	})
	return p, err
}

func (a RequestRecovery) Apply(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error {
	ids := make([]uuid.UUID, len(changes))
	for i, c := range changes {
		ids[i] = c.MachineID
		changes[i].Cause = "requested by " + actor
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO machine_recovery_requested (machine_id, recovery_requested_by)
		SELECT unnest($1::uuid[]), $2 ON CONFLICT (machine_id) DO NOTHING`, ids, actor)
	return err
}
