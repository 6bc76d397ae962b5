package fleet_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t *testing.T) *bmdb.Conn {
	t.Helper()
	conn, err := bmdb.Open(context.Background(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	return conn
}

func session(t *testing.T, conn *bmdb.Conn, component string) *bmdb.Session {
	t.Helper()
	s, err := conn.StartSession(context.Background(), bmdb.SessionConfig{Component: component, Interval: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func add(t *testing.T, conn *bmdb.Conn, providerID, location string) uuid.UUID {
	t.Helper()
	id, err := bmdb.AddProvidedMachine(context.Background(), conn.Pool, bmdb.ProvidedMachine{
		Provider: "test", ProviderID: providerID, Address: "10.0.0.1:22", Location: location,
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func only(id uuid.UUID) func(pgx.Tx) ([]uuid.UUID, error) {
	return func(pgx.Tx) ([]uuid.UUID, error) { return []uuid.UUID{id}, nil }
}

func exec(t *testing.T, conn *bmdb.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

// TestStates puts one machine in each state through bmdb's API (and ages
// tags by hand where only time would) and checks the derived state.
func TestStates(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	s := session(t, conn, "shepherd-test")
	key := ed25519.PublicKey(make([]byte, ed25519.PublicKeySize))

	want := map[uuid.UUID]fleet.State{}
	var unprovided uuid.UUID
	if err := conn.Pool.QueryRow(ctx, `INSERT INTO machines DEFAULT VALUES RETURNING machine_id`).Scan(&unprovided); err != nil {
		t.Fatal(err)
	}
	want[unprovided] = fleet.StateUnprovided
	want[add(t, conn, "new", "a")] = fleet.StateNew

	starting := add(t, conn, "starting", "a")
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, only(starting))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetDetail(ctx, "dialing"); err != nil {
		t.Fatal(err)
	}
	want[starting] = fleet.StateAgentStarting

	backedOff := add(t, conn, "backedoff", "b")
	w, err = s.Work(ctx, bmdb.ProcessShepherdAgentStart, only(backedOff))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Fail(ctx, &bmdb.AgentStartBackoff, "ssh: connection refused"); err != nil {
		t.Fatal(err)
	}
	want[backedOff] = fleet.StateBackedOff

	awaiting := add(t, conn, "awaiting", "b")
	if err := bmdb.SetAgentStarted(ctx, conn.Pool, awaiting, key); err != nil {
		t.Fatal(err)
	}
	want[awaiting] = fleet.StateAwaitingHeartbeat

	healthy := add(t, conn, "healthy", "b")
	if err := bmdb.SetAgentStarted(ctx, conn.Pool, healthy, key); err != nil {
		t.Fatal(err)
	}
	if _, err := bmdb.RecordHeartbeat(ctx, conn.Pool, healthy, key); err != nil {
		t.Fatal(err)
	}
	want[healthy] = fleet.StateHealthy

	silent := add(t, conn, "silent", "c")
	if err := bmdb.SetAgentStarted(ctx, conn.Pool, silent, key); err != nil {
		t.Fatal(err)
	}
	exec(t, conn, `UPDATE machine_agent_started SET agent_started_at = now() - interval '1 hour' WHERE machine_id = $1`, silent)
	want[silent] = fleet.StateNoHeartbeat

	stale := add(t, conn, "stale", "c")
	if err := bmdb.SetAgentStarted(ctx, conn.Pool, stale, key); err != nil {
		t.Fatal(err)
	}
	if _, err := bmdb.RecordHeartbeat(ctx, conn.Pool, stale, key); err != nil {
		t.Fatal(err)
	}
	exec(t, conn, `UPDATE machine_agent_heartbeat SET agent_heartbeat_at = now() - interval '1 hour' WHERE machine_id = $1`, stale)
	want[stale] = fleet.StateHeartbeatStale

	recovering := add(t, conn, "recovering", "c")
	if err := bmdb.SetAgentStarted(ctx, conn.Pool, recovering, key); err != nil {
		t.Fatal(err)
	}
	exec(t, conn, `UPDATE machine_agent_started SET agent_started_at = now() - interval '1 hour' WHERE machine_id = $1`, recovering)
	if _, err := s.Work(ctx, bmdb.ProcessShepherdRecovery, only(recovering)); err != nil {
		t.Fatal(err)
	}
	want[recovering] = fleet.StateRecovering

	brakestest.Ready(t, conn.Pool, bmdb.DefaultPolicy())
	list, err := fleet.ListMachines(ctx, conn.Pool, fleet.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(want) {
		t.Fatalf("listed %d machines, want %d", len(list), len(want))
	}
	for _, m := range list {
		if m.State != want[m.ID] {
			t.Errorf("machine %s (%s): state %s, want %s", m.ID, m.ProviderID, m.State, want[m.ID])
		}
	}

	// Filtering by a state (driven from a small index for most states)
	// keeps exactly the machines in it, alone and combined with a process.
	for _, st := range fleet.States {
		var wantN int
		for _, m := range list {
			if m.State == st {
				wantN++
			}
		}
		got, err := fleet.ListMachines(ctx, conn.Pool, fleet.ListOptions{States: []fleet.State{st}})
		if err != nil {
			t.Fatal(err)
		}
		n, err := fleet.CountMachines(ctx, conn.Pool, fleet.ListOptions{States: []fleet.State{st}})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != wantN || n != wantN {
			t.Errorf("state %s: listed %d, counted %d, want %d", st, len(got), n, wantN)
		}
		for _, m := range got {
			if m.State != st {
				t.Errorf("state filter %s returned %s in state %s", st, m.ID, m.State)
			}
		}
	}
	if got, err := fleet.ListMachines(ctx, conn.Pool, fleet.ListOptions{
		States: []fleet.State{fleet.StateBackedOff, fleet.StateAgentStarting}, Process: bmdb.ProcessShepherdAgentStart,
	}); err != nil || len(got) != 2 {
		t.Errorf("backed_off+agent_starting of AgentStart: %d machines, %v; want 2", len(got), err)
	}

	// The detail of the agent-starting machine names its work and session.
	m, err := fleet.GetMachine(ctx, conn.Pool, starting, bmdb.RecoveryThresholds{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Work == nil || m.Work.Detail != "dialing" || m.Work.SessionComponent != "shepherd-test" || m.Work.Process != bmdb.ProcessShepherdAgentStart {
		t.Errorf("work of agent-starting machine: %+v", m.Work)
	}
	m, err = fleet.GetMachine(ctx, conn.Pool, backedOff, bmdb.RecoveryThresholds{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Backoff == nil || m.Backoff.Cause != "ssh: connection refused" || m.Backoff.Process != bmdb.ProcessShepherdAgentStart {
		t.Errorf("backoff of backed-off machine: %+v", m.Backoff)
	}

	// Filters and paging happen in SQL.
	got, err := fleet.ListMachines(ctx, conn.Pool, fleet.ListOptions{States: []fleet.State{fleet.StateHealthy, fleet.StateHeartbeatStale}, Sort: fleet.SortProvider})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ProviderID != "healthy" || got[1].ProviderID != "stale" {
		t.Errorf("healthy+stale by provider: %+v", got)
	}
	got, err = fleet.ListMachines(ctx, conn.Pool, fleet.ListOptions{Process: bmdb.ProcessShepherdAgentStart, Sort: fleet.SortProvider})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ProviderID != "backedoff" || got[1].ProviderID != "starting" {
		t.Errorf("AgentStart process filter: %+v", got)
	}
	got, err = fleet.ListMachines(ctx, conn.Pool, fleet.ListOptions{Location: "c", Sort: fleet.SortProvider, Descending: true, Limit: 2, Offset: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ProviderID != "silent" || got[1].ProviderID != "recovering" {
		t.Errorf("location c, desc, page 2: %+v", got)
	}
	got, err = fleet.ListMachines(ctx, conn.Pool, fleet.ListOptions{Sort: fleet.SortState})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(got); i++ {
		if slices.Index(fleet.States, got[i-1].State) > slices.Index(fleet.States, got[i].State) {
			t.Errorf("sort by state: %s before %s", got[i-1].State, got[i].State)
		}
	}
	n, err := fleet.CountMachines(ctx, conn.Pool, fleet.ListOptions{Location: "c"})
	if err != nil || n != 3 {
		t.Errorf("count location c = %d, %v; want 3", n, err)
	}
	got, err = fleet.ListMachines(ctx, conn.Pool, fleet.ListOptions{Match: "DIAL"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].ID != starting {
		t.Errorf("match on work detail: %+v", got)
	}

	st, err := fleet.GetStats(ctx, conn.Pool, bmdb.RecoveryThresholds{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Machines != len(want) || st.ByState[fleet.StateHealthy] != 1 || st.Sessions.Live != 1 || st.OldestWork == nil || st.OldestWork.MachineID != starting {
		t.Errorf("stats: %+v", st)
	}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	db := conn.Pool
	// Machines with chosen ids, so prefixes are predictable.
	ids := []uuid.UUID{
		uuid.MustParse("aaaa1111-0000-4000-8000-000000000001"),
		uuid.MustParse("aaaa2222-0000-4000-8000-000000000002"),
		uuid.MustParse("bbbb1111-0000-4000-8000-000000000003"),
	}
	for i, id := range ids {
		exec(t, conn, `INSERT INTO machines (machine_id) VALUES ($1)`, id)
		exec(t, conn, `INSERT INTO machine_provided (machine_id, provider, provider_id) VALUES ($1, $2, $3)`,
			id, []string{"metal", "metal", "redfish"}[i], []string{"srv-1", "srv-2", "srv-1"}[i])
	}
	// A deleted machine that left history behind.
	gone := uuid.MustParse("cccc0000-0000-4000-8000-000000000004")
	exec(t, conn, `INSERT INTO work_history (machine_id, process, event) VALUES ($1, 'ShepherdAgentStart', 'Started')`, gone)

	for ref, want := range map[string]uuid.UUID{
		ids[0].String(): ids[0],
		"aaaa1":         ids[0],
		"AAAA-2":        ids[1],
		"bb":            ids[2],
		"srv-2":         ids[1],
	} {
		got, err := fleet.Resolve(ctx, db, ref, fleet.ResolveOptions{})
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %s, %v; want %s", ref, got, err, want)
		}
	}
	var amb *fleet.AmbiguousError
	if _, err := fleet.Resolve(ctx, db, "aaaa", fleet.ResolveOptions{}); !errors.As(err, &amb) || len(amb.Candidates) != 2 {
		t.Errorf("Resolve(aaaa) = %v; want ambiguity between two", err)
	} else if !strings.Contains(err.Error(), ids[0].String()) || !strings.Contains(err.Error(), "srv-2") {
		t.Errorf("ambiguity error does not list the candidates: %v", err)
	}
	if _, err := fleet.Resolve(ctx, db, "srv-1", fleet.ResolveOptions{}); !errors.As(err, &amb) || len(amb.Candidates) != 2 {
		t.Errorf("Resolve(srv-1) = %v; want ambiguity across providers", err)
	}
	for _, ref := range []string{"dddd", "no-such-host", gone.String(), "cccc"} {
		if _, err := fleet.Resolve(ctx, db, ref, fleet.ResolveOptions{}); !errors.Is(err, fleet.ErrUnknownMachine) {
			t.Errorf("Resolve(%q) = %v; want ErrUnknownMachine", ref, err)
		}
	}
	for _, ref := range []string{"", "aaaa1111-0000-4000-8000-00000000000z"} {
		if _, err := fleet.Resolve(ctx, db, ref, fleet.ResolveOptions{}); !errors.Is(err, fleet.ErrInvalidMachineRef) {
			t.Errorf("Resolve(%q) = %v; want ErrInvalidMachineRef", ref, err)
		}
	}
	for _, ref := range []string{gone.String(), "ccc"} {
		if got, err := fleet.Resolve(ctx, db, ref, fleet.ResolveOptions{WithHistory: true}); err != nil || got != gone {
			t.Errorf("Resolve(%q, WithHistory) = %s, %v; want the deleted machine", ref, got, err)
		}
	}
}

// TestEachMachine: EachMachine hands over, row by row, exactly the machines
// ListMachines returns, though it reuses one summary for every row; and an
// error from its callback stops the list.
func TestEachMachine(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	s := session(t, conn, "shepherd-test")
	key := ed25519.PublicKey(make([]byte, ed25519.PublicKeySize))
	for i, p := range []string{"a", "b", "c", "d", "e", "f"} {
		id := add(t, conn, p, []string{"x", "y"}[i%2])
		if i >= 2 {
			if err := bmdb.SetAgentStarted(ctx, conn.Pool, id, key); err != nil {
				t.Fatal(err)
			}
		}
		if i >= 3 {
			if _, err := bmdb.RecordHeartbeat(ctx, conn.Pool, id, key); err != nil {
				t.Fatal(err)
			}
		}
		switch p {
		case "a":
			w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, only(id))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.SetDetail(ctx, "dialing"); err != nil {
				t.Fatal(err)
			}
		case "b":
			w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, only(id))
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Fail(ctx, &bmdb.AgentStartBackoff, "ssh: connection refused"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := conn.Pool.Exec(ctx, `INSERT INTO machines DEFAULT VALUES`); err != nil {
		t.Fatal(err)
	}

	// detached copies what a summary points to, as a caller that keeps
	// machines from EachMachine must.
	detached := func(m fleet.MachineSummary) fleet.MachineSummary {
		if m.AgentStartedAt != nil {
			v := *m.AgentStartedAt
			m.AgentStartedAt = &v
		}
		if m.LastHeartbeatAt != nil {
			v := *m.LastHeartbeatAt
			m.LastHeartbeatAt = &v
		}
		if m.Work != nil {
			v := *m.Work
			m.Work = &v
		}
		if m.Backoff != nil {
			v := *m.Backoff
			m.Backoff = &v
		}
		return m
	}
	for _, o := range []fleet.ListOptions{
		{},
		{Sort: fleet.SortProvider, Descending: true},
		{Sort: fleet.SortState, Limit: 3, Offset: 2},
		{Location: "y"},
		{Process: bmdb.ProcessShepherdAgentStart},
	} {
		want, err := fleet.ListMachines(ctx, conn.Pool, o)
		if err != nil {
			t.Fatal(err)
		}
		var got []fleet.MachineSummary
		if err := fleet.EachMachine(ctx, conn.Pool, o, func(m *fleet.MachineSummary) error {
			got = append(got, detached(*m))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(want) == 0 || !reflect.DeepEqual(got, want) {
			t.Errorf("%+v:\nEachMachine %+v\nListMachines %+v", o, got, want)
		}
	}

	stop := errors.New("stop")
	n := 0
	err := fleet.EachMachine(ctx, conn.Pool, fleet.ListOptions{}, func(*fleet.MachineSummary) error {
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Errorf("EachMachine after a failing callback: %v after %d machines; want stop after 1", err, n)
	}
}
