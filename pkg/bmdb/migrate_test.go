package bmdb_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

func migrator(t *testing.T, url string) *bmdb.Migrator {
	t.Helper()
	m, err := bmdb.NewMigrator(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestMigrationRoundTrip(t *testing.T) {
	url := pgtest.EmptyURL(t)
	m := migrator(t, url)
	latest := bmdb.Versions()[len(bmdb.Versions())-1]
	for round := range 2 {
		if err := m.Up(); err != nil {
			t.Fatalf("round %d up: %v", round, err)
		}
		st, err := m.Status()
		if err != nil || st.Version != latest || st.Dirty || len(st.Pending) != 0 {
			t.Fatalf("round %d after up: %+v, %v", round, st, err)
		}
		if err := bmdb.CheckSchema(url); err != nil {
			t.Fatalf("CheckSchema at latest: %v", err)
		}
		if err := m.Down(0); err != nil {
			t.Fatalf("round %d down: %v", round, err)
		}
		st, err = m.Status()
		if err != nil || st.Version != 0 || len(st.Pending) != len(bmdb.Versions()) {
			t.Fatalf("round %d after down: %+v, %v", round, st, err)
		}
		// Nothing of ours is left behind.
		conn, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = conn.QueryRow(context.Background(), `
			SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations')
			     + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype = 'e')
			     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public')`).Scan(&n)
		conn.Close(context.Background())
		if err != nil || n != 0 {
			t.Fatalf("round %d: %d objects left after down (%v)", round, n, err)
		}
	}
	if err := bmdb.CheckSchema(url); err == nil || !strings.Contains(err.Error(), "migrate up") {
		t.Fatalf("CheckSchema on empty schema = %v, want advice to migrate up", err)
	}
}

// TestUpgradeRespectsLegacyWork: a database at the pre-split version with a
// live ShepherdAccess work item is migrated up; neither new process can claim
// that machine until the legacy work ends.
func TestUpgradeRespectsLegacyWork(t *testing.T) {
	ctx := context.Background()
	url := pgtest.EmptyURL(t)
	m := migrator(t, url)
	if err := m.To(1); err != nil {
		t.Fatal(err)
	}
	// What an old shepherd left: a machine it holds under ShepherdAccess.
	raw, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	var machine, legacySession uuid.UUID
	err = raw.QueryRow(ctx, `
		WITH m AS (INSERT INTO machines DEFAULT VALUES RETURNING machine_id),
		     p AS (INSERT INTO machine_provided (machine_id, provider, provider_id) SELECT machine_id, 'test', 'legacy-1' FROM m),
		     s AS (INSERT INTO sessions (session_component, session_interval_seconds, session_deadline)
		           VALUES ('old-shepherd', 3600, now() + interval '1 hour') RETURNING session_id),
		     w AS (INSERT INTO work (machine_id, session_id, process) SELECT machine_id, session_id, 'ShepherdAccess' FROM m, s)
		SELECT m.machine_id, s.session_id FROM m, s`).Scan(&machine, &legacySession)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Up(); err != nil {
		t.Fatal(err)
	}

	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	s := session(t, conn, "new-shepherd", 0)
	for _, p := range []bmdb.Process{bmdb.ProcessShepherdAgentStart, bmdb.ProcessShepherdRecovery} {
		// Through the real candidate query and by naming the machine outright.
		if _, err := s.Work(ctx, p, agentStart(10)); !errors.Is(err, bmdb.ErrNothingToDo) {
			t.Fatalf("%s claimed through candidates despite legacy work: %v", p, err)
		}
		if _, err := s.Work(ctx, p, all([]uuid.UUID{machine})); !errors.Is(err, bmdb.ErrNothingToDo) {
			t.Fatalf("%s claimed directly despite legacy work: %v", p, err)
		}
	}
	// The old shepherd finishes; now the machine is free.
	if _, err := raw.Exec(ctx, `DELETE FROM work WHERE session_id = $1`, legacySession); err != nil {
		t.Fatal(err)
	}
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(10))
	if err != nil || w.Machine != machine {
		t.Fatalf("claim after legacy work ended: %v", err)
	}
	if err := w.Finish(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

// TestDownFoldsSplitProcessesBack: reverting the split keeps history and
// backoffs, folded into ShepherdAccess.
func TestDownFoldsSplitProcessesBack(t *testing.T) {
	ctx := context.Background()
	url := pgtest.URL(t)
	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	ids := addMachines(t, conn, 1)
	s, err := conn.StartSession(ctx, bmdb.SessionConfig{Component: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []bmdb.Process{bmdb.ProcessShepherdAgentStart, bmdb.ProcessShepherdRecovery} {
		w, err := s.Work(ctx, p, all(ids))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Fail(ctx, &bmdb.Backoff{Initial: time.Minute}, "failed "+string(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	conn.Close()

	m := migrator(t, url)
	if err := m.To(1); err != nil {
		t.Fatal(err)
	}
	raw, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	var events, backoffs int
	var processes []string
	err = raw.QueryRow(ctx, `SELECT (SELECT count(*) FROM work_history), (SELECT count(*) FROM work_backoff),
		(SELECT array_agg(DISTINCT process::text) FROM work_history)`).Scan(&events, &backoffs, &processes)
	if err != nil {
		t.Fatal(err)
	}
	if events != 4 || backoffs != 1 || len(processes) != 1 || processes[0] != "ShepherdAccess" {
		t.Fatalf("after down: %d events, %d backoffs, processes %v", events, backoffs, processes)
	}
	if err := m.Up(); err != nil {
		t.Fatalf("up again: %v", err)
	}
}

func TestDirtySchemaIsReportedNotFixed(t *testing.T) {
	url := pgtest.EmptyURL(t)
	m := migrator(t, url)
	if err := m.To(2); err != nil {
		t.Fatal(err)
	}
	// A migration that failed half-way leaves the version dirty.
	if err := m.Force(2); err != nil {
		t.Fatal(err)
	}
	raw, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(context.Background())
	if _, err := raw.Exec(context.Background(), `UPDATE schema_migrations SET dirty = true`); err != nil {
		t.Fatal(err)
	}
	conn, err := bmdb.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for name, err := range map[string]error{"up": m.Up(), "down": m.Down(1), "check": bmdb.CheckSchema(url), "conn check": conn.CheckSchema(context.Background())} {
		if !errors.Is(err, bmdb.ErrDirty) || !strings.Contains(err.Error(), "migrate force") {
			t.Errorf("%s on dirty schema = %v, want ErrDirty with advice", name, err)
		}
	}
	st, err := m.Status()
	if err != nil || !st.Dirty || st.Version != 2 {
		t.Fatalf("status = %+v, %v", st, err)
	}
	// Too new: a version this binary does not know.
	if _, err := raw.Exec(context.Background(), `UPDATE schema_migrations SET version = 9999, dirty = false`); err != nil {
		t.Fatal(err)
	}
	if err := bmdb.CheckSchema(url); !errors.Is(err, bmdb.ErrTooNew) {
		t.Fatalf("CheckSchema on newer schema = %v, want ErrTooNew", err)
	}
	if err := conn.CheckSchema(context.Background()); !errors.Is(err, bmdb.ErrTooNew) {
		t.Fatalf("Conn.CheckSchema on newer schema = %v, want ErrTooNew", err)
	}
	// Behind: pending migrations.
	if _, err := raw.Exec(context.Background(), `UPDATE schema_migrations SET version = 2`); err != nil {
		t.Fatal(err)
	}
	if err := conn.CheckSchema(context.Background()); err == nil || !strings.Contains(err.Error(), "migrate up") {
		t.Fatalf("Conn.CheckSchema on an old schema = %v, want advice to migrate up", err)
	}
}
