package tui

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

func scan(t *testing.T, pool *pgxpool.Pool, sql string, dest ...any) {
	t.Helper()
	if err := pool.QueryRow(context.Background(), sql).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// TestHoldAndRelease: with --allow-actions, h asks for a reason and a
// duration, shows the dry run's change and holds only after y; u asks for a
// reason and releases. Both are in history with the operator.
func TestHoldAndRelease(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, true), 200, 30)
	s.waitIdle("the golden fleet", loaded(9))
	s.press(":", "m-001", "enter")
	s.waitIdle("the cursor on m-001", func(_ string, m Model) bool { r, ok := m.selected(); return ok && r.ID == idHealthy })
	holds := func() int {
		var n int
		scan(t, pool, `SELECT count(*) FROM machine_holds`, &n)
		return n
	}

	// Declined, and a hold without a reason: nothing changes.
	s.press("h")
	s.waitText("hold 10000000, reason: █")
	s.press("disk swap", "enter")
	s.waitText("hold 10000000 for: 4h█")
	s.press("enter")
	s.waitText("Hold 10000000? [y/N] hold for every process until 2026-03-04 09:06:07 UTC: disk swap")
	s.press("n")
	s.waitText("canceled")
	s.press("h", "enter")
	s.waitText("a hold needs a reason; nothing changed")
	if n := holds(); n != 0 {
		t.Fatalf("%d holds after declining", n)
	}

	// Confirmed, for two hours.
	s.press("h", "disk swap", "enter", "ctrl+u", "2h", "enter")
	s.waitText("Hold 10000000? [y/N] hold for every process until 2026-03-04 07:06:07 UTC: disk swap")
	s.press("y")
	s.waitText("done: hold 10000000")
	var actor, reason string
	var until time.Time
	scan(t, pool, `SELECT hold_actor, hold_reason, hold_until FROM machine_holds WHERE machine_id = '`+idHealthy.String()+`'`, &actor, &reason, &until)
	if actor != "ops@jump" || reason != "disk swap" || !until.Equal(t0.Add(2*time.Hour)) {
		t.Errorf("hold: by %q, %q, until %v", actor, reason, until)
	}

	s.press("u")
	s.waitText("release the holds of 10000000, reason: █")
	s.press("swapped", "enter")
	s.waitText("Release the holds of 10000000? [y/N] release the hold for every process by ops@jump since 2026-03-04 05:06:07 UTC until 2026-03-04 07:06:07 UTC: disk swap")
	s.press("y")
	s.waitText("done: release the holds of 10000000")
	if n := holds(); n != 0 {
		t.Errorf("%d holds after the release", n)
	}
	var events int
	scan(t, pool, `SELECT count(*) FROM work_history WHERE machine_id = '`+idHealthy.String()+`' AND actor = 'ops@jump'
		AND ((event = 'HoldPlaced' AND cause LIKE '%disk swap') OR (event = 'HoldReleased' AND cause LIKE '%: swapped'))`, &events)
	if events != 2 {
		t.Errorf("%d HoldPlaced/HoldReleased events by ops@jump, want 2", events)
	}
	// Nothing to release: the dry run says so and nothing is asked.
	s.press("u", "enter")
	s.waitText("release the holds of 10000000: nothing to change: machine " + idHealthy.String() + ": no hold")
	// The detail's history names the operator of both.
	s.press("enter")
	s.waitText("HoldPlaced", "by ops@jump: held for every process until 2026-03-04 07:06:07 UTC: disk swap",
		"HoldReleased", "by ops@jump: released the hold")
}

// TestCancelWork: x previews and, after y, asks the live session holding
// the machine's work to cancel; asking twice says it was already asked.
func TestCancelWork(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, true), 240, 30)
	s.waitIdle("the golden fleet", loaded(9))
	s.press(":", "m-003", "enter")
	s.waitIdle("the cursor on m-003", func(_ string, m Model) bool { r, ok := m.selected(); return ok && r.ID == idStarting })
	s.press("x")
	s.waitText("Cancel the work on 30000000? [y/N] ask shepherd-agentstart@shep-1 to cancel (uploading agent) (session alive, deadline 2026-03-04 05:06:15 UTC)")
	s.press("y")
	s.waitText("done: cancel the work on 30000000")
	var actor string
	var asked time.Time
	scan(t, pool, `SELECT work_cancel_actor, work_cancel_requested_at FROM work WHERE machine_id = '`+idStarting.String()+`'`, &actor, &asked)
	if actor != "ops@jump" || !asked.Equal(t0) {
		t.Errorf("cancel request: by %q at %v", actor, asked)
	}
	var n int
	scan(t, pool, `SELECT count(*) FROM work_history WHERE event = 'CancelRequested' AND actor = 'ops@jump'`, &n)
	if n != 1 {
		t.Errorf("%d CancelRequested events", n)
	}
	s.press("x")
	s.waitText("cancel the work on 30000000: nothing to change: machine " + idStarting.String() + ": ShepherdAgentStart work of shepherd-agentstart@shep-1: cancel already requested at 2026-03-04 05:06:07 UTC by ops@jump")
}

// TestActionsReadOnly: without --allow-actions the keys only say how to
// enable them.
func TestActionsReadOnly(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, false), 160, 20)
	s.waitIdle("the golden fleet", loaded(9))
	for k, want := range map[string]string{"h": "hold", "u": "release", "x": "cancel"} {
		s.press(k)
		s.waitText("read-only: start with --allow-actions to " + want + " machines")
	}
	var n int
	scan(t, pool, `SELECT count(*) FROM work_history WHERE actor IS NOT NULL`, &n)
	if n != 0 {
		t.Errorf("%d operator events in read-only mode", n)
	}
}
