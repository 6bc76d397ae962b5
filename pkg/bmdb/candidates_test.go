package bmdb_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// TestCandidateRules pins DESIGN.md's candidate rules: one machine per case,
// tags and backoffs set straight in SQL, and the exact sets each query returns.
func TestCandidateRules(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	db := conn.Pool
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	machine := func(provided bool) uuid.UUID {
		t.Helper()
		if provided {
			return addMachines(t, conn, 1)[0]
		}
		var id uuid.UUID
		if err := db.QueryRow(ctx, `INSERT INTO machines DEFAULT VALUES RETURNING machine_id`).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	started := func(id uuid.UUID, ago string) {
		exec(`INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key) VALUES ($1, now() - $2::interval, '\x00')`, id, ago)
	}
	heartbeat := func(id uuid.UUID, ago string) {
		exec(`INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at) VALUES ($1, now() - $2::interval)`, id, ago)
	}
	backoff := func(id uuid.UUID, p bmdb.Process, until string) {
		exec(`INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds)
			VALUES ($1, $2, now() + $3::interval, 'test', 60)`, id, p, until)
	}
	legacy, err := conn.StartSession(ctx, bmdb.SessionConfig{Component: "old-shepherd"})
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close(ctx)

	fresh := machine(true)
	startedRecently := machine(true)
	started(startedRecently, "5 minutes")
	neverBeat := machine(true)
	started(neverBeat, "31 minutes")
	healthy := machine(true)
	started(healthy, "1 hour")
	heartbeat(healthy, "5 minutes")
	stale := machine(true)
	started(stale, "1 hour")
	heartbeat(stale, "11 minutes")
	freshAgentStartBackoff := machine(true)
	backoff(freshAgentStartBackoff, bmdb.ProcessShepherdAgentStart, "1 hour")
	freshRecoveryBackoff := machine(true)
	backoff(freshRecoveryBackoff, bmdb.ProcessShepherdRecovery, "1 hour")
	freshExpiredBackoff := machine(true)
	backoff(freshExpiredBackoff, bmdb.ProcessShepherdAgentStart, "-1 second")
	staleRecoveryBackoff := machine(true)
	started(staleRecoveryBackoff, "1 hour")
	heartbeat(staleRecoveryBackoff, "20 minutes")
	backoff(staleRecoveryBackoff, bmdb.ProcessShepherdRecovery, "1 hour")
	staleAgentStartBackoff := machine(true)
	started(staleAgentStartBackoff, "1 hour")
	heartbeat(staleAgentStartBackoff, "20 minutes")
	backoff(staleAgentStartBackoff, bmdb.ProcessShepherdAgentStart, "1 hour")
	freshLegacyWork := machine(true)
	staleLegacyWork := machine(true)
	started(staleLegacyWork, "1 hour")
	heartbeat(staleLegacyWork, "20 minutes")
	for _, id := range []uuid.UUID{freshLegacyWork, staleLegacyWork} {
		exec(`INSERT INTO work (machine_id, session_id, process) VALUES ($1, $2, 'ShepherdAccess')`, id, legacy.ID())
	}
	unprovidedStale := machine(false)
	started(unprovidedStale, "1 hour")
	heartbeat(unprovidedStale, "20 minutes")
	unprovidedNew := machine(false)
	_ = unprovidedNew

	check := func(name string, query func(tx pgx.Tx) ([]uuid.UUID, error), want ...uuid.UUID) {
		t.Helper()
		var got []uuid.UUID
		if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			var err error
			got, err = query(tx)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
		slices.SortFunc(want, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
		if !slices.Equal(got, want) {
			t.Errorf("%s candidates = %v, want %v", name, got, want)
		}
	}
	check("AgentStart", func(tx pgx.Tx) ([]uuid.UUID, error) { return bmdb.AgentStartCandidates(ctx, tx, 100) },
		fresh, freshRecoveryBackoff, freshExpiredBackoff)
	brakestest.Ready(t, db, bmdb.DefaultPolicy())
	check("Recovery", func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(ctx, tx, bmdb.DefaultPolicy(), 100)
	}, neverBeat, stale, staleAgentStartBackoff)
	// Thresholds are the caller's: with an hour's tolerance nothing is stale.
	check("Recovery (1h thresholds)", func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(ctx, tx, bmdb.Policy{Thresholds: bmdb.RecoveryThresholds{NoHeartbeatAfterStart: 2 * 3600e9, StaleHeartbeat: 3600e9}}, 100)
	})
	// The limit is honoured.
	if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		ids, err := bmdb.AgentStartCandidates(ctx, tx, 2)
		if len(ids) != 2 {
			t.Errorf("limit 2 returned %d", len(ids))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// A heartbeat arriving for the never-heart-beating machine takes it out;
	// one going stale again brings it back.
	heartbeat(neverBeat, "0 seconds")
	check("Recovery after a heartbeat", func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(ctx, tx, bmdb.DefaultPolicy(), 100)
	}, stale, staleAgentStartBackoff)
	exec(`UPDATE machine_agent_heartbeat SET agent_heartbeat_at = now() - interval '15 minutes' WHERE machine_id = $1`, neverBeat)
	check("Recovery after it went stale", func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(ctx, tx, bmdb.DefaultPolicy(), 100)
	}, neverBeat, stale, staleAgentStartBackoff)
	// Clearing the agent tags (what Recovery does) hands the machine to AgentStart.
	if err := bmdb.ClearAgentTags(ctx, db, stale); err != nil {
		t.Fatal(err)
	}
	check("AgentStart after recovery", func(tx pgx.Tx) ([]uuid.UUID, error) { return bmdb.AgentStartCandidates(ctx, tx, 100) },
		fresh, freshRecoveryBackoff, freshExpiredBackoff, stale)
	// The shepherd's one-statement claim takes exactly those, one at a time.
	s := session(t, conn, "claimer", 10*time.Second)
	check("ClaimAgentStart", func(pgx.Tx) ([]uuid.UUID, error) {
		var claimed []uuid.UUID
		for {
			w, err := s.ClaimAgentStart(ctx)
			if errors.Is(err, bmdb.ErrNothingToDo) {
				return claimed, nil
			}
			if err != nil {
				return nil, err
			}
			claimed = append(claimed, w.Machine)
		}
	}, fresh, freshRecoveryBackoff, freshExpiredBackoff, stale)
}

// Claimers racing with the one-statement claim each get a different machine,
// every eligible machine is claimed, and each claim has its Started event.
func TestClaimAgentStartRace(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 40)
	var (
		mu      sync.Mutex
		claimed = map[uuid.UUID]int{}
		g       errgroup.Group
	)
	for range 8 {
		s := session(t, conn, "racer", 10*time.Second)
		for range 3 {
			g.Go(func() error {
				for {
					w, err := s.ClaimAgentStart(ctx)
					if errors.Is(err, bmdb.ErrNothingToDo) {
						return nil
					}
					if err != nil {
						return err
					}
					mu.Lock()
					claimed[w.Machine]++
					mu.Unlock()
				}
			})
		}
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if claimed[id] != 1 {
			t.Errorf("machine %s claimed %d times, want once", id, claimed[id])
		}
	}
	var started int
	if err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM work_history WHERE event = 'Started'`).Scan(&started); err != nil || started != len(ids) {
		t.Errorf("Started events: %d (%v), want %d", started, err, len(ids))
	}
}
