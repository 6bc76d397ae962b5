package agent_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/agent"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// accepted counts the heartbeats a server accepted.
func accepted(t *testing.T, srv *heartbeat.Server) float64 {
	t.Helper()
	mfs, err := srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bmctl_heartbeat_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "accepted" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestStoppingOneEndpointReplicaCostsNoMachineItsHealth runs two endpoints
// on one BMDB and agents that know both: they share the load, and when one
// endpoint stops every agent heart-beats through the other, with no
// machine's heartbeat ever as old as Recovery's stale threshold. Restarted,
// the endpoint gets agents back.
func TestStoppingOneEndpointReplicaCostsNoMachineItsHealth(t *testing.T) {
	first := startEndpoint(t)
	second := &endpoint{addr: "127.0.0.1:0", ca: first.ca, conn: first.conn}
	second.start(t)
	// Recovery's stale threshold here: 50 of the endpoints' 200ms intervals
	// (the defaults are 10 min against 1 min).
	const stale = 10 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	var running sync.WaitGroup
	defer func() {
		cancel()
		running.Wait()
	}()
	const n = 20
	var machines []uuid.UUID
	for range n {
		id := first.machine(t)
		init := first.init(id)
		init.Endpoints = []string{"https://" + first.addr, "https://" + second.addr}
		init.Endpoint = init.Endpoints[0]
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		a, err := agent.New(init, key, agent.Options{HardwareRoot: fakeRoot(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := bmdb.SetAgentStarted(ctx, first.conn.Pool, id, a.PublicKey()); err != nil {
			t.Fatal(err)
		}
		machines = append(machines, id)
		running.Go(func() {
			if err := a.Run(ctx); err != nil {
				t.Errorf("agent: %v", err)
			}
		})
	}
	// heartbeatsSince counts the machines heard from after at.
	heartbeatsSince := func(at time.Time) int {
		var k int
		if err := first.conn.Pool.QueryRow(ctx, `SELECT count(*) FROM machine_agent_heartbeat
			WHERE machine_id = ANY($1) AND agent_heartbeat_at > $2`, machines, at).Scan(&k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	testwait.For(t, "every agent heart-beating, through both endpoints", func() bool {
		return heartbeatsSince(time.Time{}) == n && accepted(t, first.srv) > 0 && accepted(t, second.srv) > 0
	})

	var stopped time.Time
	if err := first.conn.Pool.QueryRow(ctx, `SELECT now()`).Scan(&stopped); err != nil {
		t.Fatal(err)
	}
	first.stop()
	before := accepted(t, second.srv)
	var oldest time.Duration
	testwait.For(t, "every agent heart-beating through the endpoint left", func() bool {
		var age time.Duration
		if err := first.conn.Pool.QueryRow(ctx, `SELECT max(now() - agent_heartbeat_at) FROM machine_agent_heartbeat
			WHERE machine_id = ANY($1)`, machines).Scan(&age); err != nil {
			t.Fatal(err)
		}
		oldest = max(oldest, age)
		return heartbeatsSince(stopped) == n
	})
	t.Logf("oldest heartbeat while one endpoint was stopped: %s", oldest)
	if oldest >= stale {
		t.Errorf("a machine went %s without a heartbeat, past the stale threshold %s", oldest, stale)
	}
	// Agents may have moved while the first endpoint was shutting down, so
	// some of their first heartbeats through the second may predate before.
	testwait.For(t, "the endpoint left serving the whole fleet", func() bool { return accepted(t, second.srv)-before >= n })

	// Back on its address (a rolling upgrade), the first endpoint gets its
	// agents back: the replicas share the load again.
	first.start(t)
	testwait.For(t, "agents back on the restarted endpoint", func() bool { return accepted(t, first.srv) > 0 })
}
