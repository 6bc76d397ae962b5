package main

import (
	"strings"
	"testing"
)

// TestEmbeddedDatabase: with nothing configured, bmctl creates, starts and
// migrates its own cluster under the state directory, and says where it is.
func TestEmbeddedDatabase(t *testing.T) {
	t.Setenv("BMCTL_STATE_DIR", t.TempDir())
	t.Setenv("BMCTL_DATABASE_URL", "")
	defer bmctl(t, "", "db", "stop")

	if r := bmctl(t, "", "db", "status"); r.code != 0 || !strings.Contains(r.out, "not created") {
		t.Fatalf("status before start: %+v", r)
	}
	r := bmctl(t, "", "migrate", "status")
	if r.code != 0 || !strings.Contains(r.err, "starting the embedded one in") || !strings.Contains(r.out, "version: 0") {
		t.Fatalf("migrate status on a new embedded database: %+v", r)
	}
	if r := bmctl(t, "", "db", "start"); r.code != 0 || !strings.Contains(r.out, "url: postgres://") {
		t.Fatalf("start: %+v", r)
	}
	// db start migrated it.
	if r := bmctl(t, "", "migrate", "status"); r.code != 0 || !strings.Contains(r.out, "pending: []") {
		t.Fatalf("migrate status after db start: %+v", r)
	}
	if r := bmctl(t, "", "db", "status"); r.code != 0 || !strings.Contains(r.out, "running") {
		t.Fatalf("status: %+v", r)
	}
	url := bmctl(t, "", "db", "url")
	if url.code != 0 || !strings.HasPrefix(url.out, "postgres://") {
		t.Fatalf("url: %+v", url)
	}
	if r := bmctl(t, "", "--db", strings.TrimSpace(url.out), "migrate", "status"); r.code != 0 || !strings.Contains(r.out, "pending: []") {
		t.Fatalf("the printed URL does not reach the database: %+v", r)
	}
	if r := bmctl(t, "", "db", "stop"); r.code != 0 {
		t.Fatalf("stop: %+v", r)
	}
	if r := bmctl(t, "", "db", "status"); r.code != 0 || !strings.Contains(r.out, "stopped") {
		t.Fatalf("status after stop: %+v", r)
	}
}
