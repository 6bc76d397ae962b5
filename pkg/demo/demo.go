// Package demo runs the whole system on one machine: a simulated fleet of
// real SSH servers on 127.0.0.1, each running the real agent when AgentStart
// starts it and powered by its own simulated Redfish BMC (internal/redfishsim,
// HTTPS with the demo's CA), the real heartbeat endpoint, and the shepherd's
// loops, whose Recovery reboots machines through their BMCs, all against one
// BMDB. Faults are injected at a seeded rate so that operators see
// AgentStart, backoff and Recovery at work.
package demo

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/errgroup"

	"github.com/bmctl/bmctl/internal/redfishsim"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/agent"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// ProviderName is the provider type of the demo's machines in BMDB.
const ProviderName = "demo"

// Config is one demo run.
type Config struct {
	Conn *bmdb.Conn
	// Machines in the simulated fleet (default 50).
	Machines int
	// FailureRate is the probability of each fault at each chance it has
	// (0 to 1).
	FailureRate float64
	// Seed makes the faults reproducible.
	Seed uint64
	// StateDir keeps what must survive a restart for the demo to resume:
	// machines' host keys (pinned by the shepherd), the shepherd's SSH key,
	// the development CA, the inventory.
	StateDir string
	// Self is the bmctl executable: uploaded as the agent binary.
	Self   string
	Logger *slog.Logger
	// NoShepherd runs the fleet, the power controller and the endpoint but
	// no shepherd: shepherds started with StateDir/shepherd.env work it.
	NoShepherd bool
	// OnEffect, if set, is told of every action on a machine when it ends:
	// an SSH connection or a power cycle, with its span. Tests use it as an
	// independent record of side effects.
	OnEffect func(Effect)
}

// Effect is one action on a simulated machine, seen by the machine.
type Effect struct {
	Machine    string // provider id
	Kind       string // "ssh" or "power-cycle"
	Start, End time.Time
}

// effect records the start of an action and returns what records its end.
func (f *fleet) effect(machine, kind string) func() {
	if f.cfg.OnEffect == nil {
		return func() {}
	}
	start := time.Now()
	return func() { f.cfg.OnEffect(Effect{Machine: machine, Kind: kind, Start: start, End: time.Now()}) }
}

// Thresholds of the demo: seconds, not minutes, so a whole cycle shows
// within a minute.
var (
	HeartbeatInterval = 2 * time.Second
	SessionInterval   = 5 * time.Second
	Thresholds        = bmdb.RecoveryThresholds{NoHeartbeatAfterStart: 15 * time.Second, StaleHeartbeat: 8 * time.Second}
	AgentStartBackoff = bmdb.Backoff{Initial: 3 * time.Second, Maximum: 30 * time.Second, Exponent: 1.5}
	RecoveryBackoff   = bmdb.Backoff{Initial: 3 * time.Second, Maximum: 20 * time.Second, Exponent: 1.5}
)

// Run runs the demo until ctx ends, then shuts everything down: the
// shepherd cancels its work and closes its sessions before Run returns.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Machines <= 0 {
		cfg.Machines = 50
	}
	if cfg.FailureRate < 0 || cfg.FailureRate > 1 {
		return fmt.Errorf("failure rate must be between 0 and 1, got %v", cfg.FailureRate)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "hosts"), 0o700); err != nil {
		return err
	}
	log := cfg.Logger

	// The heartbeat endpoint and the BMCs, with the development CA.
	caDir := filepath.Join(cfg.StateDir, "ca")
	ca, err := devca.Ensure(caDir)
	if err != nil {
		return err
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1", "localhost"})
	if err != nil {
		return err
	}
	hbListener, err := listenStable(filepath.Join(cfg.StateDir, "endpoint-addr"))
	if err != nil {
		return err
	}
	endpoint := "https://" + hbListener.Addr().String()
	server := heartbeat.New(heartbeat.Config{Pool: cfg.Conn.Pool, Logger: log.With("component", "server"), Interval: HeartbeatInterval})

	signer, _, err := shepherd.LoadOrCreateKey(filepath.Join(cfg.StateDir, "shepherd_ed25519"))
	if err != nil {
		return err
	}
	fleet, err := newFleet(cfg, signer.PublicKey(), log)
	if err != nil {
		hbListener.Close()
		return err
	}
	defer fleet.close()
	fleet.bootFaults(ctx)

	pwFile := statePath(cfg, "bmc-password")
	password, err := bmcPassword(pwFile)
	if err != nil {
		hbListener.Close()
		return err
	}
	if err := fleet.startBMCs(ctx, ca, password); err != nil {
		hbListener.Close()
		return err
	}
	inventory := statePath(cfg, "inventory.yaml")
	if err := fleet.writeInventory(inventory, pwFile, caDir); err != nil {
		hbListener.Close()
		return err
	}
	provider, err := shepherd.NewStaticProvider(inventory, log.With("component", "bmc"))
	if err != nil {
		hbListener.Close()
		return err
	}

	shepherdCfg := shepherd.Config{
		Conn:            cfg.Conn,
		Providers:       []shepherd.Provider{provider},
		Logger:          log.With("component", "shepherd"),
		SessionInterval: SessionInterval,
		Provisioning:    &shepherd.ProvisioningConfig{Interval: 2 * time.Second},
		AgentStart: &shepherd.AgentStartConfig{
			LoopConfig:  shepherd.LoopConfig{Parallelism: 8, Backoff: AgentStartBackoff, IdleWait: time.Second},
			Signer:      signer,
			AgentBinary: cfg.Self,
			Endpoint:    endpoint,
			EndpointCA:  string(ca.CertPEM),
			DialTimeout: 5 * time.Second,
			ExecTimeout: 10 * time.Second,
		},
		Recovery: &shepherd.RecoveryConfig{
			LoopConfig:    shepherd.LoopConfig{Parallelism: 4, Backoff: RecoveryBackoff, IdleWait: time.Second},
			Thresholds:    Thresholds,
			RebootTimeout: 20 * time.Second,
		},
	}
	joinFile, err := writeJoinFiles(cfg, shepherdCfg, inventory)
	if err != nil {
		hbListener.Close()
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return server.Serve(gctx, hbListener, cert) })
	if !cfg.NoShepherd {
		g.Go(func() error { return shepherd.Run(gctx, shepherdCfg) })
	}
	log.Info("shepherds can join this fleet", "env", joinFile)
	log.Info("demo running", "machines", cfg.Machines, "failure_rate", cfg.FailureRate, "seed", cfg.Seed, "endpoint", endpoint, "state", cfg.StateDir)
	return g.Wait()
}

// fleet is the simulated machines and their faults.
type fleet struct {
	cfg      Config
	log      *slog.Logger
	machines map[string]*machine
	ids      []string

	mu  sync.Mutex
	rnd *rand.Rand
}

// machine is one simulated machine, its BMC and the agent running on it.
type machine struct {
	id        string
	sim       *sshsim.Machine
	bmc       *redfishsim.BMC
	bmcFaults redfishsim.Faults // its lasting quirks, restored after a transient fault

	mu          sync.Mutex
	agentCancel context.CancelFunc
	powerGen    int    // bumped by every power-off; a late SSH start of an older boot is dropped
	offEffect   func() // ends the record of the power-off under way (Config.OnEffect)
}

func newFleet(cfg Config, shepherdKey ssh.PublicKey, log *slog.Logger) (*fleet, error) {
	f := &fleet{
		cfg:      cfg,
		log:      log,
		machines: map[string]*machine{},
		rnd:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
	}
	for i := range cfg.Machines {
		id := fmt.Sprintf("demo-%03d", i+1)
		key, err := hostKey(filepath.Join(cfg.StateDir, "hosts", id))
		if err != nil {
			f.close()
			return nil, err
		}
		m := &machine{id: id}
		sim, err := sshsim.New(sshsim.Config{
			AuthorizedKeys: []ssh.PublicKey{shepherdKey},
			HostKey:        key,
			OnExec:         f.exec(m),
			OnConnection:   func() func() { return f.effect(id, "ssh") },
		})
		if err != nil {
			f.close()
			return nil, err
		}
		m.sim = sim
		f.machines[id] = m
		f.ids = append(f.ids, id)
	}
	return f, nil
}

// hostKey loads a machine's host key, creating it on first use, so that a
// resumed demo's machines keep the keys the shepherd pinned.
func hostKey(path string) (ed25519.PrivateKey, error) {
	if seed, err := os.ReadFile(path); err == nil && len(seed) == ed25519.SeedSize {
		return ed25519.NewKeyFromSeed(seed), nil
	}
	_, key, err := ed25519.GenerateKey(crand.Reader)
	if err != nil {
		return nil, err
	}
	return key, os.WriteFile(path, key.Seed(), 0o600)
}

// chance reports true with the configured failure rate, from the seeded source.
func (f *fleet) chance() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rnd.Float64() < f.cfg.FailureRate
}

func (f *fleet) between(lo, hi time.Duration) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return lo + time.Duration(f.rnd.Int64N(int64(hi-lo)+1))
}

func (f *fleet) close() {
	for _, m := range f.machines {
		if m.bmc != nil {
			_ = m.bmc.Close()
		}
		m.stopAgent()
		_ = m.sim.Close()
	}
}

func (m *machine) stopAgent() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.agentCancel != nil {
		m.agentCancel()
		m.agentCancel = nil
	}
}

// bootFaults: some machines come up with SSH refusing connections for a while.
func (f *fleet) bootFaults(ctx context.Context) {
	for _, id := range f.ids {
		if f.chance() {
			f.refuseSSH(ctx, f.machines[id])
		}
	}
}

// refuseSSH makes a machine refuse connections for a few seconds, as one
// whose SSH daemon is not up yet.
func (f *fleet) refuseSSH(ctx context.Context, m *machine) {
	down := f.between(3*time.Second, 10*time.Second)
	f.log.Info("fault: SSH refuses connections", "machine", m.id, "for", down)
	m.sim.PowerOff()
	go func() {
		t := time.NewTimer(down)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			_ = m.sim.PowerOn()
		}
	}()
}

// exec runs what the shepherd runs on a machine: the uploaded agent binary.
// The agent is the real one, in process; it outlives the SSH session, as the
// real one detaches, and dies when the machine is power-cycled.
func (f *fleet) exec(m *machine) sshsim.ExecFunc {
	return func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) int {
		fields := strings.Fields(cmd)
		if len(fields) != 2 || fields[1] != "agent" {
			fmt.Fprintf(stderr, "sh: 1: unexpected command %q\n", cmd)
			return 127
		}
		if u, ok := m.sim.Uploaded(strings.Trim(fields[0], "'")); !ok || u.Mode&0o111 == 0 {
			fmt.Fprintf(stderr, "sh: 1: %s: not found or not executable\n", fields[0])
			return 127
		}
		if f.chance() {
			f.log.Info("fault: agent fails to start", "machine", m.id)
			fmt.Fprintln(stderr, "agent: cannot open /dev/tpm0: device or resource busy")
			return 1
		}
		m.stopAgent()
		actx, cancel := context.WithCancel(context.Background())
		a, err := agent.Takeover(actx, stdin, stdout, agent.Options{
			Interval:    HeartbeatInterval,
			GiveUpAfter: Thresholds.NoHeartbeatAfterStart,
			Logger:      f.log.With("component", "agent", "provider_id", m.id),
		})
		if err != nil {
			cancel()
			return 1
		}
		m.mu.Lock()
		m.agentCancel = cancel
		m.mu.Unlock()
		life := time.Duration(0)
		if f.chance() {
			life = f.between(5*time.Second, 20*time.Second)
			f.log.Info("fault: agent will stop heart-beating", "machine", m.id, "after", life)
		}
		go func() {
			if life > 0 {
				time.AfterFunc(life, cancel)
			}
			_ = a.Run(actx)
		}()
		return 0
	}
}
