package tui

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// t0 is the fixed "now" of the golden fleet.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

func fixedClock() time.Time { return t0 }

// frozenDB returns a fresh database whose SQL clock stands still at t0: a
// now() in a schema searched before pg_catalog answers t0 to every query of
// these connections, so the derived states, ages and timestamps of the
// golden screens are the same on every run. Everything else is the real
// schema and the real queries.
func frozenDB(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.URL(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	_, err = admin.Exec(ctx, `
		CREATE SCHEMA frozen;
		CREATE FUNCTION frozen.now() RETURNS timestamptz LANGUAGE sql STABLE
			AS $$ SELECT '`+t0.Format(time.RFC3339)+`'::timestamptz $$`)
	if err != nil {
		t.Fatal(err)
	}
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	url += sep + "search_path=frozen,pg_catalog,public"
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var now time.Time
	if err := pool.QueryRow(ctx, `SELECT now()`).Scan(&now); err != nil || !now.Equal(t0) {
		t.Fatalf("frozen clock: now() = %v, %v; want %v", now, err, t0)
	}
	return url, pool
}

// The golden fleet: one machine per derived state, with fixed ids and times.
var (
	idHealthy    = uuid.MustParse("10000000-0000-4000-8000-000000000001")
	idNew        = uuid.MustParse("20000000-0000-4000-8000-000000000002")
	idStarting   = uuid.MustParse("30000000-0000-4000-8000-000000000003")
	idStale      = uuid.MustParse("40000000-0000-4000-8000-000000000004")
	idBackedOff  = uuid.MustParse("50000000-0000-4000-8000-000000000005")
	idRecovering = uuid.MustParse("60000000-0000-4000-8000-000000000006")
	idSilent     = uuid.MustParse("70000000-0000-4000-8000-000000000007")
	idAwaiting   = uuid.MustParse("80000000-0000-4000-8000-000000000008")
	idUnprovided = uuid.MustParse("90000000-0000-4000-8000-000000000009")

	sessionStart = uuid.MustParse("aaaaaaaa-0000-4000-8000-00000000000a")
	sessionRecov = uuid.MustParse("bbbbbbbb-0000-4000-8000-00000000000b")
)

// seedGolden writes the golden fleet. Times are offsets from t0.
func seedGolden(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	ctx := context.Background()
	ago := func(d time.Duration) time.Time { return t0.Add(-d) }
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", strings.Fields(sql)[0:3], err)
		}
	}
	type machine struct {
		id                 uuid.UUID
		provided           bool
		providerID, addr   string
		location           string
		created            time.Duration
		started, heartbeat time.Duration // 0: none
	}
	fleet := []machine{
		{idHealthy, true, "m-001", "10.0.0.1", "ams1", 72 * time.Hour, 48 * time.Hour, 20 * time.Second},
		{idNew, true, "m-002", "10.0.0.2", "ams1", 50 * time.Minute, 0, 0},
		{idStarting, true, "m-003", "10.0.0.3", "fra2", 3 * time.Hour, 0, 0},
		{idStale, true, "m-004", "10.0.1.4", "fra2", 30 * time.Hour, 29 * time.Hour, 25 * time.Minute},
		{idBackedOff, true, "m-005", "10.0.1.5", "sjc1", 5 * time.Hour, 0, 0},
		{idRecovering, true, "m-006", "10.0.2.6", "sjc1", 10 * 24 * time.Hour, 9 * 24 * time.Hour, 40 * time.Minute},
		{idSilent, true, "m-007", "10.0.2.7", "sjc1", 4 * time.Hour, 2 * time.Hour, 0},
		{idAwaiting, true, "m-008", "10.0.3.8", "ams1", 2 * time.Hour, 5 * time.Minute, 0},
		{idUnprovided, false, "", "", "", 30 * time.Minute, 0, 0},
	}
	for i, m := range fleet {
		exec(`INSERT INTO machines (machine_id, machine_created_at) VALUES ($1, $2)`, m.id, ago(m.created))
		if m.provided {
			exec(`INSERT INTO machine_provided (machine_id, provider, provider_id, provider_address, provider_location, provider_status)
				VALUES ($1, 'equinix', $2, $3, $4, 'active')`, m.id, m.providerID, m.addr, m.location)
		}
		if m.started > 0 {
			key := make([]byte, 32)
			key[0] = byte(i + 1)
			exec(`INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key) VALUES ($1, $2, $3)`,
				m.id, ago(m.started), key)
		}
		if m.heartbeat > 0 {
			exec(`INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at) VALUES ($1, $2)`, m.id, ago(m.heartbeat))
		}
	}
	exec(`INSERT INTO machine_hardware_report (machine_id, hardware_report, hardware_reported_at) VALUES ($1, '{"cpus": 64}', $2)`,
		idRecovering, ago(9*24*time.Hour-time.Minute))
	exec(`INSERT INTO machine_ssh_host_key (machine_id, ssh_host_key, ssh_host_key_pinned_at) VALUES ($1, $2, $3)`,
		idRecovering, []byte("\x00\x00\x00\x0bssh-ed25519 golden host key"), ago(9*24*time.Hour))
	exec(`INSERT INTO sessions (session_id, session_component, session_host, session_pid, session_version, session_created_at, session_interval_seconds, session_deadline)
		VALUES ($1, 'shepherd-agentstart', 'shep-1', 4101, 'v0.3.0', $2, 10, $3),
		       ($4, 'shepherd-recovery', 'shep-2', 4202, 'v0.3.0', $2, 10, $3)`,
		sessionStart, ago(time.Hour), t0.Add(8*time.Second), sessionRecov)
	exec(`INSERT INTO work (machine_id, session_id, process, work_started_at, work_detail) VALUES
		($1, $2, 'ShepherdAgentStart', $3, 'uploading agent'),
		($4, $5, 'ShepherdRecovery', $6, 'rebooting through the provider')`,
		idStarting, sessionStart, ago(45*time.Second), idRecovering, sessionRecov, ago(2*time.Minute))
	exec(`INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds) VALUES
		($1, 'ShepherdAgentStart', $2, 'ssh: handshake failed: dial tcp 10.0.1.5:22: connect: connection refused', 360),
		($3, 'ShepherdRecovery', $4, 'provider: reboot refused: machine is locked', 72),
		($5, 'ShepherdRecovery', $6, 'provider: timeout waiting for power off', 60)`,
		idBackedOff, t0.Add(4*time.Minute), idRecovering, ago(30*time.Minute), idSilent, ago(time.Hour))
	type event struct {
		at      time.Duration
		id      uuid.UUID
		process bmdb.Process
		event   bmdb.Event
		cause   string
		comp    string
		host    string
	}
	history := []event{
		{9*24*time.Hour + 10*time.Minute, idRecovering, bmdb.ProcessShepherdAgentStart, bmdb.EventStarted, "", "shepherd-agentstart", "shep-1"},
		{9 * 24 * time.Hour, idRecovering, bmdb.ProcessShepherdAgentStart, bmdb.EventFinished, "", "shepherd-agentstart", "shep-1"},
		{2 * time.Hour, idBackedOff, bmdb.ProcessShepherdAgentStart, bmdb.EventStarted, "", "shepherd-agentstart", "shep-1"},
		{2*time.Hour - time.Minute, idBackedOff, bmdb.ProcessShepherdAgentStart, bmdb.EventFailed, "ssh: handshake failed: dial tcp 10.0.1.5:22: connect: connection refused", "shepherd-agentstart", "shep-1"},
		{35 * time.Minute, idRecovering, bmdb.ProcessShepherdRecovery, bmdb.EventStarted, "", "shepherd-recovery", "shep-2"},
		{34 * time.Minute, idRecovering, bmdb.ProcessShepherdRecovery, bmdb.EventFailed,
			"provider: reboot refused: machine is locked by another operation (equinix API 422: the device has a pending action; retry after it completes)", "shepherd-recovery", "shep-2"},
		{10 * time.Minute, idRecovering, bmdb.ProcessShepherdRecovery, bmdb.EventBackoffCleared, "cleared by ops@jump (was until 2026-03-04 05:36:07 UTC: provider: reboot refused)", "bmctl", "jump"},
		{2 * time.Minute, idRecovering, bmdb.ProcessShepherdRecovery, bmdb.EventStarted, "", "shepherd-recovery", "shep-2"},
		{45 * time.Second, idStarting, bmdb.ProcessShepherdAgentStart, bmdb.EventStarted, "", "shepherd-agentstart", "shep-1"},
	}
	for _, h := range history {
		exec(`INSERT INTO work_history (machine_id, process, event, event_at, cause, session_component, session_host)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, h.id, h.process, h.event, ago(h.at), h.cause, h.comp, h.host)
	}
	// A heartbeat endpoint and a shepherd have been running (at t0).
	brakestest.Ready(t, pool, bmdb.DefaultPolicy())
}

// goldenOptions are the options of a view of the golden fleet.
func goldenOptions(pool *pgxpool.Pool, allow bool) Options {
	return Options{
		Source:       FleetSource{DB: pool, Operator: "ops@jump"},
		AllowActions: allow,
		Clock:        fixedClock,
		Location:     time.UTC,
		Refresh:      time.Hour,
	}
}
