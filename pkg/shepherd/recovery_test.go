package shepherd_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// bmc is a real HTTP server standing in for the machines' BMCs: a POST to
// /power-cycle/<id> power-cycles that simulated machine.
func (e *env) bmc() *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/power-cycle/")
		m := e.fleet.Machine(id)
		if r.Method != http.MethodPost || m == nil {
			http.Error(w, "no such machine "+id, http.StatusNotFound)
			return
		}
		if err := m.PowerCycle(r.Context(), 100*time.Millisecond); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "Chassis Power Control: Cycle (%s)\n", id)
	}))
	e.t.Cleanup(srv.Close)
	return srv
}

// inventory writes a static inventory of the fleet's machines.
func (e *env) inventory(rebootCommand string, ids ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: rack-a\nreboot_command: %q\nreboot_timeout: 10s\nmachines:\n", rebootCommand)
	for _, id := range ids {
		fmt.Fprintf(&b, "  - id: %s\n    address: %s\n    location: test-rack\n", id, e.fleet.Machine(id).Addr())
	}
	path := filepath.Join(e.t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return path
}

func TestRecoveryRebootsStaleMachineThroughStaticProvider(t *testing.T) {
	e := newEnv(t)
	bmc := e.bmc()
	m, pid, err := e.fleet.Add()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary plays ipmitool: it asks the BMC to power-cycle.
	reboot := fmt.Sprintf("BMCTL_TEST_HELPER=bmc '%s' %s/power-cycle/{{.ID}}", os.Args[0], bmc.URL)
	p, err := shepherd.NewStaticProvider(e.inventory(reboot, pid))
	if err != nil {
		t.Fatal(err)
	}
	res, err := shepherd.Reconcile(context.Background(), e.conn, p, 0, e.log, nil)
	if err != nil || res.Recorded != 1 {
		t.Fatalf("reconcile: %+v %v, want one machine recorded", res, err)
	}
	var id = machineByProviderID(t, e, "rack-a", pid)

	// The agent starts, heart-beats once, then goes silent.
	recovery := e.recovery()
	// Only the stale heartbeat may bring Recovery: with the 1s no-heartbeat
	// rule, a heartbeat this test sends a second late would find the agent
	// already recovered.
	recovery.Thresholds.NoHeartbeatAfterStart = time.Hour
	stop := e.run(shepherd.Config{Providers: []shepherd.Provider{p}, AgentStart: e.agentStart(), Recovery: recovery})
	testwait.For(t, "the first agent start", func() bool { return e.agentStarted(id) })
	first := m.AgentKey()
	if ok, err := bmdb.RecordHeartbeat(context.Background(), e.conn.Pool, id, first.Public().(ed25519.PublicKey)); !ok || err != nil {
		t.Fatalf("heartbeat: %v %v", ok, err)
	}
	testwait.For(t, "recovery and a new agent start", func() bool {
		evs := e.history(id)
		rec, ok := hasEvent(evs, bmdb.ProcessShepherdRecovery, bmdb.EventFinished)
		if !ok {
			return false
		}
		for _, ev := range evs {
			if ev.Process == bmdb.ProcessShepherdAgentStart && ev.Event == bmdb.EventFinished && ev.At.After(rec.At) {
				return true
			}
		}
		return false
	})
	stop()

	if m.Boots() < 2 {
		t.Errorf("machine booted %d times, want a power cycle", m.Boots())
	}
	if k := m.AgentKey(); k == nil || k.Equal(first) {
		t.Error("no new agent runs after the reboot")
	}
	// History: start, finish, then recovery, then a new start, in order.
	var seq []string
	for _, ev := range e.history(id) {
		seq = append(seq, strings.TrimPrefix(string(ev.Process), "Shepherd")+" "+string(ev.Event))
	}
	want := "AgentStart Started,AgentStart Finished,Recovery Started,Recovery Finished,AgentStart Started,AgentStart Finished"
	if got := strings.Join(seq, ","); !strings.HasPrefix(got, want) {
		t.Errorf("history:\n  %s\nwant it to begin\n  %s", got, want)
	}
}

func machineByProviderID(t *testing.T, e *env, provider, pid string) (id [16]byte) {
	t.Helper()
	if err := e.conn.Pool.QueryRow(context.Background(),
		`SELECT machine_id FROM machine_provided WHERE provider = $1 AND provider_id = $2`, provider, pid).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFailingRebootBacksOffWithRecoveryPolicy(t *testing.T) {
	e := newEnv(t)
	_, pid, err := e.fleet.Add()
	if err != nil {
		t.Fatal(err)
	}
	p, err := shepherd.NewStaticProvider(e.inventory(`echo "Error: Unable to establish IPMI v2 / RMCP+ session" >&2; exit 1`, pid))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shepherd.Reconcile(context.Background(), e.conn, p, 0, e.log, nil); err != nil {
		t.Fatal(err)
	}
	id := machineByProviderID(t, e, "rack-a", pid)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if err := bmdb.SetAgentStarted(context.Background(), e.conn.Pool, id, pub); err != nil {
		t.Fatal(err)
	}
	recovery := e.recovery()
	recovery.Backoff = bmdb.Backoff{Initial: 7 * time.Second, Maximum: time.Minute, Exponent: 1.2}
	e.run(shepherd.Config{Providers: []shepherd.Provider{p}, AgentStart: e.agentStart(), Recovery: recovery})

	testwait.For(t, "the failed reboot", func() bool {
		_, ok := hasEvent(e.history(id), bmdb.ProcessShepherdRecovery, bmdb.EventFailed)
		return ok
	})
	if _, ok := hasEvent(e.history(id), bmdb.ProcessShepherdRecovery, bmdb.EventFailed,
		"reboot via rack-a", "reboot command", "exit status 1", "Unable to establish IPMI v2 / RMCP+ session"); !ok {
		t.Errorf("history %s\nwant the reboot command's output in the cause", events(e.history(id)))
	}
	if n := e.count(`SELECT backoff_last_interval_seconds FROM work_backoff WHERE machine_id = $1 AND process = 'ShepherdRecovery'`, id); n != 7 {
		t.Errorf("Recovery backoff %ds, want Recovery's own 7s", n)
	}
	if n := e.count(`SELECT count(*) FROM work_backoff WHERE machine_id = $1 AND process <> 'ShepherdRecovery'`, id); n != 0 {
		t.Error("a failed reboot backed off another process")
	}
	if !e.agentStarted(id) {
		t.Error("a failed reboot removed the agent tags")
	}
}
