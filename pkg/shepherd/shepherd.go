package shepherd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Config is a shepherd: which loops run, against which database and
// providers. A nil loop config leaves that loop off.
type Config struct {
	Conn      *bmdb.Conn
	Providers []Provider
	Logger    *slog.Logger
	// Metrics receive what the loops do; nil creates unregistered ones.
	Metrics *Metrics
	Version string
	// SessionInterval is each worker's BMDB session lease: a crashed
	// shepherd's machines are free again this long after its last poke
	// (plus the sweep's grace). Default 10s.
	SessionInterval time.Duration

	AgentStart   *AgentStartConfig
	Recovery     *RecoveryConfig
	Provisioning *ProvisioningConfig
}

// Run runs the configured loops until ctx ends. Then it stops claiming,
// cancels work in flight (history records it as canceled), closes its
// sessions and returns nil. It returns an error only for a configuration it
// cannot run.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Conn == nil {
		return errors.New("shepherd needs a BMDB connection")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.SessionInterval <= 0 {
		cfg.SessionInterval = 10 * time.Second
	}
	if cfg.AgentStart == nil && cfg.Recovery == nil && cfg.Provisioning == nil {
		return errors.New("no loop to run: enable at least one of agentstart, recovery, provisioning")
	}
	providers := map[string]Provider{}
	for _, p := range cfg.Providers {
		if _, dup := providers[p.Type()]; dup {
			return fmt.Errorf("two providers of type %q; give each inventory its own name", p.Type())
		}
		providers[p.Type()] = p
	}
	if (cfg.Recovery != nil || cfg.Provisioning != nil) && len(providers) == 0 {
		return errors.New("recovery and provisioning need a provider")
	}

	var loops []*runner
	brk := &brakes{conn: cfg.Conn, log: cfg.Logger, m: cfg.Metrics, version: cfg.Version}
	if cfg.AgentStart != nil {
		c := cfg.AgentStart.withDefaults()
		if err := c.validate(); err != nil {
			return err
		}
		loops = append(loops, newRunner(cfg.Conn, &agentStart{cfg: c, conn: cfg.Conn}, c.LoopConfig, cfg.Logger, cfg.Metrics, cfg.Version, cfg.SessionInterval))
	}
	if cfg.Recovery != nil {
		c := cfg.Recovery.withDefaults()
		pol := c.Policy()
		if err := pol.Validate(); err != nil {
			return err
		}
		brk.pol = &pol
		loops = append(loops, newRunner(cfg.Conn, newRecovery(c, providers), c.LoopConfig, cfg.Logger, cfg.Metrics, cfg.Version, cfg.SessionInterval))
	}

	var wg sync.WaitGroup
	for _, r := range loops {
		wg.Go(func() { r.run(ctx) })
	}
	if len(loops) > 0 {
		wg.Go(func() { brk.run(ctx) })
	}
	if cfg.Provisioning != nil {
		wg.Go(func() { provision(ctx, cfg.Conn, cfg.Providers, *cfg.Provisioning, cfg.Logger, cfg.Metrics) })
	}
	cfg.Logger.Info("shepherd running", "agentstart", cfg.AgentStart != nil, "recovery", cfg.Recovery != nil, "provisioning", cfg.Provisioning != nil)
	wg.Wait()
	closeProviders(cfg.Providers, cfg.Logger)
	cfg.Logger.Info("shepherd stopped")
	return nil
}

// closeProviders lets providers that hold something (BMC sessions) release
// it, within a bound: the shepherd is shutting down.
func closeProviders(ps []Provider, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), endTimeout)
	defer cancel()
	for _, p := range ps {
		if c, ok := p.(interface{ Close(context.Context) error }); ok {
			if err := c.Close(ctx); err != nil {
				log.Warn("closing provider failed", "provider", p.Type(), "err", err)
			}
		}
	}
}
