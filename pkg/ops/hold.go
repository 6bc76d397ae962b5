package ops

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Hold places operator holds (migration 0010's machine_holds): while one is
// active no process, or only Process, starts new work on the machine; work
// in flight finishes. A hold lasts until Until (nil: until released). A
// machine already held for the same scope has its hold replaced (a new
// reason, a new end). Each hold is a HoldPlaced event.
type Hold struct {
	Machines []uuid.UUID
	Process  bmdb.Process // "": every process
	Reason   string
	Until    *time.Time
}

func (Hold) Name() string { return "hold" }

func scopeName(p bmdb.Process) string {
	if p == "" {
		return "every process"
	}
	return string(p)
}

// historyProcess is the process a machine-wide action is recorded under
// (every history row has one): Recovery, the process that reboots.
func historyProcess(p bmdb.Process) bmdb.Process {
	if p == "" {
		return bmdb.ProcessShepherdRecovery
	}
	return p
}

func untilText(until *time.Time) string {
	if until == nil {
		return "until released"
	}
	return "until " + utc(*until)
}

func (a Hold) Plan(ctx context.Context, tx pgx.Tx, lock bool) (Plan, error) {
	if a.Reason == "" {
		return Plan{}, fmt.Errorf("a hold needs a reason")
	}
	if a.Until != nil {
		if err := checkFuture(ctx, tx, "the hold", *a.Until); err != nil {
			return Plan{}, err
		}
	}
	if lock {
		// Machines in order, so that concurrent holds do not deadlock; a
		// concurrent hold of the same machine waits here, and this plan
		// then sees it.
		if _, err := tx.Exec(ctx, `SELECT FROM machines WHERE machine_id = ANY($1) ORDER BY machine_id FOR UPDATE`, a.Machines); err != nil {
			return Plan{}, err
		}
	}
	rows, err := tx.Query(ctx, `
		SELECT m.id, h.hold_reason, h.hold_actor, h.hold_until, h.hold_until IS NOT NULL AND h.hold_until <= now()
		FROM unnest($1::uuid[]) WITH ORDINALITY AS m(id, n)
		LEFT JOIN machine_holds h ON h.machine_id = m.id AND h.process IS NOT DISTINCT FROM $2::process
		ORDER BY m.n`, a.Machines, nullProcess(a.Process))
	if err != nil {
		return Plan{}, err
	}
	var (
		p             Plan
		id            uuid.UUID
		reason, actor *string
		until         *time.Time
		expired       bool
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &reason, &actor, &until, &expired}, func() error {
		what := fmt.Sprintf("hold for %s %s: %s", scopeName(a.Process), untilText(a.Until), a.Reason)
		cause := fmt.Sprintf("held for %s %s: %s", scopeName(a.Process), untilText(a.Until), a.Reason)
		if reason != nil && !expired {
			what += fmt.Sprintf(" (replaces the hold by %s %s: %s)", *actor, untilText(until), *reason)
			cause += fmt.Sprintf(" (replaced the hold by %s %s: %s)", *actor, untilText(until), *reason)
		}
		p.Changes = append(p.Changes, Change{
			MachineID: id, Process: historyProcess(a.Process), Event: EventHoldPlaced,
			What: what, Cause: cause, key: id.String(),
		})
		return nil
	})
	return p, err
}

func nullProcess(p bmdb.Process) *string {
	if p == "" {
		return nil
	}
	s := string(p)
	return &s
}

func (a Hold) Apply(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error {
	ids := make([]uuid.UUID, len(changes))
	for i, c := range changes {
		ids[i] = c.MachineID
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO machine_holds (machine_id, process, hold_reason, hold_actor, hold_placed_at, hold_until)
		SELECT unnest($1::uuid[]), $2::process, $3, $4, now(), $5
		ON CONFLICT (machine_id, process) DO UPDATE SET
			hold_reason = excluded.hold_reason, hold_actor = excluded.hold_actor,
			hold_placed_at = now(), hold_until = excluded.hold_until`,
		ids, nullProcess(a.Process), a.Reason, actor, a.Until)
	return err
}

// Release ends operator holds of the machines: every hold of each machine,
// or with Process only the hold for that process. An expired hold is left
// to the shepherd, which records it as HoldExpired. Each release is a
// HoldReleased event.
type Release struct {
	Machines []uuid.UUID
	Process  bmdb.Process // "": every hold of the machine
	Reason   string
}

func (Release) Name() string { return "release holds" }

type releasedHold struct{ hold uuid.UUID }

func (a Release) Plan(ctx context.Context, tx pgx.Tx, lock bool) (Plan, error) {
	q := `
		SELECT hold_id, machine_id, process, hold_reason, hold_actor, hold_placed_at, hold_until,
		       hold_until IS NOT NULL AND hold_until <= now()
		FROM machine_holds WHERE machine_id = ANY($1) AND ($2 = '' OR process::text = $2)
		ORDER BY machine_id, process NULLS FIRST`
	if lock {
		q += ` FOR UPDATE`
	}
	rows, err := tx.Query(ctx, q, a.Machines, string(a.Process))
	if err != nil {
		return Plan{}, err
	}
	var (
		p             Plan
		hold, id      uuid.UUID
		proc          *bmdb.Process
		reason, actor string
		placed        time.Time
		until         *time.Time
		expired       bool
	)
	has := map[uuid.UUID]bool{}
	_, err = pgx.ForEachRow(rows, []any{&hold, &id, &proc, &reason, &actor, &placed, &until, &expired}, func() error {
		has[id] = true
		var scope bmdb.Process
		if proc != nil {
			scope = *proc
		}
		if expired {
			p.Skipped = append(p.Skipped, Skip{MachineID: id, Why: fmt.Sprintf("its hold for %s expired at %s", scopeName(scope), utc(*until))})
			return nil
		}
		desc := fmt.Sprintf("hold for %s by %s since %s %s: %s", scopeName(scope), actor, utc(placed), untilText(until), reason)
		p.Changes = append(p.Changes, Change{
			MachineID: id, Process: historyProcess(scope), Event: EventHoldReleased,
			What:  "release the " + desc,
			Cause: withReason("released the "+desc, a.Reason),
			key:   hold.String(),
			data:  releasedHold{hold},
		})
		return nil
	})
	if err != nil {
		return Plan{}, err
	}
	why := "no hold"
	if a.Process != "" {
		why = "no hold for " + string(a.Process)
	}
	p.skipUntouched(a.Machines, has, why)
	return p, nil
}

func (a Release) Apply(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error {
	holds := make([]uuid.UUID, len(changes))
	for i, c := range changes {
		holds[i] = c.data.(releasedHold).hold
	}
	_, err := tx.Exec(ctx, `DELETE FROM machine_holds WHERE hold_id = ANY($1)`, holds)
	return err
}
