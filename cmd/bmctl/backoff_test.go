package main

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/ops"
)

func TestBackoffListAndClear(t *testing.T) {
	ctx := context.Background()
	f := newFleetDB(t)
	s := f.session("shepherd-test")
	a, b := f.add("srv-a", "fra1"), f.add("srv-b", "fra1")
	fail := func(id uuid.UUID, p bmdb.Process, policy bmdb.Backoff, cause string) {
		t.Helper()
		w, err := s.Work(ctx, p, onlyMachine(id))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Fail(ctx, &policy, cause); err != nil {
			t.Fatal(err)
		}
	}
	fail(a, bmdb.ProcessShepherdAgentStart, bmdb.AgentStartBackoff, "ssh: connection refused")
	fail(b, bmdb.ProcessShepherdRecovery, bmdb.RecoveryBackoff, "provider reboot: 503")
	fail(b, bmdb.ProcessShepherdAgentStart, bmdb.Backoff{Initial: 1}, "expired already")
	f.exec(`UPDATE work_backoff SET backoff_until = now() - interval '1 minute' WHERE machine_id = $1 AND process = 'ShepherdAgentStart'`, b)

	out := f.ok("backoff", "list")
	rows := outLines(out)
	if len(rows) != 4 || !strings.HasPrefix(rows[0], "MACHINE ") {
		t.Fatalf("backoff list:\n%s", out)
	}
	// Soonest first: the expired one, then Recovery's 1m, then AgentStart's 5m.
	for i, want := range [][]string{
		{"srv-b", "AgentStart", "expired", "expired already"},
		{"srv-b", "Recovery", "active", "1m", "in ", "provider reboot: 503"},
		{"srv-a", "AgentStart", "active", "5m", "in ", "ssh: connection refused"},
	} {
		for _, w := range want {
			if !strings.Contains(rows[i+1], w) {
				t.Errorf("backoff row %d %q lacks %q", i, rows[i+1], w)
			}
		}
	}
	var list []map[string]any
	decodeJSON(t, f.ok("backoff", "list", "--active", "-o", "json"), &list)
	if len(list) != 2 || list[0]["process"] != "ShepherdRecovery" || list[0]["last_interval_seconds"] != float64(60) {
		t.Errorf("active backoffs json: %v", list)
	}
	for _, k := range []string{"machine_id", "provider", "provider_id", "process", "until", "cause", "last_interval_seconds", "active"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("backoff json lacks %q", k)
		}
	}
	decodeJSON(t, f.ok("backoff", "list", "--machine", "srv-b", "--process", "agentstart", "-o", "json"), &list)
	if len(list) != 1 || list[0]["active"] != false {
		t.Errorf("srv-b's AgentStart backoff: %v", list)
	}

	// Clearing one process's backoff leaves the other and records who did it.
	out = f.ok("backoff", "clear", "srv-b", "--process", "Recovery")
	if rows := outLines(out); len(rows) != 2 || !strings.Contains(rows[1], "srv-b") || !strings.Contains(rows[1], "Recovery") ||
		!strings.Contains(rows[1], "BackoffCleared") || !strings.Contains(rows[1], "provider reboot: 503") {
		t.Errorf("clear output: %s", out)
	}
	decodeJSON(t, f.ok("backoff", "list", "--machine", "srv-b", "-o", "json"), &list)
	if len(list) != 1 || list[0]["process"] != "ShepherdAgentStart" {
		t.Errorf("after clearing Recovery: %v", list)
	}
	var events []map[string]any
	decodeJSON(t, f.ok("history", "srv-b", "--process", "Recovery", "-o", "json"), &events)
	last := events[len(events)-1]
	if last["event"] != "BackoffCleared" || !strings.Contains(last["cause"].(string), "cleared by ") ||
		!strings.Contains(last["cause"].(string), "provider reboot: 503") || last["actor"] != ops.Actor() {
		t.Errorf("history of the clear: %v", last)
	}

	// Without --process every backoff goes; JSON lists them.
	var res struct {
		Changes []map[string]any `json:"changes"`
	}
	decodeJSON(t, f.ok("backoff", "clear", "srv-b", "-o", "json"), &res)
	if len(res.Changes) != 1 || res.Changes[0]["process"] != "ShepherdAgentStart" || res.Changes[0]["event"] != "BackoffCleared" {
		t.Errorf("clear json: %v", res)
	}
	r := f.run("backoff", "clear", "srv-b")
	if r.code != 1 || len(outLines(r.err)) != 1 || !strings.Contains(r.err, "no backoff") {
		t.Errorf("clearing nothing: %+v", r)
	}
	if r := f.run("backoff", "clear"); r.code != 2 {
		t.Errorf("clear without a machine: %+v", r)
	}
}
