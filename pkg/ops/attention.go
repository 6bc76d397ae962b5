package ops

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// ClearAttention removes needs-attention marks (migration 0010's
// machine_attention; the remediation budget sets them), only Process's
// unless empty, so the process may act on the machine again. Each cleared
// mark is an AttentionCleared event.
type ClearAttention struct {
	Machines []uuid.UUID
	Process  bmdb.Process
	Reason   string
}

func (ClearAttention) Name() string { return "clear attention marks" }

func (a ClearAttention) Plan(ctx context.Context, tx pgx.Tx, lock bool) (Plan, error) {
	q := `
		SELECT machine_id, process, attention_reason, attention_since
		FROM machine_attention WHERE machine_id = ANY($1) AND ($2 = '' OR process::text = $2)
		ORDER BY machine_id, process`
	if lock {
		q += ` FOR UPDATE`
	}
	rows, err := tx.Query(ctx, q, a.Machines, string(a.Process))
	if err != nil {
		return Plan{}, err
	}
	var (
		p      Plan
		id     uuid.UUID
		proc   bmdb.Process
		reason string
		since  time.Time
	)
	has := map[uuid.UUID]bool{}
	_, err = pgx.ForEachRow(rows, []any{&id, &proc, &reason, &since}, func() error {
		has[id] = true
		desc := fmt.Sprintf("needs-attention mark (since %s: %s)", utc(since), reason)
		p.Changes = append(p.Changes, Change{
			MachineID: id, Process: proc, Event: EventAttentionCleared,
			What: "clear the " + desc, Cause: withReason("cleared the "+desc, a.Reason),
			key: id.String() + "/" + string(proc),
		})
		return nil
	})
	if err != nil {
		return Plan{}, err
	}
	p.skipUntouched(a.Machines, has, "no needs-attention mark for "+anyProcess(a.Process))
	return p, nil
}

func (a ClearAttention) Apply(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error {
	ids, procs := make([]uuid.UUID, len(changes)), make([]string, len(changes))
	for i, c := range changes {
		ids[i], procs[i] = c.MachineID, string(c.Process)
	}
	_, err := tx.Exec(ctx, `
		DELETE FROM machine_attention a USING unnest($1::uuid[], $2::text[]) AS u(m, p)
		WHERE a.machine_id = u.m AND a.process::text = u.p`, ids, procs)
	return err
}
