package fleet_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

// The views must stay fast on a large fleet: a machine list over 100,000
// machines and the history of a machine with 10,000 events. Run with
//
//	go test ./pkg/fleet -run '^$' -bench . -benchtime 5x

const (
	benchMachines = 100_000
	benchEvents   = 10_000
)

// seedBench fills a fresh database in SQL (seconds, not minutes): a steady
// fleet (99% healthy, the rest new, silent or stale), 200 machines in
// AgentStart work, 300 in backoff, and one machine with benchEvents events.
func seedBench(b *testing.B) (*bmdb.Conn, uuid.UUID) {
	b.Helper()
	ctx := context.Background()
	conn, err := bmdb.Open(ctx, pgtest.URL(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(conn.Close)
	var session uuid.UUID
	var busy uuid.UUID
	steps := []string{
		fmt.Sprintf(`INSERT INTO machines (machine_id) SELECT gen_random_uuid() FROM generate_series(1, %d)`, benchMachines),
		`INSERT INTO machine_provided (machine_id, provider, provider_id, provider_address, provider_location)
		 SELECT machine_id, 'bench', 'srv-' || lpad(n::text, 6, '0'), '10.0.' || (n / 250) || '.' || (n % 250) || ':22', 'dc' || (n % 4)
		 FROM (SELECT machine_id, row_number() OVER (ORDER BY machine_id) AS n FROM machines) m`,
		`INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key)
		 SELECT machine_id, now() - interval '2 hours', '\x00' FROM machine_provided WHERE provider_id >= 'srv-000500'`,
		`INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at, agent_heartbeat_coarse_at)
		 SELECT machine_id, CASE WHEN provider_id < 'srv-001000' THEN now() - interval '1 hour' ELSE now() END, now() - interval '1 hour'
		 FROM machine_provided WHERE provider_id >= 'srv-000600'`,
	}
	for _, q := range steps {
		if _, err := conn.Pool.Exec(ctx, q); err != nil {
			b.Fatalf("%v\n%s", err, q)
		}
	}
	if err := conn.Pool.QueryRow(ctx, `
		INSERT INTO sessions (session_component, session_interval_seconds, session_deadline)
		VALUES ('bench', 3600, now() + interval '1 hour') RETURNING session_id`).Scan(&session); err != nil {
		b.Fatal(err)
	}
	more := []string{
		`INSERT INTO work (machine_id, session_id, process, work_detail)
		 SELECT machine_id, $1, 'ShepherdAgentStart', 'dialing' FROM machine_provided WHERE provider_id < 'srv-000200'`,
		`INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds)
		 SELECT machine_id, 'ShepherdRecovery', now() + interval '10 minutes', 'provider reboot: 503', 600
		 FROM machine_provided WHERE provider_id >= 'srv-000700' AND provider_id < 'srv-001000' AND $1::uuid IS NOT NULL`,
	}
	for _, q := range more {
		if _, err := conn.Pool.Exec(ctx, q, session); err != nil {
			b.Fatalf("%v\n%s", err, q)
		}
	}
	if err := conn.Pool.QueryRow(ctx, `SELECT machine_id FROM machine_provided WHERE provider_id = 'srv-050000'`).Scan(&busy); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Pool.Exec(ctx, `
		INSERT INTO work_history (machine_id, process, event, event_at, cause, session_id, session_component, session_host)
		SELECT $1, CASE WHEN g % 2 = 0 THEN 'ShepherdAgentStart'::process ELSE 'ShepherdRecovery'::process END,
		       (ARRAY['Started', 'Failed', 'Started', 'Finished'])[1 + g % 4]::work_event,
		       now() - ($2 - g) * interval '1 minute', CASE WHEN g % 4 = 1 THEN 'ssh: connection refused' ELSE '' END,
		       $3, 'bench', 'bench-host'
		FROM generate_series(1, $2) g`, busy, benchEvents, session); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Pool.Exec(ctx, `ANALYZE`); err != nil {
		b.Fatal(err)
	}
	return conn, busy
}

func BenchmarkViews(b *testing.B) {
	ctx := context.Background()
	conn, busy := seedBench(b)
	list := func(o fleet.ListOptions, want int) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				ms, err := fleet.ListMachines(ctx, conn.Pool, o)
				if err != nil {
					b.Fatal(err)
				}
				if want >= 0 && len(ms) != want {
					b.Fatalf("listed %d machines, want %d", len(ms), want)
				}
			}
		}
	}
	b.Run("ListAll100k/sort=provider", list(fleet.ListOptions{Sort: fleet.SortProvider}, benchMachines))
	b.Run("ListAll100k/sort=id", list(fleet.ListOptions{Sort: fleet.SortID}, benchMachines))
	// What `bmctl machines list` does: each machine as its row arrives.
	b.Run("EachAll100k/sort=id", func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := fleet.EachMachine(ctx, conn.Pool, fleet.ListOptions{}, func(*fleet.MachineSummary) error {
				n++
				return nil
			}); err != nil || n != benchMachines {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("ListPage50/sort=id,offset=50000", list(fleet.ListOptions{Sort: fleet.SortID, Limit: 50, Offset: 50_000}, 50))
	b.Run("ListPage50/sort=provider,offset=50000", list(fleet.ListOptions{Sort: fleet.SortProvider, Limit: 50, Offset: 50_000}, 50))
	b.Run("ListTrouble/state=heartbeat_stale,backed_off,no_heartbeat", list(fleet.ListOptions{
		States: []fleet.State{fleet.StateHeartbeatStale, fleet.StateBackedOff, fleet.StateNoHeartbeat}}, -1))
	b.Run("Count100k", func(b *testing.B) {
		for b.Loop() {
			if n, err := fleet.CountMachines(ctx, conn.Pool, fleet.ListOptions{}); err != nil || n != benchMachines {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("Stats100k", func(b *testing.B) {
		for b.Loop() {
			if _, err := fleet.GetStats(ctx, conn.Pool, bmdb.RecoveryThresholds{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("History10k", func(b *testing.B) {
		for b.Loop() {
			evs, err := fleet.History(ctx, conn.Pool, busy, fleet.HistoryOptions{})
			if err != nil || len(evs) != benchEvents {
				b.Fatal(len(evs), err)
			}
		}
	})
	b.Run("ResolvePrefix", func(b *testing.B) {
		ref := busy.String()[:8]
		for b.Loop() {
			if id, err := fleet.Resolve(ctx, conn.Pool, ref, fleet.ResolveOptions{WithHistory: true}); err != nil || id != busy {
				b.Fatal(id, err)
			}
		}
	})
}
