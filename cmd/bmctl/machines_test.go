package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

// seedViews makes a small fleet with one machine in each interesting state:
// new, agent_starting (with a detail), backed_off, healthy, heartbeat_stale.
func seedViews(t *testing.T) (f *fleetDB, ids map[string]uuid.UUID) {
	ctx := context.Background()
	f = newFleetDB(t)
	ids = map[string]uuid.UUID{}
	for _, p := range []string{"srv-new", "srv-starting", "srv-backoff", "srv-healthy", "srv-stale"} {
		ids[p] = f.add(p, map[bool]string{true: "ams1", false: "fra1"}[p == "srv-stale"])
	}
	s := f.session("shepherd-test")
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, onlyMachine(ids["srv-starting"]))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetDetail(ctx, "uploading agent"); err != nil {
		t.Fatal(err)
	}
	w, err = s.Work(ctx, bmdb.ProcessShepherdAgentStart, onlyMachine(ids["srv-backoff"]))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Fail(ctx, &bmdb.AgentStartBackoff, "ssh: no route to host"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"srv-healthy", "srv-stale"} {
		if err := bmdb.SetAgentStarted(ctx, f.conn.Pool, ids[p], fleetTestKey); err != nil {
			t.Fatal(err)
		}
		if _, err := bmdb.RecordHeartbeat(ctx, f.conn.Pool, ids[p], fleetTestKey); err != nil {
			t.Fatal(err)
		}
	}
	f.exec(`UPDATE machine_agent_heartbeat SET agent_heartbeat_at = now() - interval '20 minutes' WHERE machine_id = $1`, ids["srv-stale"])
	brakestest.Ready(t, f.conn.Pool, bmdb.DefaultPolicy()) // an endpoint and a shepherd run
	return f, ids
}

func TestMachinesList(t *testing.T) {
	f, ids := seedViews(t)

	out := f.ok("machines", "list", "--sort", "provider")
	rows := outLines(out)
	if len(rows) != 6 || !strings.HasPrefix(rows[0], "MACHINE ") {
		t.Fatalf("machines list:\n%s", out)
	}
	// Sorted by provider and provider id; states and work as seeded.
	for i, want := range []string{"srv-backoff .* backed_off .* AgentStart in ", "srv-healthy .* healthy", "srv-new .* new", "srv-stale .* heartbeat_stale", "srv-starting .* agent_starting .* AgentStart: uploading agent"} {
		parts := strings.Split(want, " .* ")
		for _, p := range parts {
			if !strings.Contains(rows[i+1], p) {
				t.Errorf("row %d %q lacks %q", i, rows[i+1], p)
			}
		}
	}
	// Columns are aligned: every row has STATE where the header has it.
	col := strings.Index(rows[0], "STATE")
	for _, r := range rows[1:] {
		if r[col-1] != ' ' || r[col] == ' ' {
			t.Errorf("row not aligned with header at STATE:\n%s\n%s", rows[0], r)
		}
	}

	wide := f.ok("machines", "list", "-o", "wide", "--state", "agent_starting")
	if !strings.Contains(wide, ids["srv-starting"].String()) || !strings.Contains(wide, "shepherd-test@") || len(outLines(wide)) != 2 {
		t.Errorf("wide agent_starting:\n%s", wide)
	}

	var list []map[string]any
	decodeJSON(t, f.ok("machines", "list", "-o", "json", "--sort", "provider", "--state", "backed_off,heartbeat_stale"), &list)
	if len(list) != 2 {
		t.Fatalf("json state filter: %v", list)
	}
	for _, k := range []string{"machine_id", "provider", "provider_id", "address", "location", "state", "work", "backoff", "last_heartbeat_at", "agent_started_at", "created_at"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("json machine lacks %q: %v", k, list[0])
		}
	}
	if b, _ := list[0]["backoff"].(map[string]any); list[0]["provider_id"] != "srv-backoff" || b["cause"] != "ssh: no route to host" || b["process"] != "ShepherdAgentStart" {
		t.Errorf("json backed-off machine: %v", list[0])
	}

	decodeJSON(t, f.ok("machines", "list", "-o", "json", "--location", "ams1"), &list)
	if len(list) != 1 || list[0]["provider_id"] != "srv-stale" {
		t.Errorf("--location ams1: %v", list)
	}
	decodeJSON(t, f.ok("machines", "list", "-o", "json", "--process", "AgentStart", "--sort", "provider", "--desc"), &list)
	if len(list) != 2 || list[0]["provider_id"] != "srv-starting" {
		t.Errorf("--process AgentStart --desc: %v", list)
	}
	decodeJSON(t, f.ok("machines", "list", "-o", "json", "--provider", "nope"), &list)
	if len(list) != 0 {
		t.Errorf("unknown provider lists machines: %v", list)
	}
	decodeJSON(t, f.ok("machines", "list", "-o", "json", "--sort", "provider", "--limit", "2", "--offset", "1"), &list)
	if len(list) != 2 || list[0]["provider_id"] != "srv-healthy" {
		t.Errorf("page 2 of 2: %v", list)
	}
	// A shorter stale threshold turns the healthy machine stale too.
	decodeJSON(t, f.ok("machines", "list", "-o", "json", "--state", "heartbeat_stale", "--stale-heartbeat", "1ms"), &list)
	if len(list) != 2 {
		t.Errorf("--stale-heartbeat 1ms: %v", list)
	}

	for _, args := range [][]string{
		{"--state", "sleeping"}, {"--sort", "colour"}, {"-o", "yaml"}, {"--process", "Reboot"}, {"--limit", "-1"}, {"extra"},
	} {
		if r := f.run(append([]string{"machines", "list"}, args...)...); r.code != 2 || len(outLines(r.err)) != 1 {
			t.Errorf("machines list %v: want one-line usage error, exit 2: %+v", args, r)
		}
	}
}

func TestMachinesShowAndAdd(t *testing.T) {
	f, ids := seedViews(t)

	out := f.ok("machines", "show", "srv-backoff")
	for _, want := range []string{"Machine:", ids["srv-backoff"].String(), "State:", "backed_off", "Provider:", "test srv-backoff",
		"Backoffs:", "AgentStart", "active", "5m", "ssh: no route to host", "History (newest 2", "Started", "Failed", "Work:\n  none"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q:\n%s", want, out)
		}
	}
	out = f.ok("machines", "show", ids["srv-starting"].String()[:8])
	if !strings.Contains(out, "uploading agent") || !strings.Contains(out, "shepherd-test@") {
		t.Errorf("show of agent-starting machine lacks its work:\n%s", out)
	}
	out = f.ok("machines", "show", "srv-healthy")
	if !strings.Contains(out, "Agent key:") || !strings.Contains(out, "0707070707") || !strings.Contains(out, "Backoffs:\n  none") {
		t.Errorf("show of healthy machine:\n%s", out)
	}

	var d map[string]any
	decodeJSON(t, f.ok("machines", "show", "srv-starting", "-o", "json"), &d)
	tags, _ := d["tags"].(map[string]any)
	work, _ := d["work_items"].([]any)
	if d["state"] != "agent_starting" || tags["provided"] == nil || len(work) != 1 || d["backoffs"] == nil || d["history"] == nil {
		t.Errorf("show json: %v", d)
	}

	out = f.ok("machines", "add", "--provider", "inventory", "--provider-id", "rack7-u12", "--address", "10.1.2.3", "--location", "fra2")
	if !strings.HasPrefix(out, "added machine ") {
		t.Fatalf("add: %s", out)
	}
	decodeJSON(t, f.ok("machines", "show", "rack7-u12", "-o", "json"), &d)
	if d["state"] != "new" || d["address"] != "10.1.2.3" || d["location"] != "fra2" {
		t.Errorf("added machine: %v", d)
	}
	decodeJSON(t, f.ok("machines", "add", "--provider", "inventory", "--provider-id", "rack7-u13", "-o", "json"), &d)
	if _, err := uuid.Parse(d["machine_id"].(string)); err != nil {
		t.Errorf("add json: %v", d)
	}
	if r := f.run("machines", "add", "--provider", "inventory", "--provider-id", "rack7-u12"); r.code != 1 || !strings.Contains(r.err, "already registered") {
		t.Errorf("duplicate add: %+v", r)
	}
	if r := f.run("machines", "add", "--provider", "inventory"); r.code != 2 || !strings.Contains(r.err, "--provider-id") {
		t.Errorf("add without provider id: %+v", r)
	}
}

// TestMachineReferences: UUID, prefix and provider id resolution, and the
// errors for ambiguous, unknown and malformed references.
func TestMachineReferences(t *testing.T) {
	f := newFleetDB(t)
	a := uuid.MustParse("aaaa1111-0000-4000-8000-000000000001")
	b := uuid.MustParse("aaaa2222-0000-4000-8000-000000000002")
	f.addWithID(a, "srv-a")
	f.addWithID(b, "srv-b")

	for ref, want := range map[string]uuid.UUID{a.String(): a, "aaaa1": a, "AAAA2222": b, "srv-b": b} {
		if out := f.ok("machines", "show", ref); !strings.Contains(out, want.String()) {
			t.Errorf("show %q does not show %s:\n%s", ref, want, out)
		}
	}
	r := f.run("history", "aaaa")
	if r.code != 1 || len(outLines(r.err)) != 1 || !strings.Contains(r.err, "ambiguous") ||
		!strings.Contains(r.err, a.String()) || !strings.Contains(r.err, b.String()) || !strings.Contains(r.err, "srv-b") {
		t.Errorf("ambiguous prefix: %+v", r)
	}
	for _, ref := range []string{"bbbb", "srv-zzz", uuid.NewString()} {
		r := f.run("machines", "show", ref)
		if r.code != 1 || len(outLines(r.err)) != 1 || !strings.Contains(r.err, "no such machine") {
			t.Errorf("unknown machine %q: %+v", ref, r)
		}
	}
	r = f.run("backoff", "clear", "aaaa1111-0000-4000-8000-00000000000g")
	if r.code != 2 || len(outLines(r.err)) != 1 || !strings.Contains(r.err, "not a valid UUID") {
		t.Errorf("invalid UUID: %+v", r)
	}
}

// TestDatabaseDown: every command fails with one line and exit 1 when the
// database does not answer.
func TestDatabaseDown(t *testing.T) {
	nobody := "postgres://postgres@/bmdb?host=" + t.TempDir() + "&connect_timeout=2"
	for _, args := range [][]string{
		{"history", "srv-1"}, {"machines", "list"}, {"machines", "show", "srv-1"}, {"sessions", "list"},
		{"backoff", "list"}, {"backoff", "clear", "srv-1"}, {"stats", "-o", "json"},
		{"machines", "add", "--provider", "p", "--provider-id", "x"},
	} {
		r := bmctl(t, "", append([]string{"--db", nobody}, args...)...)
		if r.code != 1 || r.out != "" || len(outLines(r.err)) != 1 || !strings.Contains(r.err, "does not answer") {
			t.Errorf("%v with the database down: %+v", args, r)
		}
	}
}

// TestMachinesListStreamed: the list is printed from rows as they arrive;
// its JSON is byte for byte what the whole list gives, and its table rows
// are the cells the list's fields make, laid out as before.
func TestMachinesListStreamed(t *testing.T) {
	f, _ := seedViews(t)
	ctx := context.Background()
	list, err := fleet.ListMachines(ctx, f.conn.Pool, fleet.ListOptions{Sort: fleet.SortProvider})
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	if err := writeJSONList(&want, list); err != nil {
		t.Fatal(err)
	}
	if got := f.ok("machines", "list", "-o", "json", "--sort", "provider"); got != want.String() {
		t.Errorf("streamed JSON:\n%s\nwant:\n%s", got, want.String())
	}
	if got := f.ok("machines", "list", "-o", "json", "--state", "unprovided"); got != "[]\n" {
		t.Errorf("empty streamed JSON: %q", got)
	}

	now := time.Now()
	for _, wide := range []bool{false, true} {
		tb := newMachinesTable(wide)
		for i := range list {
			addMachineRow(tb, &list[i], now, wide)
		}
		var got strings.Builder
		if err := tb.write(&got, 0); err != nil {
			t.Fatal(err)
		}
		if want := plainTable(tb.headers, oldMachineCells(list, now, wide)); got.String() != want {
			t.Errorf("wide=%v table:\n%s\nwant:\n%s", wide, got.String(), want)
		}
	}
}

// oldMachineCells are a machine list's table cells as the table was first
// built, from strings.
func oldMachineCells(list []fleet.MachineSummary, now time.Time, wide bool) [][]string {
	var rows [][]string
	for _, m := range list {
		work, since, session := "-", "-", "-"
		if m.Work != nil {
			work = shortProcess(string(m.Work.Process))
			if m.Work.Detail != "" {
				work += ": " + m.Work.Detail
			}
			since = age(m.Work.StartedAt, now)
			session = sessionName(m.Work.SessionComponent, m.Work.SessionHost)
		}
		backoff, cause := "-", "-"
		if m.Backoff != nil {
			backoff = shortProcess(string(m.Backoff.Process)) + " " + age(m.Backoff.Until, now)
			cause = orDash(m.Backoff.Cause)
			if !wide {
				backoff += ": " + cause
			}
		}
		heartbeat := "-"
		if m.LastHeartbeatAt != nil {
			heartbeat = age(*m.LastHeartbeatAt, now)
		}
		if wide {
			rows = append(rows, []string{m.ID.String(), orDash(m.Provider), orDash(m.ProviderID), orDash(m.Address), orDash(m.Location), string(m.State),
				work, since, session, backoff, cause, heartbeat, orDash(marks(&m, now))})
		} else {
			rows = append(rows, []string{fleet.ShortID(m.ID), orDash(m.ProviderID), orDash(m.Location), string(m.State), work, since, backoff, heartbeat, orDash(marks(&m, now))})
		}
	}
	return rows
}

// plainTable lays rows out as tables do with no width limit: each column as
// wide as its widest cell, two spaces apart, the last one unpadded.
func plainTable(headers []string, rows [][]string) string {
	all := append([][]string{headers}, rows...)
	widths := make([]int, len(headers))
	for _, r := range all {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range all {
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		b.WriteByte('\n')
	}
	return b.String()
}
