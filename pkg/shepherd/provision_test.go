package shepherd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

func TestReconcileRecordsRefreshesCreatesAndRefusesOnDisagreement(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, first, _ := e.fleet.Add()
	e.fleet.SetCapacity(5)

	res, err := shepherd.Reconcile(ctx, e.conn, e.fleet, 3, e.log, nil)
	if err != nil || res != (shepherd.ReconcileResult{Recorded: 1, Created: 2}) {
		t.Fatalf("first reconcile: %+v %v; want 1 recorded, 2 created up to the limit of 3", res, err)
	}
	known, err := bmdb.ListProvidedMachines(ctx, e.conn.Pool, "sim")
	if err != nil || len(known) != 3 {
		t.Fatalf("BMDB has %d sim machines (%v), want 3", len(known), err)
	}
	for _, k := range known {
		if m := e.fleet.Machine(k.ProviderID); m == nil || k.Address != m.Addr() || k.Status != "active" {
			t.Errorf("recorded %+v, which does not match the fleet", k)
		}
	}

	// A powered-off machine shows as inactive; nothing else changes.
	e.fleet.Machine(first).PowerOff()
	res, err = shepherd.Reconcile(ctx, e.conn, e.fleet, 3, e.log, nil)
	if err != nil || res != (shepherd.ReconcileResult{Refreshed: 1}) {
		t.Fatalf("second reconcile: %+v %v; want one machine refreshed", res, err)
	}
	pm, _ := bmdb.GetProvidedMachine(ctx, e.conn.Pool, known[0].MachineID)
	if pm.Status != "inactive" {
		t.Errorf("status of the powered-off machine: %q, want inactive", pm.Status)
	}

	// The provider loses a machine BMDB has: provisioning refuses to act,
	// even with capacity and room below the limit.
	e.fleet.Remove(first)
	res, err = shepherd.Reconcile(ctx, e.conn, e.fleet, 10, e.log, nil)
	if !errors.Is(err, shepherd.ErrDisagreement) || !strings.Contains(err.Error(), first) || res != (shepherd.ReconcileResult{}) {
		t.Fatalf("reconcile after the provider lost %s: %+v %v; want a refusal naming it", first, res, err)
	}
	if got, _ := bmdb.ListProvidedMachines(ctx, e.conn.Pool, "sim"); len(got) != 3 {
		t.Errorf("BMDB has %d machines after a refused reconcile, want 3", len(got))
	}
}

func TestProvisioningLoopFeedsAgentStart(t *testing.T) {
	e := newEnv(t)
	e.fleet.SetCapacity(2)
	e.run(shepherd.Config{
		Providers:    []shepherd.Provider{e.fleet},
		AgentStart:   e.agentStart(),
		Provisioning: &shepherd.ProvisioningConfig{Interval: 100 * time.Millisecond, MaxMachines: 2},
	})
	testwait.For(t, "two created machines with started agents", func() bool {
		return e.count(`SELECT count(*) FROM machine_agent_started`) == 2
	})
	if n, _ := e.fleet.FreeCapacity(context.Background()); n != 0 {
		t.Errorf("free capacity left: %d, want all used", n)
	}
}

func TestStaticInventoryErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, file, want string
	}{
		{"unknown field", "reboot_command: x\nmachines:\n  - id: a\n    adress: 10.0.0.1:22\n", "inventory.yaml:4: field adress not found"},
		{"wrong type", "reboot_command: x\nreboot_timeout: soon\nmachines: []\n", "inventory.yaml:2: cannot unmarshal"},
		{"not yaml", "reboot_command: x\nmachines:\n  - id: a\n   address: b\n", "inventory.yaml:2: did not find expected '-' indicator"},
		{"missing reboot command", "machines:\n  - id: a\n    address: 10.0.0.1\n", "reboot_command is missing"},
		{"bad template", "reboot_command: ipmitool -H {{.BMC\nmachines: []\n", "inventory.yaml:1: reboot_command is not a valid template"},
		{"unknown template field", "reboot_command: ipmitool -H {{.Bmc}}\nmachines:\n  - id: a\n    address: 10.0.0.1\n", "inventory.yaml:1: reboot_command does not render for machine \"a\""},
		{"missing id", "reboot_command: x\nmachines:\n  - id: a\n    address: 10.0.0.1\n  - address: 10.0.0.2\n", "inventory.yaml:5: machine 2 has no id"},
		{"duplicate id", "reboot_command: x\nmachines:\n  - id: a\n    address: 10.0.0.1\n  - id: a\n    address: 10.0.0.2\n", "inventory.yaml:5: machine id \"a\" repeats the one on line 3"},
		{"missing address", "reboot_command: x\nmachines:\n  - id: a\n", "inventory.yaml:3: machine \"a\" has no address"},
		{"bad address", "reboot_command: x\nmachines:\n  - id: a\n    address: http://x\n", "inventory.yaml:4: machine \"a\": address \"http://x\" is not host or host:port"},
		{"json", "{\n  \"reboot_command\": \"x\",\n  \"machines\": [\n    {\"id\": \"a\", \"address\": \"10.0.0.1\", \"rack\": 3}\n  ]\n}\n", "inventory.yaml:4: field rack not found"},
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
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestStaticInventoryLoadsYAMLAndJSON(t *testing.T) {
	dir := t.TempDir()
	yamlPath := filepath.Join(dir, "inv.yaml")
	os.WriteFile(yamlPath, []byte("name: rack-b\nreboot_command: ipmitool -H {{.BMC}} -E chassis power cycle # {{.Host}} {{.Vars.rack}}\nmachines:\n  - id: b01\n    address: 10.0.0.1\n    location: ams1\n    bmc: 10.1.0.1\n    vars: {rack: b}\n"), 0o644)
	jsonPath := filepath.Join(dir, "inv.json")
	os.WriteFile(jsonPath, []byte(`{"reboot_command": "true", "machines": [{"id": "j01", "address": "[fe80::1]:2222"}]}`), 0o644)

	p, err := shepherd.NewStaticProvider(yamlPath)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := p.ListMachines(context.Background())
	if err != nil || p.Type() != "rack-b" || len(ms) != 1 || ms[0] != (shepherd.ProviderMachine{ID: "b01", Address: "10.0.0.1:22", Location: "ams1", Status: shepherd.StatusActive}) {
		t.Errorf("yaml inventory: type %s, %+v %v", p.Type(), ms, err)
	}
	p, err = shepherd.NewStaticProvider(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	ms, _ = p.ListMachines(context.Background())
	if p.Type() != "static" || len(ms) != 1 || ms[0].Address != "[fe80::1]:2222" {
		t.Errorf("json inventory: type %s, %+v", p.Type(), ms)
	}
	if _, err := p.CreateMachine(context.Background()); err == nil {
		t.Error("a static inventory created a machine")
	}
}
