package fleet_test

import (
	"context"
	"crypto/ed25519"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

// TestCollector: the fleet's metrics count machines per state and say how
// long the machine longest in a timed state has been in it: since its
// threshold passed, not since its agent started or last heart-beat.
func TestCollector(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	key := ed25519.PublicKey(make([]byte, ed25519.PublicKeySize))
	started := func(name string) {
		t.Helper()
		id := add(t, conn, name, "a")
		if err := bmdb.SetAgentStarted(ctx, conn.Pool, id, key); err != nil {
			t.Fatal(err)
		}
		if _, err := bmdb.RecordHeartbeat(ctx, conn.Pool, id, key); err != nil {
			t.Fatal(err)
		}
		if name == "stale" {
			exec(t, conn, `UPDATE machine_agent_heartbeat SET agent_heartbeat_at = now() - interval '2 hours' WHERE machine_id = $1`, id)
		}
	}
	started("healthy")
	started("stale")
	add(t, conn, "new", "a")
	brakestest.Ready(t, conn.Pool, bmdb.DefaultPolicy()) // an endpoint and a shepherd run

	th := bmdb.RecoveryThresholds{NoHeartbeatAfterStart: 30 * time.Minute, StaleHeartbeat: 10 * time.Minute}
	reg := prometheus.NewRegistry()
	reg.MustRegister(fleet.NewCollector(conn.Pool, th))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"bmctl_fleet_up":                                          1,
		"bmctl_fleet_machines{state=healthy}":                     1,
		"bmctl_fleet_machines{state=heartbeat_stale}":             1,
		"bmctl_fleet_machines{state=new}":                         1,
		"bmctl_fleet_machines{state=recovering}":                  0,
		"bmctl_fleet_oldest_in_state_seconds{state=no_heartbeat}": 0,
		"bmctl_fleet_oldest_work_seconds":                         0,
		"bmctl_fleet_sessions{state=live}":                        0,
	} {
		if v, ok := got[name]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	// Stale since its heartbeat was 10 minutes old: 1h50m ago.
	if v := got["bmctl_fleet_oldest_in_state_seconds{state=heartbeat_stale}"]; math.Abs(v-110*60) > 120 {
		t.Errorf("oldest heartbeat_stale machine: %vs in the state, want about %d", v, 110*60)
	}
	if _, ok := got["bmctl_fleet_oldest_in_state_seconds{state=new}"]; ok {
		t.Errorf("an age for new, whose start BMDB does not record")
	}
}
