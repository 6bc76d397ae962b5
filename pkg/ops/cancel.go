package ops

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// CancelWork ends work held on the machines (only Process's, unless empty).
// Work whose session is alive is asked to cancel: the request is written on
// the work row (work_cancel_requested_at, work_cancel_reason,
// work_cancel_actor; migration 0011), where the holder sees it when it
// renews its session and ends the work as Canceled; the request is a
// CancelRequested event. Work whose session is past its deadline can no
// longer be ended by its holder (every transaction under a dead session
// fails), so its lock is broken: the row is deleted, a LockBroken event.
type CancelWork struct {
	Machines []uuid.UUID
	Process  bmdb.Process
	Reason   string
}

func (CancelWork) Name() string { return "cancel work" }

type cancelTarget struct {
	session uuid.UUID
	dead    bool
}

func (a CancelWork) Plan(ctx context.Context, tx pgx.Tx, lock bool) (Plan, error) {
	q := `
		SELECT w.machine_id, w.process, w.session_id, s.session_component, s.session_host,
		       s.session_deadline, s.session_deadline <= now(), w.work_detail,
		       w.work_cancel_requested_at, coalesce(w.work_cancel_actor, '')
		FROM work w JOIN sessions s ON s.session_id = w.session_id
		WHERE w.machine_id = ANY($1) AND ($2 = '' OR w.process::text = $2)
		ORDER BY w.machine_id, w.process`
	if lock {
		q += ` FOR UPDATE OF w`
	}
	rows, err := tx.Query(ctx, q, a.Machines, string(a.Process))
	if err != nil {
		return Plan{}, err
	}
	var (
		p                           Plan
		id, session                 uuid.UUID
		proc                        bmdb.Process
		component, host, detail, by string
		deadline                    time.Time
		dead                        bool
		asked                       *time.Time
	)
	has := map[uuid.UUID]bool{}
	_, err = pgx.ForEachRow(rows, []any{&id, &proc, &session, &component, &host, &deadline, &dead, &detail, &asked, &by}, func() error {
		has[id] = true
		holder := component + "@" + host
		step := ""
		if detail != "" {
			step = " (" + detail + ")"
		}
		switch {
		case dead:
			p.Changes = append(p.Changes, Change{
				MachineID: id, Process: proc, Event: EventLockBroken,
				What:  fmt.Sprintf("break the lock of %s%s: its session %s died at %s", holder, step, session, utc(deadline)),
				Cause: withReason(fmt.Sprintf("lock of dead session %s (%s, deadline %s) broken", session, holder, utc(deadline)), a.Reason),
				key:   id.String() + "/" + string(proc) + "/" + session.String() + "/" + string(EventLockBroken),
				data:  cancelTarget{session: session, dead: true},
			})
		case asked != nil:
			p.Skipped = append(p.Skipped, Skip{MachineID: id,
				Why: fmt.Sprintf("%s work of %s: cancel already requested at %s by %s", proc, holder, utc(*asked), by)})
		default:
			p.Changes = append(p.Changes, Change{
				MachineID: id, Process: proc, Event: EventCancelRequested,
				What:  fmt.Sprintf("ask %s to cancel%s (session alive, deadline %s)", holder, step, utc(deadline)),
				Cause: withReason("cancel requested of "+holder+", session "+session.String(), a.Reason),
				key:   id.String() + "/" + string(proc) + "/" + session.String() + "/" + string(EventCancelRequested),
				data:  cancelTarget{session: session},
			})
		}
		return nil
	})
	if err != nil {
		return Plan{}, err
	}
	p.skipUntouched(a.Machines, has, "no work held for "+anyProcess(a.Process))
	return p, nil
}

func withReason(cause, reason string) string {
	if reason == "" {
		return cause
	}
	return cause + ": " + reason
}

func (a CancelWork) Apply(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error {
	for _, c := range changes {
		t := c.data.(cancelTarget)
		var err error
		if t.dead {
			_, err = tx.Exec(ctx, `DELETE FROM work WHERE machine_id = $1 AND process = $2 AND session_id = $3`,
				c.MachineID, c.Process, t.session)
		} else {
			_, err = tx.Exec(ctx, `
				UPDATE work SET work_cancel_requested_at = now(), work_cancel_reason = $4, work_cancel_actor = $5
				WHERE machine_id = $1 AND process = $2 AND session_id = $3`,
				c.MachineID, c.Process, t.session, a.Reason, actor)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// WaitCanceled waits until the holders asked to cancel by changes (the
// CancelRequested changes of a CancelWork run) have ended that work, or ctx
// ends. It returns the changes whose work is still held, still in order:
// empty when every holder acted.
func WaitCanceled(ctx context.Context, db bmdb.DBTX, changes []Change, poll time.Duration) ([]Change, error) {
	var left []Change
	for _, c := range changes {
		if c.Event == EventCancelRequested {
			left = append(left, c)
		}
	}
	for len(left) > 0 {
		ids, procs, sessions := make([]uuid.UUID, len(left)), make([]string, len(left)), make([]uuid.UUID, len(left))
		for i, c := range left {
			ids[i], procs[i], sessions[i] = c.MachineID, string(c.Process), c.data.(cancelTarget).session
		}
		rows, err := db.Query(ctx, `
			SELECT u.n FROM unnest($1::uuid[], $2::text[], $3::uuid[]) WITH ORDINALITY AS u(m, p, s, n)
			WHERE EXISTS (SELECT 1 FROM work w WHERE w.machine_id = u.m AND w.process::text = u.p AND w.session_id = u.s)
			ORDER BY u.n`, ids, procs, sessions)
		if err != nil {
			return left, err
		}
		held, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return left, err
		}
		still := make([]Change, 0, len(held))
		for _, n := range held {
			still = append(still, left[n-1])
		}
		if left = still; len(left) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return left, nil
		case <-time.After(poll):
		}
	}
	return left, nil
}
