package ops

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// ClearBackoff deletes backoffs of the machines (only Process's, unless
// empty), active or expired, so the process may act on them at once and its
// next failure starts again from the initial interval. Each cleared backoff
// is a BackoffCleared event.
type ClearBackoff struct {
	Machines []uuid.UUID
	Process  bmdb.Process
}

func (ClearBackoff) Name() string { return "clear backoffs" }

// clearedBackoff is what apply deletes: the row as planned.
type clearedBackoff struct{ until time.Time }

func (a ClearBackoff) Plan(ctx context.Context, tx pgx.Tx, lock bool) (Plan, error) {
	q := `
		SELECT machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds, backoff_until > now()
		FROM work_backoff WHERE machine_id = ANY($1) AND ($2 = '' OR process::text = $2)
		ORDER BY machine_id, process`
	if lock {
		q += ` FOR UPDATE`
	}
	rows, err := tx.Query(ctx, q, a.Machines, string(a.Process))
	if err != nil {
		return Plan{}, err
	}
	var (
		p        Plan
		id       uuid.UUID
		proc     bmdb.Process
		until    time.Time
		cause    string
		interval int64
		active   bool
	)
	has := map[uuid.UUID]bool{}
	_, err = pgx.ForEachRow(rows, []any{&id, &proc, &until, &cause, &interval, &active}, func() error {
		has[id] = true
		status := "expired"
		if active {
			status = "active"
		}
		p.Changes = append(p.Changes, Change{
			MachineID: id, Process: proc, Event: EventBackoffCleared,
			What: fmt.Sprintf("clear %s backoff (until %s, interval %ds): %s", status, utc(until), interval, cause),
			// "cleared by" stays in the cause for readers of the text alone.
			Cause: fmt.Sprintf("was until %s: %s", utc(until), cause),
			key:   id.String() + "/" + string(proc),
			data:  clearedBackoff{until},
		})
		return nil
	})
	if err != nil {
		return Plan{}, err
	}
	p.skipUntouched(a.Machines, has, "no backoff for "+anyProcess(a.Process))
	return p, nil
}

func (a ClearBackoff) Apply(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error {
	ids, procs := make([]uuid.UUID, len(changes)), make([]string, len(changes))
	for i, c := range changes {
		ids[i], procs[i] = c.MachineID, string(c.Process)
		changes[i].Cause = "cleared by " + actor + " (" + c.Cause + ")"
	}
	_, err := tx.Exec(ctx, `
		DELETE FROM work_backoff b USING unnest($1::uuid[], $2::text[]) AS u(m, p)
		WHERE b.machine_id = u.m AND b.process::text = u.p`, ids, procs)
	return err
}

// utc is how causes write a time: the same for every reader, wherever.
func utc(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + " UTC" }
