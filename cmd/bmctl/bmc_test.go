package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/redfishsim"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/bmcops"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
)

// bmcInventory starts one simulated machine with a simulated Redfish BMC
// per entry of faults and writes an inventory "rack-a" of them (a01, a02,
// ...); a nil entry is a machine whose BMC refuses the password.
func bmcInventory(t *testing.T, faults ...*redfishsim.Faults) (string, []*redfishsim.BMC, []*sshsim.Machine) {
	t.Helper()
	dir := t.TempDir()
	ca, err := devca.Ensure(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("cmd-test-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "name: rack-a\nbmc_defaults:\n  type: redfish\n  username: admin\n  password_file: %s\n  ca_file: %s\n  poll_interval: 100ms\n  on_within: 8s\nmachines:\n", pw, devca.CertPath(filepath.Join(dir, "ca")))
	var sims []*redfishsim.BMC
	var machines []*sshsim.Machine
	for i, f := range faults {
		m, err := sshsim.New(sshsim.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		password := "cmd-test-pw"
		if f == nil {
			f, password = &redfishsim.Faults{}, "another-one"
		}
		sim, err := redfishsim.New(redfishsim.Config{Username: "admin", Password: password, Certificate: cert, Machines: []redfishsim.Machine{m}, Faults: *f,
			Delays: redfishsim.Delays{Off: 100 * time.Millisecond, Cycle: time.Second, On: 200 * time.Millisecond, Boot: time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sim.Close() })
		fmt.Fprintf(&b, "  - id: a%02d\n    address: %s\n    bmc: %s\n", i+1, m.Addr(), sim.URL())
		sims, machines = append(sims, sim), append(machines, m)
	}
	path := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, sims, machines
}

func TestBMCStatus(t *testing.T) {
	inv, sims, _ := bmcInventory(t, &redfishsim.Faults{}, &redfishsim.Faults{ResetTypes: []string{"On", "ForceOff"}}, nil)
	r := bmctl(t, "", "bmc", "status", "--all", "--inventory", inv)
	if r.code != 1 || !strings.Contains(r.err, "1 of 3 BMCs did not answer") {
		t.Errorf("exit %d, stderr %q; want 1 and how many did not answer", r.code, r.err)
	}
	lines := outLines(r.out)
	if len(lines) != 4 || !strings.Contains(lines[0], "MACHINE") {
		t.Fatalf("table:\n%s", r.out)
	}
	if !strings.Contains(lines[1], "a01") || !strings.Contains(lines[1], "yes") || !strings.Contains(lines[1], "ForceRestart") || !strings.Contains(lines[1], sims[0].URL()) {
		t.Errorf("a01: %q", lines[1])
	}
	if !strings.Contains(lines[3], "a03") || !strings.Contains(lines[3], " no ") || !strings.Contains(lines[3], "401") {
		t.Errorf("a03: %q, want it not answering and why", lines[3])
	}

	r = bmctl(t, "", "bmc", "status", "a02", "--inventory", inv, "-o", "json")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	var list []bmcops.MachineStatus
	decodeJSON(t, r.out, &list)
	if len(list) != 1 || !list[0].Answers || list[0].Power != "On" || strings.Join(list[0].Resets, ",") != "On,ForceOff" || list[0].Latency <= 0 || list[0].Type != "redfish" {
		t.Errorf("json: %+v", list)
	}
	if len(sims[1].Resets()) != 0 || sims[1].Sessions() != 0 {
		t.Errorf("status reset something (%v) or left a session open (%d)", sims[1].Resets(), sims[1].Sessions())
	}

	for _, args := range [][]string{
		{"bmc", "status", "--inventory", inv},
		{"bmc", "status", "a01", "--all", "--inventory", inv},
		{"bmc", "status", "--all"},
	} {
		if r := bmctl(t, "", args...); r.code != 2 {
			t.Errorf("%v: exit %d, want a usage error", args, r.code)
		}
	}
	if r := bmctl(t, "", "bmc", "status", "zz9", "--inventory", inv); r.code != 1 || !strings.Contains(r.out, "not in inventory") {
		t.Errorf("unknown machine: exit %d, %s", r.code, r.out)
	}
}

func TestBMCPowerRecordsTheOperator(t *testing.T) {
	f := newFleetDB(t)
	inv, sims, machines := bmcInventory(t, &redfishsim.Faults{}, &redfishsim.Faults{NeverComesBack: true})
	var ids [2]uuid.UUID
	for i, pid := range []string{"a01", "a02"} {
		id, err := bmdb.AddProvidedMachine(context.Background(), f.conn.Pool, bmdb.ProvidedMachine{Provider: "rack-a", ProviderID: pid, Address: machines[i].Addr(), Status: "active"})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}

	if r := f.run("bmc", "power", "cycle", "a01", "--inventory", inv); r.code != 2 || !strings.Contains(r.err, "--reason") {
		t.Errorf("no reason: exit %d %q", r.code, r.err)
	}
	if r := f.run("bmc", "power", "bounce", "a01", "--reason", "x", "--inventory", inv); r.code != 2 {
		t.Errorf("bad action: exit %d", r.code)
	}
	out := f.ok("bmc", "power", "cycle", "a01", "--reason", "kernel hung", "--as", "alice@jump1", "--inventory", inv)
	if !strings.Contains(out, "redfish ForceRestart at "+sims[0].URL()+": Off after") || machines[0].Boots() != 2 {
		t.Errorf("output %q, boots %d", out, machines[0].Boots())
	}
	if sims[0].Sessions() != 0 {
		t.Error("the session was left open")
	}
	var cause, actor string
	if err := f.conn.Pool.QueryRow(context.Background(), `SELECT cause, actor FROM work_history WHERE machine_id = $1 AND event = 'PowerAction'`, ids[0]).Scan(&cause, &actor); err != nil {
		t.Fatal(err)
	}
	if actor != "alice@jump1" || !strings.HasPrefix(cause, "power cycle by alice@jump1 (reason: kernel hung): redfish ForceRestart at ") {
		t.Errorf("history: actor %q cause %q", actor, cause)
	}

	// A shepherd at work on the machine: refused unless --force.
	sess := f.session("shepherd-recovery")
	w, err := sess.Work(context.Background(), bmdb.ProcessShepherdRecovery, func(pgx.Tx) ([]uuid.UUID, error) { return []uuid.UUID{ids[0]}, nil })
	if err != nil {
		t.Fatal(err)
	}
	if r := f.run("bmc", "power", "off", "a01", "--reason", "x", "--inventory", inv); r.code != 1 || !strings.Contains(r.err, "a shepherd is working on the machine (ShepherdRecovery)") {
		t.Errorf("busy machine: exit %d %q", r.code, r.err)
	}
	_ = w.Cancel(context.Background(), "test")

	// A failed action is recorded too, with the BMC's account of it.
	if r := f.run("bmc", "power", "off", "a02", "--reason", "decommission", "--as", "bob@jump2", "--inventory", inv); r.code != 0 || sims[1].PowerState(0) != "Off" {
		t.Fatalf("off: exit %d %s", r.code, r.err)
	}
	r := f.run("bmc", "power", "on", "a02", "--reason", "back in service", "--as", "bob@jump2", "--inventory", inv)
	if r.code != 1 || !strings.Contains(r.err, "power On: On not seen within 8s (last power state Off)") {
		t.Errorf("on of a BMC that never powers on: exit %d %q", r.code, r.err)
	}
	rows, err := f.conn.Pool.Query(context.Background(), `SELECT cause FROM work_history WHERE machine_id = $1 AND event = 'PowerAction' AND actor = 'bob@jump2' ORDER BY work_history_id`, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	causes, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(causes) != 2 || !strings.HasPrefix(causes[0], "power off by bob@jump2 (reason: decommission): redfish ForceOff at ") ||
		!strings.HasPrefix(causes[1], "power on by bob@jump2 (reason: back in service): failed: redfish On at ") {
		t.Errorf("history of a02: %q", causes)
	}
}
