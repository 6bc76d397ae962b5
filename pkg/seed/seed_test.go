package seed_test

import (
	"context"
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/seed"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T) *bmdb.Conn {
	t.Helper()
	conn, err := bmdb.Open(context.Background(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

func count(t *testing.T, conn *bmdb.Conn, sql string) int {
	t.Helper()
	var n int
	if err := conn.Pool.QueryRow(context.Background(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// Flags the 0004 triggers maintain, recomputed from the tags themselves. The
// seed sets them with the triggers off, so they must agree with the tags.
const inconsistentFlags = `
SELECT (SELECT count(*) FROM machine_provided p
        WHERE p.awaiting_agent = EXISTS (SELECT 1 FROM machine_agent_started s WHERE s.machine_id = p.machine_id))
     + (SELECT count(*) FROM machine_agent_started s
        WHERE s.agent_heartbeat_seen <> EXISTS (SELECT 1 FROM machine_agent_heartbeat h WHERE h.machine_id = s.machine_id))
     + (SELECT count(*) FROM machine_agent_heartbeat
        WHERE agent_heartbeat_coarse_at > agent_heartbeat_at
           OR agent_heartbeat_at - agent_heartbeat_coarse_at >= interval '1 minute')`

// The candidate rules of DESIGN.md written as plain anti-joins over the whole
// fleet, independent of the flags and partial indexes.
const referenceAgentStart = `
SELECT p.machine_id FROM machine_provided p
WHERE NOT EXISTS (SELECT 1 FROM machine_agent_started s WHERE s.machine_id = p.machine_id)
  AND NOT EXISTS (SELECT 1 FROM work w WHERE w.machine_id = p.machine_id)
  AND NOT EXISTS (SELECT 1 FROM work_backoff b WHERE b.machine_id = p.machine_id
                  AND b.process = 'ShepherdAgentStart' AND b.backoff_until > now())`

const referenceRecovery = `
SELECT p.machine_id FROM machine_provided p
JOIN machine_agent_started s ON s.machine_id = p.machine_id
LEFT JOIN machine_agent_heartbeat h ON h.machine_id = p.machine_id
WHERE ((h.machine_id IS NULL AND s.agent_started_at < now() - interval '30 minutes')
       OR h.agent_heartbeat_at < now() - interval '10 minutes')
  AND NOT EXISTS (SELECT 1 FROM work w WHERE w.machine_id = p.machine_id)
  AND NOT EXISTS (SELECT 1 FROM work_backoff b WHERE b.machine_id = p.machine_id
                  AND b.process = 'ShepherdRecovery' AND b.backoff_until > now())`

func ids(t *testing.T, conn *bmdb.Conn, sql string) []uuid.UUID {
	t.Helper()
	rows, _ := conn.Pool.Query(context.Background(), sql)
	got, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	return got
}

func candidates(t *testing.T, conn *bmdb.Conn, fn func(tx pgx.Tx) ([]uuid.UUID, error)) []uuid.UUID {
	t.Helper()
	var got []uuid.UUID
	err := pgx.BeginFunc(context.Background(), conn.Pool, func(tx pgx.Tx) (err error) {
		got, err = fn(tx)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	return got
}

func TestSeedSteady(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	res, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: 4000, Profile: seed.Steady, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	if res.Machines != 4000 || res.New != 20 || res.Stale+res.Silent != 20 || res.Healthy != 3960 {
		t.Fatalf("result = %+v, want 3960 healthy, 20 new, 20 stale", res)
	}
	checkFleet(t, conn, res)
}

func TestSeedBusyFleet(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	busy := seed.Profile{Name: "busy", New: 0.2, Stale: 0.1, Backoff: 60, Working: 40, RecoveredShare: 0.5}
	res, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: 1000, Profile: busy})
	if err != nil {
		t.Fatal(err)
	}
	if res.AgentStartBackoff != 30 || res.RecoveryBackoff != 30 || res.AgentStartWork != 20 || res.RecoveryWork != 20 {
		t.Fatalf("result = %+v, want 30+30 backoffs and 20+20 work items", res)
	}
	checkFleet(t, conn, res)

	// A second fleet lands beside the first, and the triggers are back on:
	// a machine added the normal way gets its flag from them.
	res2, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: 500, Profile: seed.Steady, Provider: "other"})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, conn, `SELECT count(*) FROM machines`); n != 1500 {
		t.Fatalf("%d machines after two seeds, want 1500", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM sessions`); n != 2 {
		t.Fatalf("%d sessions, want one per seed", n)
	}
	id, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{Provider: "test", ProviderID: "x1"})
	if err != nil {
		t.Fatal(err)
	}
	var awaiting bool
	if err := conn.Pool.QueryRow(ctx, `SELECT awaiting_agent FROM machine_provided WHERE machine_id = $1`, id).Scan(&awaiting); err != nil || !awaiting {
		t.Fatalf("new machine awaiting_agent = %v (%v), want true from the trigger", awaiting, err)
	}
	if err := bmdb.SetAgentStarted(ctx, conn.Pool, id, make([]byte, 32)); err != nil {
		t.Fatal(err)
	}
	if err := conn.Pool.QueryRow(ctx, `SELECT awaiting_agent FROM machine_provided WHERE machine_id = $1`, id).Scan(&awaiting); err != nil || awaiting {
		t.Fatalf("started machine awaiting_agent = %v (%v), want false from the trigger", awaiting, err)
	}
	_ = res2
	if n := count(t, conn, inconsistentFlags); n != 0 {
		t.Fatalf("%d rows with flags that disagree with their tags", n)
	}
}

func TestSeedRejectsBadOptions(t *testing.T) {
	conn := open(t)
	ctx := context.Background()
	if _, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: 0, Profile: seed.Steady}); err == nil {
		t.Fatal("seeding 0 machines succeeded")
	}
	if _, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: 10, Profile: seed.Profile{New: 0.8, Stale: 0.5}}); err == nil {
		t.Fatal("seeding 130% of a fleet succeeded")
	}
	if _, err := seed.LookupProfile("chaos"); err == nil {
		t.Fatal("unknown profile accepted")
	}
	// Same seed twice: the machine ids collide and nothing of the second
	// run stays.
	if _, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: 10, Profile: seed.Steady, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: 10, Profile: seed.Steady, Seed: 3}); err == nil {
		t.Fatal("reseeding the same ids succeeded")
	}
	if n := count(t, conn, `SELECT count(*) FROM machines`); n != 10 {
		t.Fatalf("%d machines after a failed second seed, want 10", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'`); n != 0 {
		t.Fatalf("%d triggers left disabled", n)
	}
}

// checkFleet proves the seeded fleet is one the rest of bmctl could have made.
func checkFleet(t *testing.T, conn *bmdb.Conn, res seed.Result) {
	t.Helper()
	if n := count(t, conn, inconsistentFlags); n != 0 {
		t.Fatalf("%d rows with flags that disagree with their tags", n)
	}
	if n := count(t, conn, `SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'`); n != 0 {
		t.Fatalf("%d triggers left disabled", n)
	}
	// The candidate queries find exactly what the rules say, and as many
	// as the seed meant.
	agentStart := candidates(t, conn, func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.AgentStartCandidates(context.Background(), tx, 1<<20)
	})
	if want := ids(t, conn, referenceAgentStart); !slices.Equal(agentStart, want) {
		t.Fatalf("AgentStart candidates: %d, reference: %d", len(agentStart), len(want))
	}
	if len(agentStart) != res.AgentStartEligible() {
		t.Fatalf("%d AgentStart candidates, seeded %d", len(agentStart), res.AgentStartEligible())
	}
	// Breakers as a shepherd evaluates them (the seed's observer stands).
	pol := bmdb.DefaultPolicy()
	if _, err := bmdb.EvaluateBreakers(context.Background(), conn.Pool, pol); err != nil {
		t.Fatal(err)
	}
	recovery := candidates(t, conn, func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(context.Background(), tx, pol, 1<<20)
	})
	if want := ids(t, conn, referenceRecovery); !slices.Equal(recovery, want) {
		t.Fatalf("Recovery candidates: %d, reference: %d", len(recovery), len(want))
	}
	if len(recovery) != res.RecoveryEligible() {
		t.Fatalf("%d Recovery candidates, seeded %d", len(recovery), res.RecoveryEligible())
	}
	if n := count(t, conn, `SELECT count(*) FROM work_backoff WHERE backoff_until > now()`); n != res.AgentStartBackoff+res.RecoveryBackoff {
		t.Fatalf("%d unexpired backoffs, seeded %d", n, res.AgentStartBackoff+res.RecoveryBackoff)
	}
	if n := count(t, conn, `SELECT count(*) FROM work`); n != res.AgentStartWork+res.RecoveryWork {
		t.Fatalf("%d work items, seeded %d", n, res.AgentStartWork+res.RecoveryWork)
	}
	// History: every Started has exactly one end, except the open work's.
	unended := `
		SELECT count(*) FROM (
			SELECT machine_id, process, event,
			       lead(event) OVER (PARTITION BY machine_id ORDER BY event_at, work_history_id) AS next
			FROM work_history) h
		WHERE (event = 'Started' AND next IS DISTINCT FROM 'Finished' AND next IS DISTINCT FROM 'Failed')
		   OR (event <> 'Started' AND next IS NOT NULL AND next <> 'Started')`
	if n := count(t, conn, unended); n != res.AgentStartWork+res.RecoveryWork {
		t.Fatalf("%d open or doubly ended history events, want %d (the open work)", n, res.AgentStartWork+res.RecoveryWork)
	}
	if n := count(t, conn, `SELECT count(*) FROM work_history`); n != res.History || n < 2*res.Healthy {
		t.Fatalf("%d history events, seeded %d for %d healthy machines", n, res.History, res.Healthy)
	}
	// A backoff's interval is what the policy gives after its failures.
	rows, _ := conn.Pool.Query(context.Background(), `
		SELECT b.process, b.backoff_last_interval_seconds,
		       (SELECT count(*) FROM work_history h WHERE h.machine_id = b.machine_id AND h.event = 'Failed')
		FROM work_backoff b`)
	type backoff struct {
		process  bmdb.Process
		interval int64
		failures int
	}
	backoffs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (backoff, error) {
		var b backoff
		err := r.Scan(&b.process, &b.interval, &b.failures)
		return b, err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range backoffs {
		policy := bmdb.AgentStartBackoff
		if b.process == bmdb.ProcessShepherdRecovery {
			policy = bmdb.RecoveryBackoff
		}
		var want int64
		for range b.failures {
			want = policy.Next(want)
		}
		if b.failures < 1 || b.interval != want {
			t.Fatalf("%s backoff of %ds after %d failures, policy says %ds", b.process, b.interval, b.failures, want)
		}
	}
}
