package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

func TestMigrateCommands(t *testing.T) {
	db := pgtest.EmptyURL(t)
	vs := bmdb.Versions() // numbers may have gaps: one reserved for a migration not landed yet
	latest := vs[len(vs)-1]

	r := bmctl(t, "", "--db", db, "migrate", "status", "-o", "json")
	var st bmdb.MigrationStatus
	if r.code != 0 || json.Unmarshal([]byte(r.out), &st) != nil || st.Version != 0 || len(st.Pending) != len(vs) {
		t.Fatalf("status on empty database: %+v %+v", r, st)
	}
	if r := bmctl(t, "", "--db", db, "migrate", "up"); r.code != 0 || !strings.Contains(r.out, "version") {
		t.Fatalf("up: %+v", r)
	}
	if r := bmctl(t, "", "--db", db, "migrate", "down", "2"); r.code != 0 {
		t.Fatalf("down 2: %+v", r)
	}
	r = bmctl(t, "", "--db", db, "migrate", "status")
	if r.code != 0 || !strings.Contains(r.out, "dirty:   false") || !strings.Contains(r.out, fmt.Sprintf("pending: [%d %d]", vs[len(vs)-2], latest)) {
		t.Fatalf("status after down 2: %+v", r)
	}
	for _, args := range [][]string{{"migrate", "down", "zero"}, {"migrate", "force"}, {"migrate", "sideways"}, {"migrate", "up", "--bogus"}} {
		if r := bmctl(t, "", append([]string{"--db", db}, args...)...); r.code != 2 || strings.Count(r.err, "\n") != 1 {
			t.Errorf("%v: want a one-line usage error and exit 2, got %+v", args, r)
		}
	}
}

func TestDeadDatabaseIsOneLine(t *testing.T) {
	dead := "postgres://nobody@/bmdb?host=/nonexistent-socket-dir&connect_timeout=2"
	r := bmctl(t, "", "--db", dead, "migrate", "status")
	if r.code != 1 || strings.Count(r.err, "\n") != 1 || !strings.HasPrefix(r.err, "bmctl: ") {
		t.Fatalf("want one error line and exit 1, got %+v", r)
	}
}
