package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/creack/pty"
	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/localpg"
	"github.com/bmctl/bmctl/pkg/ops"
)

// opsFleet is a small fleet with something for every operator action: a
// backoff, a started agent, live and dead work, a hold and an attention mark.
type opsFleet struct {
	*fleetDB
	backedOff, started, working, dead, held, marked, idle uuid.UUID
}

func newOpsFleet(t *testing.T) *opsFleet {
	t.Helper()
	ctx := context.Background()
	f := &opsFleet{fleetDB: newFleetDB(t)}
	f.backedOff = f.add("srv-backoff", "fra1")
	f.started = f.add("srv-started", "fra1")
	f.working = f.add("srv-working", "ams1")
	f.dead = f.add("srv-dead", "ams1")
	f.held = f.add("srv-held", "ams1")
	f.marked = f.add("srv-marked", "ams1")
	f.idle = f.add("srv-idle", "ams1")
	f.exec(`INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds)
		VALUES ($1, 'ShepherdAgentStart', now() + interval '5 minutes', 'ssh: connection refused', 300)`, f.backedOff)
	for _, id := range []uuid.UUID{f.started, f.marked} {
		if err := bmdb.SetAgentStarted(ctx, f.conn.Pool, id, fleetTestKey); err != nil {
			t.Fatal(err)
		}
	}
	s := f.session("shepherd-test")
	if _, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, onlyMachine(f.working)); err != nil {
		t.Fatal(err)
	}
	// A shepherd that died: its session is past its deadline (the sweep has
	// not run yet), its work is still there.
	var deadSession uuid.UUID
	if err := f.conn.Pool.QueryRow(ctx, `
		INSERT INTO sessions (session_component, session_host, session_interval_seconds, session_deadline)
		VALUES ('shepherd', 'host-3', 10, now() - interval '1 minute') RETURNING session_id`).Scan(&deadSession); err != nil {
		t.Fatal(err)
	}
	f.exec(`INSERT INTO work (machine_id, session_id, process, work_detail) VALUES ($1, $2, 'ShepherdRecovery', 'rebooting')`, f.dead, deadSession)
	f.exec(`INSERT INTO machine_holds (machine_id, hold_reason, hold_actor, hold_until) VALUES ($1, 'disk swap', 'bob@jump2', now() + interval '2 hours')`, f.held)
	f.exec(`INSERT INTO machine_attention (machine_id, process, attention_reason) VALUES ($1, 'ShepherdRecovery', 'remediation budget exhausted: 3 of 3 in 24h')`, f.marked)
	return f
}

// dump is every row of every table and every sequence's position, as
// pg_dump --data-only prints them.
func (f *fleetDB) dump() string {
	f.t.Helper()
	bin, err := localpg.FindBinDir()
	if err != nil {
		f.t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "pg_dump"), "--data-only", "--no-owner", "--dbname", f.url).Output()
	if err != nil {
		f.t.Fatalf("pg_dump: %v", err)
	}
	if !strings.Contains(string(out), "COPY public.machines") {
		f.t.Fatalf("pg_dump printed no machines:\n%s", out)
	}
	// pg_dump 15.14 and later fence the dump with a random key per run.
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, `\restrict `) && !strings.HasPrefix(l, `\unrestrict `) {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// TestOpsDryRunChangesNothing: every action's --dry-run prints the change it
// would make and leaves the database byte-for-byte as it was, sequences
// included.
func TestOpsDryRunChangesNothing(t *testing.T) {
	f := newOpsFleet(t)
	cases := []struct {
		args []string
		want []string // in the printed plan
	}{
		{[]string{"hold", "srv-idle", "srv-started", "--reason", "disk swap", "--for", "4h"}, []string{"HoldPlaced", "srv-idle", "srv-started", "hold for every process until", "disk swap"}},
		{[]string{"hold", "srv-held", "--reason", "longer", "--process", "Recovery"}, []string{"HoldPlaced", "hold for ShepherdRecovery until released: longer"}},
		{[]string{"release", "srv-held"}, []string{"HoldReleased", "release the hold for every process by bob@jump2", "disk swap"}},
		{[]string{"backoff", "clear", "--all"}, []string{"BackoffCleared", "srv-backoff", "ssh: connection refused"}},
		{[]string{"recover", "srv-started", "srv-idle"}, []string{"RecoveryRequested", "srv-started", "unchanged: machine has no started agent"}},
		{[]string{"work", "cancel", "--location", "ams1"}, []string{"CancelRequested", "ask shepherd-test@", "LockBroken", "break the lock of shepherd@host-3 (rebooting)"}},
		{[]string{"attention", "clear", "srv-marked"}, []string{"AttentionCleared", "remediation budget exhausted"}},
		{[]string{"breaker", "override", "--for", "30m", "--reason", "rack 7 lost power", "--location", "fra1"}, []string{"BreakerOverridden", "(fleet)", "the breaker of location fra1 closed until", "rack 7 lost power"}},
	}
	before := f.dump()
	for _, c := range cases {
		out := f.ok(append(c.args, "--dry-run")...)
		if !strings.HasPrefix(out, "dry run: ") || !strings.Contains(out, "nothing was changed") {
			t.Errorf("%s --dry-run does not say it is a dry run:\n%s", strings.Join(c.args, " "), out)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s --dry-run lacks %q:\n%s", strings.Join(c.args, " "), w, out)
			}
		}
		var res struct {
			DryRun  bool             `json:"dry_run"`
			Changes []map[string]any `json:"changes"`
		}
		decodeJSON(t, f.ok(append(c.args, "--dry-run", "-o", "json")...), &res)
		if !res.DryRun || len(res.Changes) == 0 {
			t.Errorf("%s --dry-run -o json: %+v", strings.Join(c.args, " "), res)
		}
		if after := f.dump(); after != before {
			t.Fatalf("%s --dry-run changed the database:\n--- before ---\n%s\n--- after ---\n%s", strings.Join(c.args, " "), before, after)
		}
	}
	// And the same commands without --dry-run do change it.
	f.ok("hold", "srv-idle", "--reason", "disk swap", "--for", "4h")
	if f.dump() == before {
		t.Fatal("a real hold left the dump unchanged: the comparison cannot see changes")
	}
}

// historyOf returns the fleet's history events written by actor.
func (f *fleetDB) historyBy(actor string) []map[string]any {
	f.t.Helper()
	var events []map[string]any
	decodeJSON(f.t, f.ok("history", "--all", "--actor", actor, "-o", "json"), &events)
	return events
}

// TestOpsRecordOperator: every override writes its operator into history,
// in the actor field, and into the row it changes where that has one.
func TestOpsRecordOperator(t *testing.T) {
	f := newOpsFleet(t)
	ctx := context.Background()
	steps := []struct {
		args  []string
		event string
		on    uuid.UUID
	}{
		{[]string{"hold", "srv-idle", "--reason", "disk swap", "--for", "4h"}, "HoldPlaced", f.idle},
		{[]string{"release", "srv-held", "--reason", "swapped"}, "HoldReleased", f.held},
		{[]string{"backoff", "clear", "srv-backoff"}, "BackoffCleared", f.backedOff},
		{[]string{"recover", "srv-started"}, "RecoveryRequested", f.started},
		{[]string{"work", "cancel", "srv-working", "--process", "AgentStart", "--reason", "wrong image"}, "CancelRequested", f.working},
		{[]string{"work", "cancel", "srv-dead"}, "LockBroken", f.dead},
		{[]string{"attention", "clear", "srv-marked"}, "AttentionCleared", f.marked},
		{[]string{"breaker", "override", "--for", "30m", "--reason", "power is really out"}, "BreakerOverridden", uuid.Nil},
	}
	for i, s := range steps {
		actor := "alice@jump1"
		if i%2 == 1 {
			actor = "carol@jump9"
		}
		out := f.ok(append(s.args, "--as", actor)...)
		if !strings.Contains(out, s.event) || !strings.Contains(out, "done: ") {
			t.Errorf("%s: output lacks %s:\n%s", strings.Join(s.args, " "), s.event, out)
		}
		events := f.historyBy(actor)
		last := events[len(events)-1]
		if last["event"] != s.event || last["actor"] != actor || last["machine_id"] != s.on.String() {
			t.Errorf("%s: last event by %s = %v, want %s on %s", strings.Join(s.args, " "), actor, last, s.event, s.on)
		}
	}
	if n := len(f.historyBy("alice")) + len(f.historyBy("carol@jump9")); n != len(steps) {
		t.Errorf("%d events by the two operators, want %d", n, len(steps))
	}
	// The rows carry the operator too.
	var holdActor, cancelActor, cancelReason, overrideActor, requestedBy string
	row := func(sql string, dest ...any) {
		t.Helper()
		if err := f.conn.Pool.QueryRow(ctx, sql).Scan(dest...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	row(`SELECT hold_actor FROM machine_holds`, &holdActor)
	row(`SELECT work_cancel_actor, work_cancel_reason FROM work WHERE work_cancel_requested_at IS NOT NULL`, &cancelActor, &cancelReason)
	row(`SELECT override_actor FROM breaker_overrides WHERE breaker_scope = 'fleet'`, &overrideActor)
	row(`SELECT recovery_requested_by FROM machine_recovery_requested`, &requestedBy)
	if holdActor != "alice@jump1" || cancelActor != "alice@jump1" || cancelReason != "wrong image" || overrideActor != "carol@jump9" || requestedBy != "carol@jump9" {
		t.Errorf("rows: hold by %q, cancel by %q (%q), override by %q, recovery by %q", holdActor, cancelActor, cancelReason, overrideActor, requestedBy)
	}
	var left int
	row(`SELECT (SELECT count(*) FROM work WHERE machine_id = '`+f.dead.String()+`') + (SELECT count(*) FROM machine_attention) + (SELECT count(*) FROM work_backoff)`, &left)
	if left != 0 {
		t.Errorf("%d rows left that the actions delete", left)
	}
	// Without --as the operator is user@host; the history table shows it.
	f.ok("hold", "srv-started", "--reason", "burn-in")
	out := f.ok("history", "srv-started")
	if !strings.Contains(out, "HoldPlaced") || !strings.Contains(out, ops.Actor()) || !strings.Contains(out, "ACTOR") {
		t.Errorf("history of the hold lacks the actor %s:\n%s", ops.Actor(), out)
	}
}

// TestOpsSelectors: machines by reference or by filters, never both, and
// never nothing.
func TestOpsSelectors(t *testing.T) {
	f := newOpsFleet(t)
	held := func() map[string]bool {
		t.Helper()
		rows, err := f.conn.Pool.Query(context.Background(), `SELECT provider_id FROM machine_holds JOIN machine_provided USING (machine_id)`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]bool{}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			out[id] = true
		}
		return out
	}
	var res struct {
		Changes []struct {
			ProviderID string `json:"provider_id"`
		} `json:"changes"`
	}
	plan := func(args ...string) []string {
		t.Helper()
		decodeJSON(t, f.ok(append(args, "--dry-run", "-o", "json")...), &res)
		var ids []string
		for _, c := range res.Changes {
			ids = append(ids, c.ProviderID)
		}
		return ids
	}
	eq := func(what string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s selects %v, want %v", what, got, want)
		}
	}
	hold := []string{"hold", "--reason", "r"}
	eq("--location fra1", plan(append(hold, "--location", "fra1")...), sortedBy(f, "srv-backoff", "srv-started")...)
	// A held machine is in state held (issue 13's rules), not new.
	eq("--location ams1 --state new", plan(append(hold, "--location", "ams1", "--state", "new")...), sortedBy(f, "srv-idle")...)
	eq("--location ams1 --state held", plan(append(hold, "--location", "ams1", "--state", "held")...), sortedBy(f, "srv-held")...)
	eq("--provider nope", nil)
	if r := f.run(append(hold, "--provider", "nope")...); r.code != 1 || !strings.Contains(r.err, "no machine matches --provider nope") || len(outLines(r.err)) != 1 {
		t.Errorf("a selector matching nothing: %+v", r)
	}
	if got := plan(append(hold, "--all")...); len(got) != 7 {
		t.Errorf("--all selects %v", got)
	}
	// References: each machine once, by provider id, prefix or UUID.
	eq("references", plan(append(hold, "srv-idle", f.started.String()[:8], f.idle.String())...), "srv-idle", "srv-started")

	for _, bad := range [][]string{
		{"hold", "--reason", "r"},                                   // nothing selected
		{"hold", "srv-idle", "--location", "ams1", "--reason", "r"}, // both
		{"hold", "--all", "--state", "new", "--reason", "r"},        // --all and a filter
		{"hold", "--state", "sleepy", "--reason", "r"},              // unknown state
	} {
		r := f.run(bad...)
		if r.code != 2 || len(outLines(r.err)) != 1 || r.out != "" {
			t.Errorf("%v: want one usage line, got %+v", bad, r)
		}
	}
	if len(held()) != 1 {
		t.Errorf("selector tests changed holds: %v", held())
	}
}

// sortedBy orders provider ids as a filter selects them: by machine id.
func sortedBy(f *opsFleet, providerIDs ...string) []string {
	ids := map[string]string{}
	for _, p := range providerIDs {
		var id string
		if err := f.conn.Pool.QueryRow(context.Background(), `SELECT machine_id::text FROM machine_provided WHERE provider_id = $1`, p).Scan(&id); err != nil {
			f.t.Fatal(err)
		}
		ids[id] = p
	}
	keys := make([]string, 0, len(ids))
	for k := range ids {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = ids[k]
	}
	return out
}

// TestOpsBadInput: one clear line, the right exit code and nothing changed.
func TestOpsBadInput(t *testing.T) {
	f := newOpsFleet(t)
	before := f.dump()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"hold", "srv-nope", "--reason", "r"}, 1, `no such machine: "srv-nope" is not a UUID, a UUID prefix or a known provider id`},
		{[]string{"hold", "srv-idle", "srv-nope", "--reason", "r"}, 1, "srv-nope"},
		{[]string{"release", "00000000-0000-0000-0000-00000000000x"}, 2, "is not a valid UUID"},
		{[]string{"hold", "srv-idle"}, 2, "hold needs --reason"},
		{[]string{"hold", "srv-idle", "--reason", "r", "--for", "4 hours"}, 2, `--for "4 hours" is not a positive duration ("30m", "4h", "2d")`},
		{[]string{"hold", "srv-idle", "--reason", "r", "--for", "-1h"}, 2, "not a positive duration"},
		{[]string{"hold", "srv-idle", "--reason", "r", "--for", "1h", "--until", "2099-01-01"}, 2, "give --for or --until, not both"},
		{[]string{"hold", "srv-idle", "--reason", "r", "--until", "tomorrow"}, 2, `--until "tomorrow" is not a time`},
		{[]string{"hold", "srv-idle", "--reason", "r", "--until", "2020-01-01"}, 2, "has already passed"},
		{[]string{"hold", "srv-idle", "--reason", "r", "--process", "Reboot"}, 2, "unknown process"},
		{[]string{"hold", "srv-idle", "--reason", "r", "--as", " "}, 2, "--as"},
		{[]string{"release", "srv-idle"}, 1, "nothing to change: machine " + f.idle.String() + ": no hold"},
		{[]string{"recover", "srv-idle"}, 1, "machine has no started agent"},
		{[]string{"work", "cancel", "srv-idle"}, 1, "no work held"},
		{[]string{"attention", "clear", "srv-idle"}, 1, "no needs-attention mark"},
		{[]string{"breaker", "override", "--reason", "r"}, 2, "breaker override needs --for"},
		{[]string{"breaker", "override", "--for", "1h"}, 2, "breaker override needs --reason"},
		{[]string{"breaker", "override", "--for", "soon", "--reason", "r"}, 2, "not a positive duration"},
		{[]string{"breaker", "override", "--for", "1h", "--reason", "r", "--location", "fra9"}, 1, `no machine is at location "fra9"`},
		{[]string{"history", "--all", "--event", "Exploded"}, 2, `unknown event "Exploded" (want one of Started,`},
		{[]string{"history", "srv-idle", "--all"}, 2, "a machine or --all, not both"},
	} {
		r := f.run(c.args...)
		if r.code != c.code || len(outLines(r.err)) != 1 || !strings.Contains(r.err, c.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and one line with %q", strings.Join(c.args, " "), r.code, r.err, c.code, c.want)
		}
	}
	if f.dump() != before {
		t.Error("bad input changed the database")
	}
}

// onTerminal runs bmctl with stdin on a real terminal (a pty) that has
// typed answer, with captured output.
func (f *fleetDB) onTerminal(answer string, args ...string) result {
	f.t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		f.t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	// Typed ahead: the terminal keeps the line until bmctl reads it.
	if _, err := ptmx.Write([]byte(answer)); err != nil {
		f.t.Fatal(err)
	}
	var out, errb lockedBuffer
	code := run(context.Background(), append([]string{"--db", f.url}, args...), streams{In: tty, Out: &out, Err: &errb})
	return result{code: code, out: out.String(), err: errb.String()}
}

// TestOpsConfirm: on a terminal the plan is shown and only y makes it;
// no answer (an empty line, end of input) or anything else changes nothing.
func TestOpsConfirm(t *testing.T) {
	f := newOpsFleet(t)
	before := f.dump()
	hold := []string{"hold", "--location", "ams1", "--reason", "rack move", "--for", "2h"}
	for _, answer := range []string{"\n", "\x04", "n\n", "yep\n"} {
		r := f.onTerminal(answer, hold...)
		if r.code != 1 || !strings.Contains(r.err, "hold: make these 5 change(s) as "+ops.Actor()+"? [y/N]") ||
			!strings.Contains(r.err, "canceled; nothing changed") || !strings.Contains(r.out, "srv-idle") || !strings.Contains(r.out, "HoldPlaced") {
			t.Errorf("answer %q: %+v", answer, r)
		}
		if f.dump() != before {
			t.Fatalf("answer %q changed the database", answer)
		}
	}
	r := f.onTerminal("y\n", hold...)
	if r.code != 0 || strings.Count(r.out, "done: hold for every process") != 5 {
		t.Errorf("answer y: %+v", r)
	}
	// --yes asks nothing; --dry-run asks nothing and changes nothing.
	if r := f.onTerminal("", "release", "--location", "ams1", "--dry-run"); r.code != 0 || r.err != "" || !strings.Contains(r.out, "dry run") {
		t.Errorf("--dry-run on a terminal: %+v", r)
	}
	if r := f.onTerminal("", "release", "--location", "ams1", "--yes"); r.code != 0 || r.err != "" || strings.Count(r.out, "HoldReleased") != 5 {
		t.Errorf("--yes on a terminal: %+v", r)
	}
}

// TestHistoryAll: the fleet's history with every filter, the actor of
// component events (component@host) and of operator actions, and --follow.
func TestHistoryAll(t *testing.T) {
	f := newOpsFleet(t)
	host, _ := os.Hostname()
	f.ok("hold", "srv-idle", "--reason", "disk swap", "--as", "alice@jump1")
	f.ok("release", "srv-held", "--as", "bob@jump2")
	f.ok("breaker", "override", "--for", "1h", "--reason", "known outage", "--as", "alice@jump1")
	// An old event, before the --since window.
	f.exec(`INSERT INTO work_history (machine_id, process, event, event_at, session_component, session_host)
		VALUES ($1, 'ShepherdAgentStart', 'Failed', now() - interval '3 hours', 'shepherd', 'old-host')`, f.idle)

	var events []map[string]any
	get := func(args ...string) []string {
		t.Helper()
		decodeJSON(t, f.ok(append([]string{"history", "--all", "-o", "json"}, args...)...), &events)
		var out []string
		for _, e := range events {
			out = append(out, e["event"].(string)+"/"+e["actor"].(string))
		}
		return out
	}
	eq := func(what string, got []string, want ...string) {
		t.Helper()
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: %v, want %v", what, got, want)
		}
	}
	started := "Started/shepherd-test@" + host
	eq("everything", get(), started, "HoldPlaced/alice@jump1", "HoldReleased/bob@jump2", "BreakerOverridden/alice@jump1", "Failed/shepherd@old-host")
	eq("--since 1h", get("--since", "1h"), started, "HoldPlaced/alice@jump1", "HoldReleased/bob@jump2", "BreakerOverridden/alice@jump1")
	eq("--actor alice", get("--actor", "alice"), "HoldPlaced/alice@jump1", "BreakerOverridden/alice@jump1")
	eq("--actor shepherd@old-host", get("--actor", "shepherd@old-host"), "Failed/shepherd@old-host")
	eq("--event", get("--event", "holdplaced,HoldReleased"), "HoldPlaced/alice@jump1", "HoldReleased/bob@jump2")
	eq("--location ams1 --process AgentStart", get("--location", "ams1", "--process", "AgentStart"), started, "Failed/shepherd@old-host")
	eq("--limit 2", get("--limit", "2"), "BreakerOverridden/alice@jump1", "Failed/shepherd@old-host")
	if events[0]["machine_id"] != uuid.Nil.String() {
		t.Errorf("the override is not recorded under the fleet: %v", events[0])
	}
	out := f.ok("history", "--all", "--since", "1h")
	rows := outLines(out)
	if len(rows) != 5 || !strings.Contains(rows[0], "MACHINE") || !strings.Contains(rows[0], "ACTOR") ||
		!strings.Contains(rows[4], "(fleet)") || !strings.Contains(rows[2], fleetShort(f.idle)) {
		t.Errorf("history --all table:\n%s", out)
	}
	if r := f.run("history", "--all", "--actor", "nobody"); r.code != 0 || !strings.Contains(r.err, "no history for the fleet (actor nobody)") {
		t.Errorf("no events: %+v", r)
	}

	// --follow: every machine's new events, filtered, as they are written.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var fout, ferr lockedBuffer
	done := make(chan int)
	go func() {
		done <- run(ctx, []string{"--db", f.url, "history", "--all", "--follow", "--event", "HoldPlaced", "-o", "json"}, streams{In: strings.NewReader(""), Out: &fout, Err: &ferr})
	}()
	waitForOutput(t, &fout, "disk swap", done)
	f.ok("release", "srv-idle")                                              // filtered out
	f.ok("hold", "srv-started", "--reason", "burn-in", "--as", "dave@jump3") // another machine
	waitForOutput(t, &fout, "dave@jump3", done)
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("follow exited %d: %s", code, ferr.String())
	}
	if lines := outLines(fout.String()); len(lines) != 2 || strings.Contains(fout.String(), "HoldReleased") {
		t.Errorf("follow printed:\n%s", fout.String())
	}
}

func fleetShort(id uuid.UUID) string { return id.String()[:8] }

// TestWorkCancelWait: --wait returns once the holder has ended the work it
// was asked to cancel, and fails when the holder does not.
func TestWorkCancelWait(t *testing.T) {
	ctx := context.Background()
	f := newFleetDB(t)
	busy, deaf := f.add("srv-busy", "fra1"), f.add("srv-deaf", "fra1")
	s := f.session("shepherd-test")
	w, err := s.Work(ctx, bmdb.ProcessShepherdRecovery, onlyMachine(busy))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Work(ctx, bmdb.ProcessShepherdRecovery, onlyMachine(deaf)); err != nil {
		t.Fatal(err)
	}
	// Nobody reads the request: --wait gives up and says so.
	r := f.run("work", "cancel", "srv-deaf", "--wait", "1s")
	if r.code != 1 || !strings.Contains(r.err, "after 1s, 1 holder(s) had not ended the work") || !strings.Contains(r.out, "CancelRequested") {
		t.Fatalf("unanswered cancel: %+v", r)
	}
	// The holder, as a shepherd does: sees the request on its work and
	// ends the work as canceled.
	holder := make(chan error, 1)
	go func() {
		var err error
		asked := false
		testwait.Until(testwait.Limit, func() bool {
			err = f.conn.Pool.QueryRow(ctx, `SELECT work_cancel_requested_at IS NOT NULL FROM work WHERE machine_id = $1`, busy).Scan(&asked)
			return err != nil || asked
		})
		switch {
		case err == nil && !asked:
			err = errors.New("the work never saw the cancel request")
		case err == nil:
			err = w.Cancel(ctx, "canceled at the operator's request")
		}
		holder <- err
	}()
	out := f.ok("work", "cancel", "srv-busy", "--process", "Recovery", "--wait", "2m")
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "CancelRequested") {
		t.Errorf("cancel output:\n%s", out)
	}
	var events []map[string]any
	decodeJSON(t, f.ok("history", "srv-busy", "-o", "json"), &events)
	if last := events[len(events)-1]; last["event"] != "Canceled" {
		t.Errorf("last event %v, want the holder's Canceled", last)
	}
}
