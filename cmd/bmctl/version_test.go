package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// TestVersion: version, Go version and the schema versions, with the
// database's read from the database it is pointed at (or reported when it
// cannot be), and none when there is none.
func TestVersion(t *testing.T) {
	isolateSettings(t)
	t.Setenv("BMCTL_STATE_DIR", t.TempDir()) // no embedded database running there
	version := func(args ...string) versionInfo {
		t.Helper()
		r := bmctl(t, "", append([]string{"version", "-o", "json"}, args...)...)
		if r.code != 0 {
			t.Fatalf("version %v: %+v", args, r)
		}
		var v versionInfo
		if err := json.Unmarshal([]byte(r.out), &v); err != nil {
			t.Fatalf("%v:\n%s", err, r.out)
		}
		return v
	}
	v := version()
	if v.Version == "" || v.GoVersion != runtime.Version() || v.SchemaVersion != bmdb.LatestVersion() || v.SchemaVersion < 10 {
		t.Errorf("version: %+v", v)
	}
	if v.Database != "" || v.DatabaseSchema != nil || v.DatabaseError != "" {
		t.Errorf("with no database: %+v", v)
	}

	url := pgtest.URL(t) // migrated
	if v := version("--db", url); v.DatabaseSchema == nil || *v.DatabaseSchema != bmdb.LatestVersion() || v.DatabaseError != "" {
		t.Errorf("with a current database: %+v", v)
	}
	if v := version("--db", pgtest.EmptyURL(t)); v.DatabaseSchema == nil || *v.DatabaseSchema != 0 {
		t.Errorf("with an empty database: %+v", v)
	}
	t.Setenv("BMCTL_DATABASE_URL", "postgres://bmctl:hunter2@127.0.0.1:1/bmdb?connect_timeout=5")
	v = version()
	if v.DatabaseError == "" || v.DatabaseSchema != nil || strings.Contains(v.Database, "hunter2") || !strings.Contains(v.Database, "127.0.0.1:1") {
		t.Errorf("with an unreachable database: %+v", v)
	}
	r := bmctl(t, "", "version")
	if r.code != 0 || !strings.Contains(r.out, "schema needed:   ") || !strings.Contains(r.out, "database schema: unknown: ") || strings.Contains(r.out, "hunter2") {
		t.Errorf("version table: %+v", r)
	}
}
