package tui

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

func TestClearBackoff(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, true), 160, 20)
	s.waitIdle("the golden fleet", loaded(9))
	s.press(":", "m-005", "enter")
	s.waitIdle("the cursor on m-005", func(_ string, m Model) bool { r, ok := m.selected(); return ok && r.ID == idBackedOff })

	// Anything but y cancels.
	s.press("b")
	s.waitText("Clear the AgentStart backoff of 50000000 (ends in 4m)? [y/N]", "Cause: ssh: handshake failed")
	s.press("n")
	s.waitText("canceled")
	ctx := context.Background()
	count := func(sql string) int {
		var n int
		if err := pool.QueryRow(ctx, sql, idBackedOff).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM work_backoff WHERE machine_id = $1`); n != 1 {
		t.Fatalf("backoffs after canceling: %d", n)
	}

	s.press("b", "y")
	s.waitIdle("m-005 new again", func(f string, m Model) bool {
		r, ok := m.selected()
		return ok && r.ID == idBackedOff && r.State == "new" && strings.Contains(f, "cleared the AgentStart backoff of 50000000")
	})
	if n := count(`SELECT count(*) FROM work_backoff WHERE machine_id = $1`); n != 0 {
		t.Errorf("backoffs after clearing: %d", n)
	}
	if n := count(`SELECT count(*) FROM work_history WHERE machine_id = $1 AND event = 'BackoffCleared' AND cause LIKE 'cleared by ops@jump%'`); n != 1 {
		t.Errorf("BackoffCleared events: %d", n)
	}
}

func TestRequestRecovery(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	s := startScreen(t, goldenOptions(pool, true), 160, 40)
	s.waitIdle("the golden fleet", loaded(9))
	ctx := context.Background()
	pol := brakestest.Ready(t, pool, bmdb.DefaultPolicy())
	candidates := func() []uuidT {
		var ids []uuidT
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var err error
			ids, err = bmdb.RecoveryCandidates(ctx, tx, pol, 100)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	if slices.Contains(candidates(), idHealthy) {
		t.Fatal("a healthy machine is a Recovery candidate before any request")
	}

	// From the detail view of the healthy machine.
	s.press(":", "m-001", "enter")
	s.waitIdle("the cursor on m-001", func(_ string, m Model) bool { r, ok := m.selected(); return ok && r.ID == idHealthy })
	s.press("enter")
	s.waitIdle("the detail of m-001", func(_ string, m Model) bool { return m.mode == modeDetail && m.detail.ID == idHealthy })
	s.press("r")
	s.waitText("Request Recovery of 10000000 now? [y/N]")
	s.press("y")
	frame, _ := s.waitIdle("the request in the detail", func(f string, m Model) bool {
		return strings.Contains(f, "requested recovery of 10000000") && !m.detail.RecoveryRequested.IsZero()
	})
	for _, want := range []string{"recovery   requested", "by ops@jump", "RecoveryRequested", "requested by ops@jump"} {
		if !strings.Contains(frame, want) {
			t.Errorf("detail after the request lacks %q:\n%s", want, frame)
		}
	}
	if !slices.Contains(candidates(), idHealthy) {
		t.Fatal("the requested machine is not a Recovery candidate")
	}
	// Recovery serves the request by clearing the agent's tags; the request
	// goes with them.
	if err := bmdb.ClearAgentTags(ctx, pool, idHealthy); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM machine_recovery_requested`).Scan(&n); err != nil || n != 0 {
		t.Errorf("requests left after Recovery cleared the agent: %d, %v", n, err)
	}

	// A machine without a started agent is AgentStart's, not Recovery's.
	s.press("esc", ":", "m-002", "enter")
	s.waitIdle("the cursor on m-002", func(_ string, m Model) bool { r, ok := m.selected(); return ok && r.ID == idNew })
	s.press("r", "y")
	s.waitText("machine has no started agent")
}
