package main

import (
	"context"

	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/ops"
)

// TestHistoryAgentStartAndRecovery drives a machine through AgentStart
// (fail, backoff, operator clear, retry, finish) and Recovery with the real
// candidate queries, then reads its history in every form.
func TestHistoryAgentStartAndRecovery(t *testing.T) {
	ctx := context.Background()
	f := newFleetDB(t)
	s := f.session("shepherd-test")
	host, _ := os.Hostname()
	id := f.add("srv-1", "fra1")
	f.add("srv-2", "fra1") // another machine, whose history must not show

	agentStart := func(tx pgx.Tx) ([]uuid.UUID, error) { return bmdb.AgentStartCandidates(ctx, tx, 10) }
	// claim takes the machine under test, which must be among the real
	// candidates; the other machine is left alone (offering it would claim
	// it first whenever its id sorts first).
	claim := func(process bmdb.Process, candidates func(pgx.Tx) ([]uuid.UUID, error)) *bmdb.Work {
		t.Helper()
		w, err := s.Work(ctx, process, func(tx pgx.Tx) ([]uuid.UUID, error) {
			ids, err := candidates(tx)
			if containsID(ids, id) {
				return []uuid.UUID{id}, err
			}
			return nil, err
		})
		if err != nil {
			t.Fatalf("claiming %s of the machine under test: %v", process, err)
		}
		return w
	}
	w := claim(bmdb.ProcessShepherdAgentStart, onlyMachine(id))
	if err := w.Fail(ctx, &bmdb.AgentStartBackoff, "ssh: connection refused"); err != nil {
		t.Fatal(err)
	}
	// In backoff: AgentStart's candidates leave it out until an operator clears it.
	if ids, err := candidatesOf(ctx, f, agentStart); err != nil || containsID(ids, id) {
		t.Fatalf("machine in backoff is an AgentStart candidate: %v %v", ids, err)
	}
	if out := f.ok("backoff", "clear", "srv-1", "--process", "AgentStart"); !strings.Contains(out, "BackoffCleared") || !strings.Contains(out, "srv-1") {
		t.Fatalf("backoff clear: %s", out)
	}
	w = claim(bmdb.ProcessShepherdAgentStart, agentStart)
	if err := w.Finish(ctx, func(tx pgx.Tx) error { return bmdb.SetAgentStarted(ctx, tx, id, fleetTestKey) }); err != nil {
		t.Fatal(err)
	}
	// The agent never heart-beats: Recovery's candidates pick it up.
	f.exec(`UPDATE machine_agent_started SET agent_started_at = now() - interval '1 hour' WHERE machine_id = $1`, id)
	pol := brakestest.Ready(t, f.conn.Pool, bmdb.DefaultPolicy())
	w = claim(bmdb.ProcessShepherdRecovery, func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(ctx, tx, pol, 10)
	})
	if err := w.Finish(ctx, func(tx pgx.Tx) error { return bmdb.ClearAgentTags(ctx, tx, id) }); err != nil {
		t.Fatal(err)
	}

	want := [][2]string{
		{"AgentStart", "Started"}, {"AgentStart", "Failed"}, {"AgentStart", "BackoffCleared"},
		{"AgentStart", "Started"}, {"AgentStart", "Finished"},
		{"Recovery", "Started"}, {"Recovery", "Finished"},
	}
	out := f.ok("history", id.String()[:6])
	rows := outLines(out)
	if !strings.HasPrefix(rows[0], "TIME (") || !strings.Contains(rows[0], "PROCESS") || len(rows) != len(want)+1 {
		t.Fatalf("history table:\n%s", out)
	}
	for i, w := range want {
		fields := strings.Fields(rows[i+1])
		// TIME is two fields (date, clock), AGE one or two ("now", "3s ago").
		if !strings.Contains(rows[i+1], " "+w[0]+" ") || !strings.Contains(rows[i+1], " "+w[1]+" ") || len(fields) < 6 {
			t.Errorf("history row %d = %q, want %s %s", i, rows[i+1], w[0], w[1])
		}
	}
	if !strings.Contains(rows[2], "ssh: connection refused") || !strings.Contains(rows[2], "shepherd-test@"+host) {
		t.Errorf("failure row lacks cause or session: %q", rows[2])
	}
	if !strings.Contains(rows[3], "cleared by ") || !strings.Contains(rows[3], " "+ops.Actor()+" ") {
		t.Errorf("backoff-cleared row lacks the operator: %q", rows[3])
	}

	// JSON: stable snake_case names, oldest first.
	var events []map[string]any
	decodeJSON(t, f.ok("history", "srv-1", "-o", "json"), &events)
	if len(events) != len(want) {
		t.Fatalf("json history has %d events, want %d", len(events), len(want))
	}
	for _, k := range []string{"id", "machine_id", "at", "process", "event", "cause", "session_id", "session_component", "session_host", "actor"} {
		if _, ok := events[0][k]; !ok {
			t.Errorf("json event lacks %q: %v", k, events[0])
		}
	}
	if events[1]["event"] != "Failed" || events[1]["cause"] != "ssh: connection refused" || events[6]["process"] != "ShepherdRecovery" {
		t.Errorf("json events: %v", events)
	}

	// Filters.
	decodeJSON(t, f.ok("history", "srv-1", "--process", "recovery", "-o", "json"), &events)
	if len(events) != 2 || events[0]["event"] != "Started" || events[1]["event"] != "Finished" {
		t.Errorf("--process recovery: %v", events)
	}
	decodeJSON(t, f.ok("history", "srv-1", "--limit", "2", "-o", "json"), &events)
	if len(events) != 2 || events[0]["process"] != "ShepherdRecovery" || events[0]["event"] != "Started" {
		t.Errorf("--limit 2 keeps the newest two, oldest first: %v", events)
	}
	decodeJSON(t, f.ok("history", "srv-1", "--since", "1h", "-o", "json"), &events)
	if len(events) != len(want) {
		t.Errorf("--since 1h: %d events", len(events))
	}
	decodeJSON(t, f.ok("history", "srv-1", "--since", time.Now().Add(time.Hour).Format("2006-01-02 15:04"), "-o", "json"), &events)
	if len(events) != 0 {
		t.Errorf("--since in the future: %d events", len(events))
	}
	if r := f.run("history", "srv-1", "--since", "yesterday-ish"); r.code != 2 || !strings.Contains(r.err, "--since") {
		t.Errorf("bad --since: %+v", r)
	}
	if r := f.run("history", "srv-1", "--process", "Reboot"); r.code != 2 || !strings.Contains(r.err, "unknown process") {
		t.Errorf("bad --process: %+v", r)
	}
	if r := f.run("history", "srv-1", "-o", "yaml"); r.code != 2 || !strings.Contains(r.err, "unknown output format") {
		t.Errorf("bad -o: %+v", r)
	}

	// A deleted machine keeps its history, by UUID and by prefix.
	f.exec(`DELETE FROM machines WHERE machine_id = $1`, id)
	for _, ref := range []string{id.String(), id.String()[:8]} {
		decodeJSON(t, f.ok("history", ref, "-o", "json"), &events)
		if len(events) != len(want) {
			t.Errorf("history of deleted machine by %q: %d events", ref, len(events))
		}
	}
	if r := f.run("machines", "show", id.String()); r.code != 1 || !strings.Contains(r.err, "no such machine") {
		t.Errorf("show of a deleted machine: %+v", r)
	}
}

func candidatesOf(ctx context.Context, f *fleetDB, fn func(pgx.Tx) ([]uuid.UUID, error)) ([]uuid.UUID, error) {
	var ids []uuid.UUID
	err := pgx.BeginFunc(ctx, f.conn.Pool, func(tx pgx.Tx) error {
		var err error
		ids, err = fn(tx)
		return err
	})
	return ids, err
}

func containsID(ids []uuid.UUID, id uuid.UUID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// TestHistoryFollow: --follow prints the history, then an event another
// session writes afterwards, and ends cleanly when interrupted.
func TestHistoryFollow(t *testing.T) {
	ctx := context.Background()
	f := newFleetDB(t)
	id := f.add("srv-follow", "fra1")
	w, err := f.session("shepherd-a").Work(ctx, bmdb.ProcessShepherdAgentStart, onlyMachine(id))
	if err != nil {
		t.Fatal(err)
	}

	for _, format := range []string{"table", "json"} {
		t.Run(format, func(t *testing.T) {
			fctx, cancel := context.WithCancel(ctx)
			defer cancel()
			var out, errb lockedBuffer
			done := make(chan int)
			go func() {
				done <- run(fctx, []string{"--db", f.url, "history", "srv-follow", "--follow", "-o", format}, streams{In: strings.NewReader(""), Out: &out, Err: &errb})
			}()
			// Once the first event is printed, the follower is listening.
			waitForOutput(t, &out, "Started", done)
			other := f.session("shepherd-b-" + format)
			w2, err := other.Work(ctx, bmdb.ProcessShepherdRecovery, onlyMachine(f.add("srv-other-"+format, "fra1")))
			if err != nil {
				t.Fatal(err)
			}
			if err := w2.Finish(ctx, nil); err != nil { // another machine's event: not printed
				t.Fatal(err)
			}
			if err := other.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if format == "table" {
				if err := w.Fail(ctx, nil, "agent upload: disk full"); err != nil {
					t.Fatal(err)
				}
				waitForOutput(t, &out, "agent upload: disk full", done)
			} else {
				s3 := f.session("shepherd-c")
				w3, err := s3.Work(ctx, bmdb.ProcessShepherdAgentStart, onlyMachine(id))
				if err != nil {
					t.Fatal(err)
				}
				if err := w3.Cancel(ctx, "shutting down"); err != nil {
					t.Fatal(err)
				}
				waitForOutput(t, &out, "shutting down", done)
			}
			cancel()
			if code := <-done; code != 0 {
				t.Fatalf("follow exited %d: %s", code, errb.String())
			}
			got := out.String()
			if strings.Contains(got, "srv-other") || strings.Contains(got, "shepherd-b") {
				t.Errorf("follow printed another machine's event:\n%s", got)
			}
			if format == "json" {
				for _, l := range outLines(got) {
					var e map[string]any
					decodeJSON(t, l, &e)
				}
				var all []map[string]any
				decodeJSON(t, f.ok("history", "srv-follow", "-o", "json"), &all)
				if n := len(outLines(got)); n != len(all) || !strings.Contains(outLines(got)[n-1], `"Canceled"`) {
					t.Errorf("json follow printed %d events, the machine has %d:\n%s", n, len(all), got)
				}
			} else if n := len(outLines(got)); n != 3 { // header, Started, Failed
				t.Errorf("table follow printed %d lines:\n%s", n, got)
			}
		})
	}
}

// waitFor waits until out contains s, failing if the command ends first or
// nothing comes within a generous bound (a hang, not a slowness check).
func waitForOutput(t *testing.T, out *lockedBuffer, s string, done chan int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(out.String(), s) {
		select {
		case code := <-done:
			t.Fatalf("command ended (exit %d) before printing %q:\n%s", code, s, out.String())
		case <-deadline:
			t.Fatalf("no %q in output:\n%s", s, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
