package tui

import (
	"context"
	"testing"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
	"github.com/bmctl/bmctl/pkg/seed"
)

// FleetSummary counts states from the machines in trouble and derives the
// rest; it must agree with GetStats, which derives every machine's state.
func TestFleetSummaryAgreesWithStats(t *testing.T) {
	_, pool := frozenDB(t)
	seedGolden(t, pool)
	ctx := context.Background()
	check := func(when string) {
		t.Helper()
		sum, err := fleet.FleetSummary(ctx, pool, bmdb.RecoveryThresholds{})
		if err != nil {
			t.Fatal(err)
		}
		st, err := fleet.GetStats(ctx, pool, bmdb.RecoveryThresholds{})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Machines != st.Machines {
			t.Errorf("%s: %d machines, GetStats %d", when, sum.Machines, st.Machines)
		}
		for _, s := range fleet.States {
			if sum.ByState[s] != st.ByState[s] {
				t.Errorf("%s: %s %d, GetStats %d", when, s, sum.ByState[s], st.ByState[s])
			}
		}
		for _, p := range st.Processes {
			if sum.Work[p.Process] != p.Work || sum.Backoffs[p.Process] != p.Backoffs {
				t.Errorf("%s: %s work %d backoffs %d, GetStats %d and %d", when, p.Process,
					sum.Work[p.Process], sum.Backoffs[p.Process], p.Work, p.Backoffs)
			}
		}
	}
	check("golden fleet")
	// An unprovided machine held by work counts as that work's state; a
	// healthy machine with an active backoff stays healthy.
	if _, err := pool.Exec(ctx, `INSERT INTO work (machine_id, session_id, process) VALUES ($1, $2, 'ShepherdAgentStart')`,
		idUnprovided, sessionStart); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds)
		VALUES ($1, 'ShepherdRecovery', now() + interval '1 hour', 'flapping', 60)`, idHealthy); err != nil {
		t.Fatal(err)
	}
	check("with edge cases")
	if _, err := seed.Seed(ctx, pool, seed.Options{Machines: 3000, Profile: seed.Steady, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	check("with a seeded fleet")
}
