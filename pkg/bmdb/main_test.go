package bmdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open connects to a fresh migrated database.
func open(t *testing.T) *bmdb.Conn {
	t.Helper()
	ctx := context.Background()
	conn, err := bmdb.Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

func session(t *testing.T, conn *bmdb.Conn, component string, interval time.Duration) *bmdb.Session {
	t.Helper()
	s, err := conn.StartSession(context.Background(), bmdb.SessionConfig{Component: component, Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// addMachines creates n provided machines of the "test" provider.
func addMachines(t testing.TB, conn *bmdb.Conn, n int) []uuid.UUID {
	t.Helper()
	ctx := context.Background()
	ids := make([]uuid.UUID, n)
	for i := range ids {
		id, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{
			Provider: "test", ProviderID: uuid.NewString(), Address: "127.0.0.1:22", Location: "lab",
		})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	return ids
}

func agentStart(limit int) func(tx pgx.Tx) ([]uuid.UUID, error) {
	return func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.AgentStartCandidates(context.Background(), tx, limit)
	}
}

func recovery(th bmdb.RecoveryThresholds, limit int) func(tx pgx.Tx) ([]uuid.UUID, error) {
	return func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(context.Background(), tx, bmdb.Policy{Thresholds: th}, limit)
	}
}

type historyRow struct {
	Process bmdb.Process `db:"process"`
	Event   bmdb.Event   `db:"event"`
	Cause   string       `db:"cause"`
	Session *uuid.UUID   `db:"session_id"`
}

func history(t *testing.T, conn *bmdb.Conn, machine uuid.UUID) []historyRow {
	t.Helper()
	rows, _ := conn.Pool.Query(context.Background(),
		`SELECT process, event, cause, session_id FROM work_history WHERE machine_id = $1 ORDER BY work_history_id`, machine)
	h, err := pgx.CollectRows(rows, pgx.RowToStructByName[historyRow])
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestClaimFinish(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 1)
	s := session(t, conn, "test", 0)

	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1))
	if err != nil {
		t.Fatal(err)
	}
	if w.Machine != ids[0] {
		t.Fatalf("claimed %s, want %s", w.Machine, ids[0])
	}
	// The machine is held: neither process finds it.
	if _, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1)); err != bmdb.ErrNothingToDo {
		t.Fatalf("second claim: %v, want ErrNothingToDo", err)
	}
	if err := w.Finish(ctx, func(tx pgx.Tx) error {
		return bmdb.SetAgentStarted(ctx, tx, w.Machine, make([]byte, 32))
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(ctx, nil); err != bmdb.ErrWorkDone {
		t.Fatalf("second finish: %v, want ErrWorkDone", err)
	}
	h := history(t, conn, ids[0])
	if len(h) != 2 || h[0].Event != bmdb.EventStarted || h[1].Event != bmdb.EventFinished || *h[0].Session != s.ID() {
		t.Fatalf("history = %+v", h)
	}
	// Agent started: no longer an AgentStart candidate.
	if _, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1)); err != bmdb.ErrNothingToDo {
		t.Fatalf("claim after finish: %v, want ErrNothingToDo", err)
	}
}

// all is a candidate function that offers the given machines regardless of
// tags: the database alone then decides who may hold what.
func all(ids []uuid.UUID) func(tx pgx.Tx) ([]uuid.UUID, error) {
	return func(tx pgx.Tx) ([]uuid.UUID, error) { return ids, nil }
}
