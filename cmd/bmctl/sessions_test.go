package main

import (
	"context"
	"strings"
	"testing"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

func TestSessionsList(t *testing.T) {
	ctx := context.Background()
	f := newFleetDB(t)
	if out := f.ok("sessions", "list"); len(outLines(out)) != 1 {
		t.Errorf("no sessions: want a header only:\n%s", out)
	}
	id := f.add("srv-1", "fra1")
	s := f.session("shepherd-agentstart")
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, onlyMachine(id))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetDetail(ctx, "dialing"); err != nil {
		t.Fatal(err)
	}
	dead := f.session("shepherd-old")
	f.exec(`UPDATE sessions SET session_deadline = now() - interval '1 second' WHERE session_id = $1`, dead.ID())

	out := f.ok("sessions", "list")
	rows := outLines(out)
	if len(rows) != 3 || !strings.HasPrefix(rows[0], "SESSION ") {
		t.Fatalf("sessions list:\n%s", out)
	}
	if !strings.Contains(rows[1], "shepherd-agentstart") || !strings.Contains(rows[1], "live") ||
		!strings.Contains(rows[1], "1: "+id.String()[:8]+" AgentStart (dialing)") {
		t.Errorf("live session row: %q", rows[1])
	}
	if !strings.Contains(rows[2], "shepherd-old") || !strings.Contains(rows[2], "expired") {
		t.Errorf("expired session row: %q", rows[2])
	}

	var list []map[string]any
	decodeJSON(t, f.ok("sessions", "list", "-o", "json"), &list)
	if len(list) != 2 || list[0]["component"] != "shepherd-agentstart" || list[1]["expired"] != true {
		t.Fatalf("sessions json: %v", list)
	}
	work, _ := list[0]["work"].([]any)
	if len(work) != 1 || work[0].(map[string]any)["provider_id"] != "srv-1" || work[0].(map[string]any)["detail"] != "dialing" {
		t.Errorf("session work json: %v", list[0]["work"])
	}
	for _, k := range []string{"session_id", "host", "pid", "version", "created_at", "interval_seconds", "deadline"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("session json lacks %q", k)
		}
	}
}
