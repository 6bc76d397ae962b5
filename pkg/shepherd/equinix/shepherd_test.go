package equinix_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/internal/metalemu"
	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
	"github.com/bmctl/bmctl/pkg/shepherd/equinix"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// simulated makes the emulated project's devices real SSH servers on
// 127.0.0.1: each new device gets an sshsim machine that accepts exactly the
// keys the device was created with, reachable through the SSH port tag. A
// reboot power-cycles the machine.
type simulated struct {
	mu       sync.Mutex
	machines map[string]*sshsim.Machine // by device id
}

func simulate(t *testing.T, emu *metalemu.Server) *simulated {
	s := &simulated{machines: map[string]*sshsim.Machine{}}
	emu.OnProvision(func(d metalemu.DeviceView) metalemu.Network {
		var keys []ssh.PublicKey
		for _, k := range d.AuthorizedKeys {
			pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k))
			if err != nil {
				t.Errorf("device %s has a bad SSH key: %v", d.ID, err)
				continue
			}
			keys = append(keys, pk)
		}
		if len(keys) == 0 {
			t.Errorf("device %s was created without SSH keys", d.ID)
			keys = append(keys, otherKey(t)) // accept no one rather than everyone
		}
		m, err := sshsim.New(sshsim.Config{AuthorizedKeys: keys})
		if err != nil {
			t.Errorf("starting a machine for device %s: %v", d.ID, err)
			return metalemu.Network{}
		}
		t.Cleanup(func() { m.Close() })
		s.mu.Lock()
		s.machines[d.ID] = m
		s.mu.Unlock()
		_, port, _ := strings.Cut(m.Addr(), ":")
		return metalemu.Network{PublicIPv4: "127.0.0.1", Tags: []string{"bmctl.ssh-port=" + port}}
	})
	return s
}

func (s *simulated) machine(id string) *sshsim.Machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.machines[id]
}

func otherKey(t *testing.T) ssh.PublicKey {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(publicKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	return pk
}

func openDB(t *testing.T) *bmdb.Conn {
	t.Helper()
	conn, err := bmdb.Open(context.Background(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	// No heartbeat endpoint runs here: stand in for one that always has.
	brakestest.Watched(t, conn.Pool)
	return conn
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// kit is what a shepherd needs besides BMDB and a provider: its SSH key
// and an agent binary to upload.
type kit struct {
	signer ssh.Signer
	agent  string
}

func newKit(t *testing.T) kit {
	dir := t.TempDir()
	signer, _, err := shepherd.LoadOrCreateKey(filepath.Join(dir, "shepherd_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(dir, "agent")
	bin := make([]byte, 64<<10)
	_, _ = rand.Read(bin)
	if err := os.WriteFile(agent, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	return kit{signer, agent}
}

func (k kit) agentStart() *shepherd.AgentStartConfig {
	return &shepherd.AgentStartConfig{
		LoopConfig:  shepherd.LoopConfig{Parallelism: 2, IdleWait: 50 * time.Millisecond},
		Signer:      k.signer,
		AgentBinary: k.agent,
		Endpoint:    "https://127.0.0.1:8443",
		DialTimeout: 5 * time.Second,
		ExecTimeout: 5 * time.Second,
	}
}

// provider is the world's provider, putting the kit's key on new devices.
func (k kit) provider(t *testing.T, w *world) *equinix.Provider {
	cfg := w.config(t)
	cfg.SSHPublicKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.signer.PublicKey())))
	p, err := equinix.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runShepherd runs a shepherd until the returned stop is called (or the
// test ends).
func runShepherd(t *testing.T, cfg shepherd.Config) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg.Logger = testLogger(t)
	cfg.SessionInterval = 2 * time.Second
	go func() { done <- shepherd.Run(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("shepherd.Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func countRows(t *testing.T, conn *bmdb.Conn, sql string, args ...any) int {
	var n int
	if err := conn.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// One shepherd run with the equinix provider provisions devices from the
// project's free reservations up to its limit, keeps their status fresh,
// and starts the agent on each.
func TestShepherdBringsEmulatedProjectToAgentStarted(t *testing.T) {
	w := newWorld(t)
	w.emu.AddReservations(w.project, 4, small)
	sims := simulate(t, w.emu)
	conn := openDB(t)
	k := newKit(t)
	p := k.provider(t, w)

	const limit = 3
	stop := runShepherd(t, shepherd.Config{
		Conn:         conn,
		Providers:    []shepherd.Provider{p},
		Provisioning: &shepherd.ProvisioningConfig{Interval: 50 * time.Millisecond, MaxMachines: limit},
		AgentStart:   k.agentStart(),
	})
	testwait.For(t, "3 machines with the agent started and status active", func() bool {
		return countRows(t, conn, `SELECT count(*) FROM machine_agent_started a JOIN machine_provided p USING (machine_id)
			WHERE p.provider = 'equinix' AND p.provider_status = 'active'`) == limit
	})
	stop()

	devs := w.emu.Devices(w.project)
	if len(devs) != limit {
		t.Fatalf("%d devices in the project, want the limit, %d", len(devs), limit)
	}
	known, err := bmdb.ListProvidedMachines(context.Background(), conn.Pool, equinix.Type)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]bmdb.ProvidedMachine{}
	for _, k := range known {
		byID[k.ProviderID] = k
	}
	for _, d := range devs {
		k, ok := byID[d.ID]
		m := sims.machine(d.ID)
		if !ok || m == nil {
			t.Fatalf("device %s: in BMDB %v, simulated %v", d.ID, ok, m != nil)
		}
		if k.Address != m.Addr() || k.Location != "sv/sv15" {
			t.Errorf("device %s in BMDB at %s in %s, want %s in sv/sv15", d.ID, k.Address, k.Location, m.Addr())
		}
		if _, ok := m.Uploaded(shepherd.DefaultRemotePath); !ok || len(m.Execs()) == 0 {
			t.Errorf("device %s: agent uploaded %v, commands %q", d.ID, ok, m.Execs())
		}
	}
	if free, err := p.FreeCapacity(context.Background()); err != nil || free != 1 {
		t.Errorf("FreeCapacity after the run = %d, %v; want 1 left over the limit", free, err)
	}
}

// An agent that never heart-beats is recovered through Metal's reboot
// action: the device goes down and comes back, and the agent is started on
// it again.
func TestShepherdRecoversThroughMetalReboot(t *testing.T) {
	w := newWorld(t)
	w.emu.AddReservations(w.project, 1, small)
	sims := simulate(t, w.emu)
	// The machine is power-cycled before Metal answers the reboot action,
	// so it is up again before the device reads active: a cycle left to run
	// on its own could still be off (or not yet off) when AgentStart dials
	// after Recovery, and a refused dial backs off for minutes.
	w.emu.OnReboot(func(d metalemu.DeviceView) {
		if m := sims.machine(d.ID); m != nil {
			if err := m.PowerCycle(context.Background(), 20*time.Millisecond); err != nil {
				t.Errorf("power-cycling the machine of device %s: %v", d.ID, err)
			}
		}
	})
	conn := openDB(t)
	k := newKit(t)
	stop := runShepherd(t, shepherd.Config{
		Conn:         conn,
		Providers:    []shepherd.Provider{k.provider(t, w)},
		Provisioning: &shepherd.ProvisioningConfig{Interval: 50 * time.Millisecond, MaxMachines: 1},
		AgentStart:   k.agentStart(),
		Recovery: &shepherd.RecoveryConfig{
			LoopConfig:    shepherd.LoopConfig{IdleWait: 50 * time.Millisecond},
			Thresholds:    bmdb.RecoveryThresholds{NoHeartbeatAfterStart: time.Second, StaleHeartbeat: time.Second},
			RebootTimeout: 10 * time.Second,
		},
	})
	var dev metalemu.DeviceView
	testwait.For(t, "a reboot through Metal and the agent started again", func() bool {
		devs := w.emu.Devices(w.project)
		if len(devs) != 1 {
			return false
		}
		dev = devs[0]
		m := sims.machine(dev.ID)
		return dev.Reboots >= 1 && m != nil && len(m.Execs()) >= 2 &&
			countRows(t, conn, `SELECT count(*) FROM work_history WHERE process = 'ShepherdRecovery' AND event = 'Finished'`) >= 1
	})
	stop()
	if n := countRows(t, conn, `SELECT count(*) FROM work_history WHERE process = 'ShepherdRecovery' AND event = 'Failed'`); n != 0 {
		t.Errorf("%d Recovery failures; the reboot through Metal should have worked", n)
	}
	if m := sims.machine(dev.ID); m.Boots() < 2 {
		t.Errorf("machine booted %d times, want a power cycle", m.Boots())
	}
}

// Reconciliation refuses to act when BMDB has a device the project no longer
// lists, and a device that failed to provision is neither a discrepancy nor
// free capacity: it is recorded with status failed.
func TestReconcileWithEquinix(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.emu.AddReservations(w.project, 4, small)
	conn := openDB(t)
	p := w.provider(t)
	log := testLogger(t)

	w.emu.SetProvisionStates("failed")
	res, err := shepherd.Reconcile(ctx, conn, p, 1, log, nil)
	if err != nil || res.Created != 1 {
		t.Fatalf("Reconcile = %+v, %v; want one created", res, err)
	}
	w.emu.SetProvisionStates("provisioning", "active")
	for range 2 { // the next read shows failed; record it
		if _, err := shepherd.Reconcile(ctx, conn, p, 1, log, nil); err != nil {
			t.Fatal(err)
		}
	}
	known, err := bmdb.ListProvidedMachines(ctx, conn.Pool, equinix.Type)
	if err != nil || len(known) != 1 || known[0].Status != string(shepherd.StatusFailed) {
		t.Fatalf("BMDB has %+v (%v); want the one device, failed", known, err)
	}
	failed := known[0].ProviderID

	res, err = shepherd.Reconcile(ctx, conn, p, 3, log, nil)
	if err != nil || res.Created != 2 {
		t.Fatalf("Reconcile to 3 = %+v, %v; want 2 more created beside the failed one", res, err)
	}

	// A device deleted behind bmctl's back stops everything until resolved.
	w.emu.RemoveDevice(failed)
	res, err = shepherd.Reconcile(ctx, conn, p, 4, log, nil)
	if !errors.Is(err, shepherd.ErrDisagreement) || !strings.Contains(err.Error(), failed) || res.Created != 0 {
		t.Fatalf("Reconcile with a vanished device = %+v, %v; want ErrDisagreement naming %s, nothing created", res, err, failed)
	}
	if n := len(w.emu.Devices(w.project)); n != 2 {
		t.Errorf("project has %d devices after the refusal, want 2", n)
	}
}

// A device bmctl cannot read is neither a discrepancy nor refreshed with
// nonsense: reconciliation leaves it as BMDB has it and goes on with the
// others, and it still counts against the limit.
func TestReconcileLeavesUnreadableDeviceAlone(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.emu.AddReservations(w.project, 3, small)
	conn := openDB(t)
	p := w.provider(t)
	log := testLogger(t)
	if res, err := shepherd.Reconcile(ctx, conn, p, 1, log, nil); err != nil || res.Created != 1 {
		t.Fatalf("Reconcile = %+v, %v; want one created", res, err)
	}
	before, err := bmdb.ListProvidedMachines(ctx, conn.Pool, equinix.Type)
	if err != nil || len(before) != 1 {
		t.Fatalf("BMDB has %+v, %v", before, err)
	}
	w.emu.SetDeviceField(before[0].ProviderID, "ip_addresses.1.address_family", 1e20)

	res, err := shepherd.Reconcile(ctx, conn, p, 2, log, nil)
	if err != nil || res != (shepherd.ReconcileResult{Unreadable: 1, Created: 1}) {
		t.Fatalf("Reconcile with an unreadable device = %+v, %v; want it left alone and one more created up to 2", res, err)
	}
	after, err := bmdb.ListProvidedMachines(ctx, conn.Pool, equinix.Type)
	if err != nil || len(after) != 2 {
		t.Fatalf("BMDB has %+v, %v; want 2", after, err)
	}
	for _, k := range after {
		if k.ProviderID == before[0].ProviderID && k != before[0] {
			t.Errorf("the unreadable device's record changed: %+v, was %+v", k, before[0])
		}
	}
}

// A create answered with a device BMDB has is reported once, not counted,
// and not repeated every interval.
func TestReconcileCreateAnsweredWithKnownDevice(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	hrs := w.emu.AddReservations(w.project, 2, small)
	conn := openDB(t)
	p := w.provider(t)
	log := testLogger(t)
	if res, err := shepherd.Reconcile(ctx, conn, p, 1, log, nil); err != nil || res.Created != 1 {
		t.Fatalf("Reconcile = %+v, %v; want one created", res, err)
	}
	known, _ := bmdb.ListProvidedMachines(ctx, conn.Pool, equinix.Type)
	first := known[0].ProviderID
	w.emu.AnswerCreatesWith(first)

	res, err := shepherd.Reconcile(ctx, conn, p, 2, log, nil)
	d, _ := w.emu.Device(first)
	want := "creating a machine at equinix: equinix: create device on hardware reservation " + hrs[1] + ": POST /projects/" + w.project +
		"/devices: inconsistent answer: Metal answered with device " + first + " (" + d.Hostname + "), which existed before, not a new device bmctl-" + hrs[1][:8] +
		"; not counted as created, and the reservation is set aside until bmctl restarts"
	if err == nil || err.Error() != want || res.Created != 0 {
		t.Fatalf("Reconcile = %+v, %v\nwant nothing created and %s", res, err, want)
	}
	for range 2 { // the next intervals
		if res, err := shepherd.Reconcile(ctx, conn, p, 2, log, nil); err != nil || res.Created != 0 {
			t.Fatalf("Reconcile after the inconsistent create = %+v, %v; want nothing, quietly", res, err)
		}
	}
	if n := count(w.emu.Requests(), "POST /metal/v1/projects/"+w.project+"/devices"); n != 2 {
		t.Errorf("%d creates sent, want the first and the inconsistent one", n)
	}
	if known, _ := bmdb.ListProvidedMachines(ctx, conn.Pool, equinix.Type); len(known) != 1 {
		t.Errorf("BMDB has %d machines, want 1", len(known))
	}
}

// Recovery does not reboot a device that a reboot cannot help: the work
// fails with the provider's cause, which says so, and Metal gets no reboot.
func TestRecoveryRefusesQueuedDevice(t *testing.T) {
	w := newWorld(t)
	w.emu.AddReservations(w.project, 1, small)
	sims := simulate(t, w.emu)
	conn := openDB(t)
	k := newKit(t)
	runShepherd(t, shepherd.Config{
		Conn:         conn,
		Providers:    []shepherd.Provider{k.provider(t, w)},
		Provisioning: &shepherd.ProvisioningConfig{Interval: 50 * time.Millisecond, MaxMachines: 1},
		AgentStart:   k.agentStart(),
		Recovery: &shepherd.RecoveryConfig{
			LoopConfig: shepherd.LoopConfig{IdleWait: 50 * time.Millisecond},
			// Long enough to see the agent started and requeue the device first.
			Thresholds:    bmdb.RecoveryThresholds{NoHeartbeatAfterStart: 3 * time.Second, StaleHeartbeat: 3 * time.Second},
			RebootTimeout: 10 * time.Second,
		},
	})
	var dev metalemu.DeviceView
	testwait.For(t, "the agent started", func() bool {
		devs := w.emu.Devices(w.project)
		if len(devs) != 1 {
			return false
		}
		dev = devs[0]
		m := sims.machine(dev.ID)
		return m != nil && len(m.Execs()) >= 1
	})
	w.emu.SetStates(dev.ID, "queued") // as if someone reinstalled it
	var cause string
	testwait.For(t, "Recovery to fail", func() bool {
		err := conn.Pool.QueryRow(context.Background(),
			`SELECT cause FROM work_history WHERE process = 'ShepherdRecovery' AND event = 'Failed' ORDER BY work_history_id LIMIT 1`).Scan(&cause)
		return err == nil
	})
	want := "reboot via equinix: equinix: reboot device " + dev.ID + ": not rebooting: the device is queued for provisioning (state queued); a reboot makes no sense until it is active"
	if cause != want {
		t.Errorf("Recovery's cause %q\nwant %q", cause, want)
	}
	if d, _ := w.emu.Device(dev.ID); d.Reboots != 0 {
		t.Errorf("the queued device was rebooted %d times", d.Reboots)
	}
}
