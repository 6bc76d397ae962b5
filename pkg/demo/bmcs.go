package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bmctl/bmctl/internal/redfishsim"
	"github.com/bmctl/bmctl/pkg/devca"
)

// bmcUser is the demo BMCs' account; its password is a file in the state
// directory, as an operator's would be.
const bmcUser = "admin"

// startBMCs gives every machine a simulated Redfish BMC (HTTPS with the
// demo's CA) that powers it. Some BMCs allow only some reset types, list
// them only through ActionInfo, or restart without showing Off; while the
// demo runs, BMCs now and then time out, answer resets with an error, or
// rate-limit for a few seconds.
func (f *fleet) startBMCs(ctx context.Context, ca *devca.CA, password string) error {
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		return err
	}
	for _, id := range f.ids {
		m := f.machines[id]
		base := f.bmcFaults(id)
		sim, err := redfishsim.New(redfishsim.Config{
			Username: bmcUser, Password: password, Certificate: cert,
			Machines: []redfishsim.Machine{&power{f: f, m: m, ctx: ctx}},
			Delays: redfishsim.Delays{
				Off: 300 * time.Millisecond, Cycle: f.between(time.Second, 2*time.Second),
				On: 500 * time.Millisecond, Boot: f.between(time.Second, 3*time.Second),
			},
			Faults: base,
		})
		if err != nil {
			return err
		}
		m.bmc, m.bmcFaults = sim, base
	}
	go f.transientBMCFaults(ctx)
	return nil
}

// bmcFaults draws a BMC's lasting quirks.
func (f *fleet) bmcFaults(id string) redfishsim.Faults {
	if !f.chance() {
		return redfishsim.Faults{}
	}
	switch f.between(0, 2) {
	case 0:
		f.log.Info("fault: BMC allows only ForceOff and On", "machine", id)
		return redfishsim.Faults{ResetTypes: []string{"On", "ForceOff", "Nmi"}}
	case 1:
		f.log.Info("fault: BMC lists its reset types only through ActionInfo, no ForceRestart", "machine", id)
		return redfishsim.Faults{ActionInfoOnly: true, ResetTypes: []string{"On", "ForceOff", "PowerCycle"}}
	default:
		f.log.Info("fault: BMC restarts without showing Off", "machine", id)
		return redfishsim.Faults{QuietRestart: true}
	}
}

// transientBMCFaults makes BMCs misbehave for a few seconds now and then:
// time out, refuse resets or new sessions, rate-limit.
func (f *fleet) transientBMCFaults(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range f.ids {
			if !f.chance() || !f.chance() {
				continue
			}
			m := f.machines[id]
			faults := m.bmcFaults
			switch f.between(0, 3) {
			case 0:
				f.log.Info("fault: BMC stops answering for a while", "machine", id)
				faults.Hang = true
			case 1:
				f.log.Info("fault: BMC answers resets with an error for a while", "machine", id)
				faults.ResetError = true
			case 2:
				f.log.Info("fault: BMC's session table is full for a while (new sessions refused)", "machine", id)
				faults.SessionLimit = true
			default:
				f.log.Info("fault: BMC rate-limits", "machine", id)
				faults.RateLimit = 3
			}
			m.bmc.SetFaults(faults)
			time.AfterFunc(f.between(4*time.Second, 8*time.Second), func() { m.bmc.SetFaults(m.bmcFaults) })
		}
	}
}

// power is a demo machine as its BMC powers it: the agent dies with the
// machine, and sometimes it boots with SSH refusing connections for a while.
type power struct {
	f   *fleet
	m   *machine
	ctx context.Context
}

func (p *power) PowerOff() {
	p.m.stopAgent()
	p.m.mu.Lock()
	p.m.powerGen++
	if p.m.offEffect == nil {
		p.m.offEffect = p.f.effect(p.m.id, "power-off")
	}
	p.m.mu.Unlock()
	p.m.sim.PowerOff()
}

func (p *power) PowerOn() error {
	p.m.mu.Lock()
	if p.m.offEffect != nil {
		p.m.offEffect()
		p.m.offEffect = nil
	}
	p.m.mu.Unlock()
	if !p.f.chance() {
		return p.m.sim.PowerOn()
	}
	down := p.f.between(3*time.Second, 10*time.Second)
	p.f.log.Info("fault: SSH comes up late after boot", "machine", p.m.id, "after", down)
	p.m.mu.Lock()
	gen := p.m.powerGen
	p.m.mu.Unlock()
	time.AfterFunc(down, func() {
		p.m.mu.Lock()
		stale := gen != p.m.powerGen
		p.m.mu.Unlock()
		if !stale && p.ctx.Err() == nil {
			_ = p.m.sim.PowerOn()
		}
	})
	return nil
}

// bmcPassword reads the demo BMCs' password, creating it on first use.
func bmcPassword(path string) (string, error) {
	if data, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(data))) > 0 {
		return strings.TrimSpace(string(data)), nil
	}
	var b [10]byte
	_, _ = rand.Read(b[:])
	pw := hex.EncodeToString(b[:])
	return pw, os.WriteFile(path, []byte(pw+"\n"), 0o600)
}

// writeInventory writes the static provider's inventory of the fleet: the
// machines' current addresses and their BMCs, with the password file and
// the CA as bmc_defaults.
func (f *fleet) writeInventory(path, passwordFile, caDir string) error {
	type bmcDefaults struct {
		Type           string `yaml:"type"`
		Username       string `yaml:"username"`
		PasswordFile   string `yaml:"password_file"`
		CAFile         string `yaml:"ca_file"`
		RequestTimeout string `yaml:"request_timeout"`
		DownWithin     string `yaml:"down_within"`
		OnWithin       string `yaml:"on_within"`
		SSHWithin      string `yaml:"ssh_within"`
		PollInterval   string `yaml:"poll_interval"`
	}
	type machine struct {
		ID       string `yaml:"id"`
		Address  string `yaml:"address"`
		Location string `yaml:"location"`
		BMC      string `yaml:"bmc"`
	}
	inv := struct {
		Name          string      `yaml:"name"`
		RebootTimeout string      `yaml:"reboot_timeout"`
		BMCDefaults   bmcDefaults `yaml:"bmc_defaults"`
		Machines      []machine   `yaml:"machines"`
	}{
		Name:          ProviderName,
		RebootTimeout: "18s",
		BMCDefaults: bmcDefaults{
			Type: "redfish", Username: bmcUser, PasswordFile: passwordFile, CAFile: devca.CertPath(caDir),
			RequestTimeout: "3s", DownWithin: "5s", OnWithin: "8s", SSHWithin: "15s", PollInterval: "250ms",
		},
	}
	for i, id := range f.ids {
		m := f.machines[id]
		inv.Machines = append(inv.Machines, machine{ID: id, Address: m.sim.Addr(), Location: fmt.Sprintf("demo-rack-%d", i/10+1), BMC: m.bmc.URL()})
	}
	data, err := yaml.Marshal(inv)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// statePath is a file of the demo's state directory.
func statePath(cfg Config, name string) string { return filepath.Join(cfg.StateDir, name) }
