package shepherd_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/bmctl/bmctl/internal/ipmisim"
	"github.com/bmctl/bmctl/internal/redfishsim"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

const bmcUser, bmcPassword = "admin", "Known-BMC-pa55word-7f3e"

// Power stays Off 2s and SSH returns 1s after On: every step is seen by a
// 100ms poll even on a loaded machine.
var simDelays = redfishsim.Delays{Off: 100 * time.Millisecond, Cycle: 2 * time.Second, On: 200 * time.Millisecond, Boot: time.Second}

// bmcWorld is a test's BMCs: a development CA and a password file.
type bmcWorld struct {
	e       *env
	ca      *devca.CA
	caFile  string
	pwFile  string
	entries []string
}

func newBMCWorld(e *env) *bmcWorld {
	dir := e.t.TempDir()
	ca, err := devca.Ensure(filepath.Join(dir, "ca"))
	if err != nil {
		e.t.Fatal(err)
	}
	w := &bmcWorld{e: e, ca: ca, caFile: devca.CertPath(filepath.Join(dir, "ca")), pwFile: filepath.Join(dir, "bmc-password")}
	if err := os.WriteFile(w.pwFile, []byte(bmcPassword+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return w
}

// redfishMachine starts a simulated machine behind a simulated Redfish BMC
// with faults, and adds it to the inventory with bmc (a YAML block body,
// indented by 6) or the defaults.
func (w *bmcWorld) redfishMachine(faults redfishsim.Faults, bmcExtra string) (*sshsim.Machine, *redfishsim.BMC, string) {
	w.e.t.Helper()
	return w.redfishMachineWith(bmcPassword, faults, bmcExtra)
}

func (w *bmcWorld) redfishMachineWith(password string, faults redfishsim.Faults, bmcExtra string) (*sshsim.Machine, *redfishsim.BMC, string) {
	w.e.t.Helper()
	m, pid, err := w.e.fleet.Add()
	if err != nil {
		w.e.t.Fatal(err)
	}
	cert, err := w.ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		w.e.t.Fatal(err)
	}
	sim, err := redfishsim.New(redfishsim.Config{Username: bmcUser, Password: password, Certificate: cert, Machines: []redfishsim.Machine{m}, Delays: simDelays, Faults: faults})
	if err != nil {
		w.e.t.Fatal(err)
	}
	w.e.t.Cleanup(func() { sim.Close() })
	w.entries = append(w.entries, fmt.Sprintf("  - id: %s\n    address: %s\n    location: test-rack\n    bmc:\n      address: %s\n%s", pid, m.Addr(), sim.URL(), bmcExtra))
	return m, sim, pid
}

// inventory writes the inventory: bmc_defaults of type redfish with the
// test's CA and password file, plus defaultsExtra (indented by 2).
func (w *bmcWorld) inventory(defaultsExtra string) string {
	w.e.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "name: rack-a\nreboot_timeout: 60s\nbmc_defaults:\n  type: redfish\n  username: %s\n  password_file: %s\n  ca_file: %s\n%s", bmcUser, w.pwFile, w.caFile, defaultsExtra)
	b.WriteString("machines:\n")
	for _, e := range w.entries {
		b.WriteString(e)
	}
	path := filepath.Join(w.e.t.TempDir(), "inventory.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		w.e.t.Fatal(err)
	}
	return path
}

// provide reconciles the inventory into BMDB and marks each machine's agent
// started long ago, so Recovery takes them all.
func (w *bmcWorld) provide(p shepherd.Provider, pids ...string) []uuid.UUID {
	w.e.t.Helper()
	if _, err := shepherd.Reconcile(context.Background(), w.e.conn, p, 0, w.e.log, nil); err != nil {
		w.e.t.Fatal(err)
	}
	var ids []uuid.UUID
	for _, pid := range pids {
		id := uuid.UUID(machineByProviderID(w.e.t.(*testing.T), w.e, "rack-a", pid))
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		if err := bmdb.SetAgentStarted(context.Background(), w.e.conn.Pool, id, pub); err != nil {
			w.e.t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// waitRecoveriesEnded waits until each machine's Recovery finished or failed.
func waitRecoveriesEnded(e *env, ids []uuid.UUID) {
	e.t.Helper()
	for _, id := range ids {
		testwait.For(e.t, "every machine's Recovery to end", func() bool {
			evs := e.history(id)
			_, fin := hasEvent(evs, bmdb.ProcessShepherdRecovery, bmdb.EventFinished)
			_, failed := hasEvent(evs, bmdb.ProcessShepherdRecovery, bmdb.EventFailed)
			return fin || failed
		})
	}
}

func (e *env) recoveryOnly() *shepherd.RecoveryConfig {
	r := e.recovery()
	r.RebootTimeout = 60 * time.Second
	r.Backoff.Initial = time.Hour // one attempt per machine: the test reads its outcome
	return r
}

func TestRecoveryThroughRedfishBMC(t *testing.T) {
	e := newEnv(t)
	w := newBMCWorld(e)
	good, goodSim, goodID := w.redfishMachine(redfishsim.Faults{}, "")
	_, cycleSim, cycleID := w.redfishMachine(redfishsim.Faults{ActionInfoOnly: true, ResetTypes: []string{"On", "ForceOff", "PowerCycle"}}, "")
	_, _, deadID := w.redfishMachine(redfishsim.Faults{NeverComesBack: true}, "")
	_, _, errID := w.redfishMachine(redfishsim.Faults{ResetError: true}, "")
	_, _, credID := w.redfishMachine(redfishsim.Faults{}, "      username: nobody\n")
	p, err := shepherd.NewStaticProvider(w.inventory("  down_within: 30s\n  on_within: 4s\n  ssh_within: 30s\n  poll_interval: 100ms\n"), e.log)
	if err != nil {
		t.Fatal(err)
	}
	ids := w.provide(p, goodID, cycleID, deadID, errID, credID)
	stop := e.run(shepherd.Config{Providers: []shepherd.Provider{p}, Recovery: e.recoveryOnly()})

	waitRecoveriesEnded(e, ids)
	stop()

	// The healthy BMC: ForceRestart, every step seen, in the history between
	// the start and the finish, and the agent's tags gone.
	want := "redfish ForceRestart at " + goodSim.URL() + ": Off after "
	var seq []string
	for _, ev := range e.history(ids[0]) {
		seq = append(seq, string(ev.Event))
		if ev.Event == bmdb.EventPowerAction && (!strings.HasPrefix(ev.Cause, want) || !strings.Contains(ev.Cause, ", On after ") || !strings.Contains(ev.Cause, ", SSH after ")) {
			t.Errorf("power action %q, want %q..., On after, SSH after", ev.Cause, want)
		}
	}
	t.Logf("history of the healthy BMC's machine:%s", events(e.history(ids[0])))
	if got := strings.Join(seq, ","); got != "Started,PowerAction,Finished" {
		t.Errorf("history %s, want Started,PowerAction,Finished", got)
	}
	if good.Boots() != 2 || e.agentStarted(ids[0]) {
		t.Errorf("boots %d, agent started %v: want a power cycle and the agent tags removed", good.Boots(), e.agentStarted(ids[0]))
	}
	// Sessions were closed when the shepherd stopped.
	if n := goodSim.Sessions(); n != 0 {
		t.Errorf("%d Redfish sessions left open after shutdown", n)
	}
	if _, ok := hasEvent(e.history(ids[1]), bmdb.ProcessShepherdRecovery, bmdb.EventPowerAction, "redfish PowerCycle at "+cycleSim.URL()+": Off after"); !ok {
		t.Errorf("ActionInfo-only BMC: history %s, want a PowerCycle", events(e.history(ids[1])))
	}

	for _, tc := range []struct {
		id    uuid.UUID
		cause []string
	}{
		{ids[2], []string{"reboot via rack-a: redfish ForceRestart at ", ": Off after", "; power On: On not seen within 4s (last power state Off)"}},
		{ids[3], []string{"ForceRestart request: POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset: 400 Bad Request",
			"Unable to complete the operation because the server is in a power transition state."}},
		{ids[4], []string{"reading the power state", "401 Unauthorized", "invalid username or password"}},
	} {
		if _, ok := hasEvent(e.history(tc.id), bmdb.ProcessShepherdRecovery, bmdb.EventFailed, tc.cause...); !ok {
			t.Errorf("history %s\nwant a failure with %q", events(e.history(tc.id)), tc.cause)
		}
		if !e.agentStarted(tc.id) {
			t.Error("a failed reboot removed the agent tags")
		}
	}
}

func TestStaticInventoryBMCErrors(t *testing.T) {
	const head = "name: r\nmachines:\n  - id: a\n    address: 10.0.0.1\n    bmc:\n"
	for _, tc := range []struct {
		name, file, want string
	}{
		{"password in a block", head + "      type: redfish\n      address: https://x\n      username: u\n      password: hunter2\n", "inventory.yaml:9: a BMC password must not be in the inventory; give password_env"},
		{"password in defaults", "bmc_defaults:\n  type: ipmi\n  Password: hunter2\nmachines: []\n", "inventory.yaml:3: a BMC password must not be in the inventory"},
		{"unknown key", head + "      type: redfish\n      adress: https://x\n", "inventory.yaml:7: bmc has no field \"adress\""},
		{"bad type", head + "      type: amt\n      address: x\n", "inventory.yaml:6: machine \"a\": bmc type \"amt\": want redfish or ipmi"},
		{"no password source", head + "      type: ipmi\n      address: x\n      username: u\n", "no password source; give password_env or password_file"},
		{"two password sources", head + "      type: ipmi\n      address: x\n      username: u\n      password_env: P\n      password_file: /f\n", "both password_env and password_file"},
		{"plain http", head + "      type: redfish\n      address: http://x\n      username: u\n      password_env: P\n", "redfish bmc address \"http://x\": want https://host[:port]"},
		{"ipmi url", head + "      type: ipmi\n      address: https://x\n      username: u\n      password_env: P\n", "ipmi bmc address \"https://x\": want host or host:port"},
		{"ca and insecure", head + "      type: redfish\n      address: https://x\n      username: u\n      password_env: P\n      ca_file: /ca\n      insecure: true\n", "both ca_file and insecure"},
		{"address in defaults", "bmc_defaults:\n  address: https://x\nmachines: []\n", "inventory.yaml:2: bmc_defaults cannot hold address or system"},
		{"no type and no command", "machines:\n  - id: a\n    address: 10.0.0.1\n    bmc: 10.1.0.1\n", "reboot_command is missing, and machine \"a\" has no bmc with a type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "inventory.yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := shepherd.NewStaticProvider(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the error %q repeats the password", err)
			}
		})
	}
}

// A bmc string is the BMC's address once bmc_defaults gives a type, and
// machines without one keep the reboot command.
func TestStaticInventoryBMCDefaultsAndLegacy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inventory.yaml")
	inv := "bmc_defaults:\n  type: redfish\n  username: admin\n  password_env: BMCTL_TEST_NOT_SET\n  insecure: true\n" +
		"reboot_command: echo {{.BMC}}\nmachines:\n  - id: a\n    address: 10.0.0.1\n    bmc: https://10.1.0.1\n  - id: b\n    address: 10.0.0.2\n"
	if err := os.WriteFile(path, []byte(inv), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := shepherd.NewStaticProvider(path)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = p.MachineBMC(context.Background(), "a")
	if err == nil || !strings.Contains(err.Error(), "redfish BMC at https://10.1.0.1: BMC password: environment variable BMCTL_TEST_NOT_SET is not set") {
		t.Errorf("machine a: %v, want its redfish BMC asking for the password variable", err)
	}
	if _, _, _, err := p.MachineBMC(context.Background(), "b"); !errors.Is(err, shepherd.ErrNoBMC) {
		t.Errorf("machine b: %v, want ErrNoBMC", err)
	}
	if rep, err := p.RebootReport(context.Background(), "b", nil); err != nil || rep != "" {
		t.Errorf("machine b reboots through the command: %q %v", rep, err)
	}
}

// ipmiMachine starts a simulated machine behind ipmi_sim and adds it to
// the inventory; pwSource is the block's password line(s).
func (w *bmcWorld) ipmiMachine(user, password, pwSource string) (*sshsim.Machine, *ipmisim.BMC, string) {
	w.e.t.Helper()
	m, pid, err := w.e.fleet.Add()
	if err != nil {
		w.e.t.Fatal(err)
	}
	sim, err := ipmisim.New(w.e.t.TempDir(), ipmisim.Config{Username: bmcUser, Password: password, Machine: m, Boot: 2 * time.Second})
	if err != nil {
		w.e.t.Fatal(err)
	}
	w.e.t.Cleanup(func() { sim.Close() })
	w.entries = append(w.entries, fmt.Sprintf("  - id: %s\n    address: %s\n    bmc:\n      type: ipmi\n      address: %s\n      username: %s\n%s", pid, m.Addr(), sim.Addr(), user, pwSource))
	return m, sim, pid
}

func TestRecoveryThroughIPMIBMC(t *testing.T) {
	e := newEnv(t)
	w := newBMCWorld(e)
	const pw = "ipmi-Pa55-e2e-73"
	pwFile := filepath.Join(t.TempDir(), "ipmi-password")
	if err := os.WriteFile(pwFile, []byte(pw), 0o600); err != nil {
		t.Fatal(err)
	}
	good, goodSim, goodID := w.ipmiMachine(bmcUser, pw, "      password_file: "+pwFile+"\n")
	_, _, badID := w.ipmiMachine("intruder", pw, "      password_file: "+pwFile+"\n")
	p, err := shepherd.NewStaticProvider(w.inventory("  down_within: 30s\n  on_within: 30s\n  ssh_within: 30s\n  poll_interval: 100ms\n"), e.log)
	if err != nil {
		t.Fatal(err)
	}
	ids := w.provide(p, goodID, badID)
	stop := e.run(shepherd.Config{Providers: []shepherd.Provider{p}, Recovery: e.recoveryOnly()})
	waitRecoveriesEnded(e, ids)
	stop()

	if _, ok := hasEvent(e.history(ids[0]), bmdb.ProcessShepherdRecovery, bmdb.EventPowerAction, "ipmi PowerCycle at "+goodSim.Addr()+": ", ", SSH after "); !ok {
		t.Errorf("history %s, want an ipmi PowerCycle with its steps", events(e.history(ids[0])))
	}
	if _, ok := hasEvent(e.history(ids[0]), bmdb.ProcessShepherdRecovery, bmdb.EventFinished); !ok || good.Boots() != 2 || e.agentStarted(ids[0]) {
		t.Errorf("history %s, boots %d: want the reboot finished and the agent tags gone", events(e.history(ids[0])), good.Boots())
	}
	if got := goodSim.PowerHistory(); !slices.Equal(got, []string{"on", "off", "on"}) {
		t.Errorf("ipmi_sim's power %v, want on, off, on", got)
	}
	if _, ok := hasEvent(e.history(ids[1]), bmdb.ProcessShepherdRecovery, bmdb.EventFailed,
		"reboot via rack-a: ipmi reboot at ", "reading the power state: ipmitool chassis power status at ", "Unable to establish IPMI v2 / RMCP+ session"); !ok {
		t.Errorf("history %s, want the failure with ipmitool's stderr", events(e.history(ids[1])))
	}
}

// lockedBuffer collects log lines from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBMCPasswordLeaksNowhere runs Recoveries through Redfish and IPMI BMCs
// with a known password (from the environment), one of them failing, and
// looks for the password in every log line, every row of every BMDB table,
// every metric, and the command line of every process that ran meanwhile.
func TestBMCPasswordLeaksNowhere(t *testing.T) {
	const pw = "Kn0wn-pw-7f3e-leak" // fits IPMI's 20 bytes
	t.Setenv("BMCTL_TEST_BMC_PASSWORD", pw)
	e := newEnv(t)
	logs := &lockedBuffer{}
	e.log = slog.New(slog.NewJSONHandler(io.MultiWriter(logs, testWriter{t}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	w := newBMCWorld(e)
	source := "      password_env: BMCTL_TEST_BMC_PASSWORD\n"
	_, rfSim, rfID := w.redfishMachineWith(pw, redfishsim.Faults{}, source)
	_, _, rfBadID := w.redfishMachineWith(pw, redfishsim.Faults{}, source+"      username: nobody\n")
	_, _, ipmiID := w.ipmiMachine(bmcUser, pw, source)
	_, _, ipmiBadID := w.ipmiMachine("nobody", pw, source)
	p, err := shepherd.NewStaticProvider(w.inventory("  down_within: 30s\n  on_within: 30s\n  ssh_within: 30s\n  poll_interval: 100ms\n"), e.log)
	if err != nil {
		t.Fatal(err)
	}
	ids := w.provide(p, rfID, rfBadID, ipmiID, ipmiBadID)

	// Watch every process's command line while the Recoveries run.
	var (
		scanMu    sync.Mutex
		leakedBy  []string
		ipmitools int
	)
	scanCtx, stopScan := context.WithCancel(context.Background())
	scanDone := make(chan struct{})
	go func() {
		defer close(scanDone)
		seen := map[string]bool{}
		for scanCtx.Err() == nil {
			paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, path := range paths {
				data, err := os.ReadFile(path)
				if err != nil || len(data) == 0 {
					continue
				}
				cmdline := strings.ReplaceAll(string(data), "\x00", " ")
				scanMu.Lock()
				if strings.Contains(cmdline, pw) {
					leakedBy = append(leakedBy, cmdline)
				}
				if strings.Contains(cmdline, "ipmitool") && !seen[path+cmdline] {
					seen[path+cmdline] = true
					ipmitools++
				}
				scanMu.Unlock()
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()

	reg := prometheus.NewRegistry()
	stop := e.run(shepherd.Config{Providers: []shepherd.Provider{p}, Recovery: e.recoveryOnly(), Metrics: shepherd.NewMetrics(reg)})
	waitRecoveriesEnded(e, ids)
	stop()
	stopScan()
	<-scanDone

	// The run did what the test looks at: two reboots, two failures.
	for i, want := range []bmdb.Event{bmdb.EventFinished, bmdb.EventFailed, bmdb.EventFinished, bmdb.EventFailed} {
		if _, ok := hasEvent(e.history(ids[i]), bmdb.ProcessShepherdRecovery, want); !ok {
			t.Errorf("machine %d: history %s, want %s", i, events(e.history(ids[i])), want)
		}
	}
	if rfSim.Sessions() != 0 {
		t.Error("a Redfish session was left open")
	}

	scanMu.Lock()
	if len(leakedBy) > 0 {
		t.Errorf("the password is on the command line of %q", leakedBy)
	}
	if ipmitools == 0 {
		t.Error("no ipmitool process was seen; the command-line check looked at nothing")
	}
	scanMu.Unlock()
	if l := logs.String(); strings.Contains(l, pw) || !strings.Contains(l, "claimed") {
		t.Errorf("logs hold the password, or hold nothing:\n%s", l)
	}
	tables, err := e.conn.Pool.Query(context.Background(), `SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(tables, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for _, name := range names {
		r, err := e.conn.Pool.Query(context.Background(), fmt.Sprintf(`SELECT t::text FROM %s t`, pgx.Identifier{name}.Sanitize()))
		if err != nil {
			t.Fatal(err)
		}
		texts, err := pgx.CollectRows(r, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range texts {
			rows++
			if strings.Contains(row, pw) {
				t.Errorf("table %s holds the password: %s", name, row)
			}
		}
	}
	if rows == 0 {
		t.Error("BMDB is empty; the history check looked at nothing")
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var metrics strings.Builder
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&metrics, f); err != nil {
			t.Fatal(err)
		}
	}
	if m := metrics.String(); strings.Contains(m, pw) || !strings.Contains(m, "bmctl_shepherd_claims_total") {
		t.Errorf("metrics hold the password, or hold nothing:\n%s", m)
	}
}
