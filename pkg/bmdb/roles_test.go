package bmdb_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// as connects to the database of owner as a new login that holds only role.
func as(t *testing.T, owner *bmdb.Conn, roles ...bmdb.Role) *bmdb.Conn {
	t.Helper()
	conn, err := bmdb.Open(context.Background(), pgtest.LoginURL(t, owner.URL(), roles...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// refused asserts that err is PostgreSQL refusing for lack of privilege.
func refused(t *testing.T, what string, err error) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "42501" {
		t.Errorf("%s: want permission denied (42501), got %v", what, err)
	}
}

func exec(db bmdb.DBTX, sql string, args ...any) error {
	_, err := db.Exec(context.Background(), sql, args...)
	return err
}

// TestEveryObjectHasAGrantDecision fails when a migration added a table,
// sequence or function without its row in bmdb_grants (migration 0013): no
// component role could use it, and nobody decided who may.
func TestEveryObjectHasAGrantDecision(t *testing.T) {
	conn := open(t)
	missing, err := bmdb.UngrantedObjects(context.Background(), conn.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range missing {
		t.Errorf("%s has no row in bmdb_grants: add one (viewer, operator, shepherd, endpoint privileges) next to the others in migrations/0013_roles.up.sql or in your migration, then SELECT bmdb_apply_roles()", m)
	}
}

// TestApplyRolesIsIdempotentAndRevokesStrays: applying twice changes nothing,
// and a privilege granted by hand that bmdb_grants does not give is taken
// back.
func TestApplyRolesIsIdempotentAndRevokesStrays(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	for range 2 {
		if err := bmdb.ApplyRoles(ctx, conn.Pool); err != nil {
			t.Fatal(err)
		}
	}
	if err := exec(conn.Pool, `GRANT INSERT ON work TO bmctl_viewer`); err != nil {
		t.Fatal(err)
	}
	if err := bmdb.ApplyRoles(ctx, conn.Pool); err != nil {
		t.Fatal(err)
	}
	var has bool
	if err := conn.Pool.QueryRow(ctx, `SELECT has_table_privilege('bmctl_viewer', 'work', 'INSERT')`).Scan(&has); err != nil || has {
		t.Errorf("viewer still has INSERT on work after apply (%v)", err)
	}
	// SECURITY DEFINER functions have their search_path pinned.
	var unpinned []string
	rows, _ := conn.Pool.Query(ctx, `SELECT proname FROM pg_proc WHERE prosecdef AND pronamespace = current_schema()::regnamespace
		AND NOT coalesce(proconfig::text LIKE '%search_path=pg_catalog%', false)`)
	unpinned, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(unpinned) > 0 {
		t.Errorf("SECURITY DEFINER functions without a pinned search_path: %v (%v)", unpinned, err)
	}
}

// startedMachine is a provided machine whose agent was started with key.
func startedMachine(t *testing.T, conn *bmdb.Conn) (uuid.UUID, ed25519.PublicKey) {
	t.Helper()
	id := addMachines(t, conn, 1)[0]
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := bmdb.SetAgentStarted(context.Background(), conn.Pool, id, pub); err != nil {
		t.Fatal(err)
	}
	return id, pub
}

// noComponentRewritesHistory: whatever role, history cannot be changed.
func noComponentRewritesHistory(t *testing.T, c *bmdb.Conn) {
	t.Helper()
	refused(t, "UPDATE work_history", exec(c.Pool, `UPDATE work_history SET cause = 'rewritten'`))
	refused(t, "DELETE work_history", exec(c.Pool, `DELETE FROM work_history`))
	refused(t, "TRUNCATE work_history", exec(c.Pool, `TRUNCATE work_history`))
	refused(t, "history prune", func() error {
		_, err := bmdb.PruneHistory(context.Background(), c.Pool, time.Now(), "")
		return err
	}())
}

func TestViewerReadsAndListensOnly(t *testing.T) {
	ctx := context.Background()
	owner := open(t)
	id, _ := startedMachine(t, owner)
	v := as(t, owner, bmdb.RoleViewer)
	if err := v.CheckGrants(ctx, bmdb.RoleViewer); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := v.Pool.QueryRow(ctx, `SELECT count(*) FROM machines JOIN machine_provided USING (machine_id) JOIN machine_agent_started USING (machine_id)`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("viewer reading machines: %d, %v", n, err)
	}
	pc, err := pgx.Connect(ctx, v.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(ctx)
	l, err := bmdb.Listen(ctx, pc, "bmdb_change")
	if err != nil {
		t.Fatalf("viewer listening: %v", err)
	}
	_ = l
	s := session(t, owner, "shepherd", time.Minute)
	refused(t, "viewer inserting work", exec(v.Pool, `INSERT INTO work (machine_id, session_id, process) VALUES ($1, $2, 'ShepherdRecovery')`, id, s.ID()))
	refused(t, "viewer inserting history", exec(v.Pool, `INSERT INTO work_history (machine_id, process, event) VALUES ($1, 'ShepherdRecovery', 'Started')`, id))
	refused(t, "viewer clearing a backoff", exec(v.Pool, `DELETE FROM work_backoff`))
	refused(t, "viewer deleting a tag", exec(v.Pool, `DELETE FROM machine_agent_started`))
	refused(t, "viewer recording a heartbeat", func() error {
		_, err := bmdb.RecordHeartbeats(ctx, v.Pool, []bmdb.AgentKey{{Machine: id}})
		return err
	}())
	noComponentRewritesHistory(t, v)
}

func TestShepherdWorksButCannotRewriteHistory(t *testing.T) {
	ctx := context.Background()
	owner := open(t)
	sh := as(t, owner, bmdb.RoleShepherd)
	if err := sh.CheckGrants(ctx, bmdb.RoleShepherd); err != nil {
		t.Fatal(err)
	}
	// What its loops do: add provided machines, claim, fail, claim again,
	// start the agent, finish; Recovery clears the agent tags.
	id := addMachines(t, sh, 1)[0]
	s := session(t, sh, "shepherd", time.Minute)
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Fail(ctx, &bmdb.Backoff{Initial: time.Second}, "refused"); err != nil {
		t.Fatal(err)
	}
	if _, err := sh.Pool.Exec(ctx, `UPDATE work_backoff SET backoff_until = now() - interval '1s'`); err != nil {
		t.Fatal(err)
	}
	w, err = s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1))
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := w.Finish(ctx, func(tx pgx.Tx) error { return bmdb.SetAgentStarted(ctx, tx, id, pub) }); err != nil {
		t.Fatal(err)
	}
	if err := bmdb.ClearAgentTags(ctx, sh.Pool, id); err != nil {
		t.Fatal(err)
	}
	var events int
	if err := sh.Pool.QueryRow(ctx, `SELECT count(*) FROM work_history WHERE machine_id = $1`, id).Scan(&events); err != nil || events != 4 {
		t.Errorf("shepherd's history: %d events, %v; want Started, Failed, Started, Finished", events, err)
	}
	noComponentRewritesHistory(t, sh)
	refused(t, "shepherd changing grants", exec(sh.Pool, `SELECT bmdb_apply_roles()`))
	refused(t, "shepherd recording a heartbeat", func() error {
		_, err := bmdb.RecordHeartbeats(ctx, sh.Pool, []bmdb.AgentKey{{Machine: id, Key: pub}})
		return err
	}())
}

func TestEndpointWritesOnlyHeartbeatsOfMatchingKeys(t *testing.T) {
	ctx := context.Background()
	owner := open(t)
	id, key := startedMachine(t, owner)
	other, otherKey := startedMachine(t, owner)
	ep := as(t, owner, bmdb.RoleEndpoint)
	if err := ep.CheckGrants(ctx, bmdb.RoleEndpoint); err != nil {
		t.Fatal(err)
	}
	ok, err := bmdb.RecordHeartbeats(ctx, ep.Pool, []bmdb.AgentKey{{Machine: id, Key: key}, {Machine: other, Key: key}})
	if err != nil || !ok[0] || ok[1] {
		t.Fatalf("heartbeats: %v, %v; want the matching one recorded, the other refused", ok, err)
	}
	if ok, err := bmdb.RecordHardwareReport(ctx, ep.Pool, id, key, []byte(`{"cpus":4}`)); err != nil || !ok {
		t.Fatalf("hardware report: %v, %v", ok, err)
	}
	if ok, err := bmdb.RecordHardwareReport(ctx, ep.Pool, other, key, []byte(`{"cpus":4}`)); err != nil || ok {
		t.Fatalf("hardware report with another machine's key: %v, %v; want refused", ok, err)
	}
	var hb, hw int
	if err := owner.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM machine_agent_heartbeat), (SELECT count(*) FROM machine_hardware_report)`).Scan(&hb, &hw); err != nil || hb != 1 || hw != 1 {
		t.Errorf("%d heartbeats, %d reports (%v); want one each, of the matching machine", hb, hw, err)
	}
	// Around the functions: nothing.
	refused(t, "endpoint inserting a heartbeat directly", exec(ep.Pool, `INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at, agent_heartbeat_coarse_at) VALUES ($1, now(), now())`, other))
	refused(t, "endpoint writing a report directly", exec(ep.Pool, `INSERT INTO machine_hardware_report (machine_id, hardware_report) VALUES ($1, '{}')`, other))
	refused(t, "endpoint replacing an agent key", exec(ep.Pool, `UPDATE machine_agent_started SET agent_public_key = $2 WHERE machine_id = $1`, other, []byte(key)))
	refused(t, "endpoint deleting a tag", exec(ep.Pool, `DELETE FROM machine_agent_started WHERE machine_id = $1`, other))
	refused(t, "endpoint starting a session", exec(ep.Pool, `INSERT INTO sessions (session_component, session_interval_seconds, session_deadline) VALUES ('x', 1, now())`))
	refused(t, "endpoint inserting history", exec(ep.Pool, `INSERT INTO work_history (machine_id, process, event) VALUES ($1, 'ShepherdRecovery', 'Started')`, id))
	refused(t, "endpoint reading history", exec(ep.Pool, `SELECT * FROM work_history`))
	refused(t, "endpoint adding a machine", exec(ep.Pool, `INSERT INTO machines DEFAULT VALUES`))
	noComponentRewritesHistory(t, ep)
	_ = otherKey
}

// TestHistoryIsAppendOnlyEvenWithAStrayGrant: a role given DELETE on history
// by mistake still cannot delete it; the owner's prune can, and is recorded.
func TestHistoryIsAppendOnlyEvenWithAStrayGrant(t *testing.T) {
	ctx := context.Background()
	owner := open(t)
	id := addMachines(t, owner, 1)[0]
	for _, at := range []string{"2020-01-01", "2020-01-02", "2030-01-01"} {
		if err := exec(owner.Pool, `INSERT INTO work_history (machine_id, process, event, event_at) VALUES ($1, 'ShepherdRecovery', 'Started', $2)`, id, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := exec(owner.Pool, `CREATE ROLE bmctl_test_stray NOLOGIN`); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	if err := exec(owner.Pool, `GRANT SELECT, UPDATE, DELETE ON work_history TO bmctl_test_stray`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = exec(owner.Pool, `REVOKE ALL ON work_history FROM bmctl_test_stray`) })
	stray, err := pgxpool.New(ctx, pgtest.LoginURL(t, owner.URL(), "bmctl_test_stray"))
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	refused(t, "stray DELETE on history", exec(stray, `DELETE FROM work_history`))
	refused(t, "stray UPDATE on history", exec(stray, `UPDATE work_history SET cause = 'x'`))

	cut := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
	n, err := bmdb.PruneHistory(ctx, owner.Pool, cut, "alice@jump1")
	if err != nil || n != 2 {
		t.Fatalf("prune: %d, %v; want the two events before %s", n, err, cut)
	}
	var left, prunes int
	var by string
	if err := owner.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM work_history), (SELECT count(*) FROM work_history_prunes),
		(SELECT pruned_by FROM work_history_prunes)`).Scan(&left, &prunes, &by); err != nil {
		t.Fatal(err)
	}
	if left != 1 || prunes != 1 || !strings.HasSuffix(by, " as alice@jump1") {
		t.Errorf("after prune: %d events, %d prune records by %q", left, prunes, by)
	}
}

// TestStartupCheckNamesTheMissingGrant: a login with the wrong role is told,
// in one line, which privilege it lacks and the command that grants it.
func TestStartupCheckNamesTheMissingGrant(t *testing.T) {
	ctx := context.Background()
	owner := open(t)
	for _, c := range []struct {
		has, needs bmdb.Role
		want       string
	}{
		{bmdb.RoleViewer, bmdb.RoleShepherd, "INSERT on table machine_agent_heartbeat"},
		{bmdb.RoleViewer, bmdb.RoleOperator, "INSERT on table breaker_overrides"},
		{bmdb.RoleShepherd, bmdb.RoleEndpoint, "EXECUTE on function bmdb_record_hardware_report(uuid,bytea,jsonb)"},
		{bmdb.RoleEndpoint, bmdb.RoleViewer, "SELECT on table breaker_overrides"},
	} {
		conn := as(t, owner, c.has)
		missing, err := bmdb.MissingGrants(ctx, conn.Pool, c.needs)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, m := range missing {
			names = append(names, m.String())
		}
		if !slices.Contains(names, c.want) {
			t.Errorf("%s checked for %s: missing %v, want %q among them", c.has, c.needs, names, c.want)
			continue
		}
		err = conn.CheckGrants(ctx, c.needs)
		if err == nil || !errors.Is(err, bmdb.ErrMissingGrant) || !strings.Contains(err.Error(), names[0]) ||
			!strings.Contains(err.Error(), "bmctl db roles grant ") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s checked for %s: %v; want one line naming %q and the grant command", c.has, c.needs, err, names[0])
		}
	}
	// A login with no role at all is told what it lacks too.
	none := as(t, owner)
	if err := none.CheckGrants(ctx, bmdb.RoleViewer); !errors.Is(err, bmdb.ErrMissingGrant) {
		t.Errorf("a login with no role checked for viewer: %v", err)
	}
}
