package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// TestComponentsRefuseToStartWithoutTheirGrants: each component, started
// under a login that holds another component's role, exits at once with one
// line naming the grant it lacks and the command that gives it; under its
// own role it gets past the check.
func TestComponentsRefuseToStartWithoutTheirGrants(t *testing.T) {
	isolateSettings(t)
	owner := pgtest.URL(t)
	viewer := pgtest.LoginURL(t, owner, bmdb.RoleViewer)
	keyPath := filepath.Join(t.TempDir(), "shepherd_ed25519")
	if _, _, err := shepherd.LoadOrCreateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	endpoint := pgtest.LoginURL(t, owner, bmdb.RoleEndpoint)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"shepherd", []string{"--db", viewer, "shepherd", "run", "--ssh-key", keyPath, "--agent-endpoint", "https://127.0.0.1:8443"}, "bmctl_shepherd"},
		{"endpoint", []string{"--db", viewer, "server", "--listen", "127.0.0.1:0", "--dev-ca-dir", t.TempDir()}, "bmctl_endpoint"},
		{"operator", []string{"--db", viewer, "backoff", "clear", "--all", "--yes"}, "bmctl_operator"},
		{"viewer", []string{"--db", endpoint, "machines", "list"}, "bmctl_viewer"},
		{"history", []string{"--db", endpoint, "history", "--all"}, "bmctl_viewer"},
	} {
		r := bmctl(t, "", c.args...)
		line := strings.TrimSpace(r.err)
		if r.code == 0 || !strings.Contains(line, "lacks ") || !strings.Contains(line, "bmctl db roles grant ") ||
			!strings.Contains(line, c.want) || strings.Count(line, "\n") > 0 {
			t.Errorf("%s under the wrong role: exit %d, stderr %q; want one line naming the missing grant", c.name, r.code, r.err)
		}
	}
	// Under its own role the viewer's commands work.
	if r := bmctl(t, "", "--db", pgtest.LoginURL(t, owner, bmdb.RoleViewer), "machines", "list"); r.code != 0 {
		t.Errorf("machines list as viewer: exit %d: %s", r.code, r.err)
	}
}

// TestRolesApplyGrantAndPrune: the owner applies the roles (again: it is
// idempotent), grants one to a login, and prunes history; the prune is
// recorded, and a component login cannot prune.
func TestRolesApplyGrantAndPrune(t *testing.T) {
	isolateSettings(t)
	ctx := context.Background()
	owner := pgtest.URL(t)
	for range 2 {
		if r := bmctl(t, "", "--db", owner, "db", "roles", "apply"); r.code != 0 || !strings.Contains(r.out, "bmctl_endpoint") {
			t.Fatalf("roles apply: exit %d: %s%s", r.code, r.out, r.err)
		}
	}
	login := pgtest.LoginURL(t, owner)
	name := strings.SplitN(strings.TrimPrefix(login, "postgres://"), "@", 2)[0]
	if r := bmctl(t, "", "--db", login, "sessions", "list"); r.code == 0 {
		t.Fatalf("a login without a role listed sessions")
	}
	if r := bmctl(t, "", "--db", owner, "db", "roles", "grant", name, "viewer"); r.code != 0 {
		t.Fatalf("roles grant: exit %d: %s", r.code, r.err)
	}
	if r := bmctl(t, "", "--db", login, "sessions", "list"); r.code != 0 {
		t.Fatalf("sessions after the grant: exit %d: %s", r.code, r.err)
	}
	if r := bmctl(t, "", "--db", owner, "db", "roles", "grant", name, "admin"); r.code == 0 || !strings.Contains(r.err, "unknown role") {
		t.Errorf("granting an unknown role: exit %d: %s", r.code, r.err)
	}

	c, err := pgx.Connect(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `INSERT INTO work_history (machine_id, process, event, event_at) VALUES
		(gen_random_uuid(), 'ShepherdRecovery', 'Started', now() - interval '500 days'),
		(gen_random_uuid(), 'ShepherdRecovery', 'Started', now())`); err != nil {
		t.Fatal(err)
	}
	if r := bmctl(t, "", "--db", pgtest.LoginURL(t, owner, bmdb.RoleShepherd), "history", "prune", "--before", "400d"); r.code == 0 {
		t.Errorf("a shepherd login pruned history: %s", r.out)
	}
	if r := bmctl(t, "", "--db", owner, "history", "prune"); r.code == 0 || !strings.Contains(r.err, "--before") {
		t.Errorf("prune without --before: exit %d: %s", r.code, r.err)
	}
	r := bmctl(t, "", "--db", owner, "history", "prune", "--before", "400d", "--as", "alice@jump1")
	if r.code != 0 || !strings.Contains(r.out, "pruned 1 events") {
		t.Fatalf("prune: exit %d: %s%s", r.code, r.out, r.err)
	}
	var left, prunes int
	if err := c.QueryRow(ctx, `SELECT (SELECT count(*) FROM work_history), (SELECT count(*) FROM work_history_prunes WHERE pruned_by LIKE '% as alice@jump1')`).Scan(&left, &prunes); err != nil || left != 1 || prunes != 1 {
		t.Errorf("after prune: %d events, %d prune records (%v)", left, prunes, err)
	}
}
