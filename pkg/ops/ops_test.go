package ops_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/ops"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func fleet(t *testing.T, n int) (*pgxpool.Pool, []uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var ids []uuid.UUID
	for i := range n {
		id, err := bmdb.AddProvidedMachine(ctx, pool, bmdb.ProvidedMachine{Provider: "test", ProviderID: "m-" + string(rune('a'+i)), Location: "fra1"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return pool, ids
}

func backoff(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds)
		VALUES ($1, 'ShepherdAgentStart', now() + interval '5 minutes', 'refused', 300)`, id)
	if err != nil {
		t.Fatal(err)
	}
}

func count(t *testing.T, pool *pgxpool.Pool, sql string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRunAppliesOnlyWhatWasConfirmed: while the operator reads the plan, the
// fleet moves on. Run then makes only the confirmed changes that still
// apply, and says how many no longer did; a change that appeared meanwhile
// was never confirmed and is not made.
func TestRunAppliesOnlyWhatWasConfirmed(t *testing.T) {
	ctx := context.Background()
	pool, ids := fleet(t, 3)
	backoff(t, pool, ids[0])
	backoff(t, pool, ids[1])
	a := ops.ClearBackoff{Machines: ids}
	res, err := ops.Run(ctx, pool, a, ops.Options{Actor: "alice@jump1", Confirm: func(p ops.Plan) (bool, error) {
		if len(p.Changes) != 2 || len(p.Skipped) != 1 || p.Skipped[0].MachineID != ids[2] {
			t.Errorf("plan: %+v", p)
		}
		// Meanwhile: one backoff ends by itself, another machine gets one.
		if _, err := pool.Exec(ctx, `DELETE FROM work_backoff WHERE machine_id = $1`, ids[1]); err != nil {
			return false, err
		}
		backoff(t, pool, ids[2])
		return true, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changes) != 1 || res.Changes[0].MachineID != ids[0] || res.Gone != 1 {
		t.Errorf("result: %+v", res)
	}
	if n := count(t, pool, `SELECT count(*) FROM work_backoff`); n != 1 {
		t.Errorf("%d backoffs left, want the unconfirmed one", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM work_history WHERE event = 'BackoffCleared' AND actor = 'alice@jump1'`); n != 1 {
		t.Errorf("%d BackoffCleared events by alice", n)
	}

	// Declined: nothing changes; and when everything went meanwhile, Run says so.
	_, err = ops.Run(ctx, pool, a, ops.Options{Actor: "alice@jump1", Confirm: func(ops.Plan) (bool, error) { return false, nil }})
	if !errors.Is(err, ops.ErrCanceled) || count(t, pool, `SELECT count(*) FROM work_backoff`) != 1 {
		t.Errorf("declined: %v", err)
	}
	_, err = ops.Run(ctx, pool, a, ops.Options{Actor: "alice@jump1", Confirm: func(ops.Plan) (bool, error) {
		_, err := pool.Exec(ctx, `DELETE FROM work_backoff`)
		return true, err
	}})
	if !errors.Is(err, ops.ErrNothingToChange) {
		t.Errorf("all gone meanwhile: %v", err)
	}
}

// TestConcurrentHolds: operators holding the same machines at
// once each record their hold (the later replaces the earlier), and every
// hold event says which hold it replaced, so history tells the story.
func TestConcurrentHolds(t *testing.T) {
	ctx := context.Background()
	pool, ids := fleet(t, 4)
	errs := make(chan error, 2)
	for _, actor := range []string{"alice@jump1", "bob@jump2"} {
		go func() {
			_, err := ops.Run(ctx, pool, ops.Hold{Machines: ids, Reason: "by " + actor}, ops.Options{Actor: actor})
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, pool, `SELECT count(*) FROM machine_holds`); n != 4 {
		t.Errorf("%d holds, want one per machine", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM work_history WHERE event = 'HoldPlaced'`); n != 8 {
		t.Errorf("%d HoldPlaced events, want 8", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM work_history WHERE event = 'HoldPlaced' AND cause LIKE '%(replaced the hold by %'`); n != 4 {
		t.Errorf("%d HoldPlaced events say what they replaced, want 4", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM machine_holds h JOIN work_history w ON w.machine_id = h.machine_id AND w.actor = h.hold_actor
		WHERE w.work_history_id = (SELECT max(work_history_id) FROM work_history x WHERE x.machine_id = h.machine_id)`); n != 4 {
		t.Errorf("the last event of %d of 4 machines names the hold's actor", n)
	}
}
