package shepherd

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// RecoveryConfig configures the Recovery loop.
type RecoveryConfig struct {
	LoopConfig
	// Thresholds decide which agents count as dead; default DESIGN's 30m/10m.
	Thresholds bmdb.RecoveryThresholds
	// Budget and Breaker bound what Recovery does; zero fields take
	// bmdb's defaults (3 attempts a day; see bmdb.DefaultBreaker).
	Budget  bmdb.Budget
	Breaker bmdb.BreakerPolicy
	// RebootTimeout bounds one reboot through the provider, until it has
	// taken effect; default 10m.
	RebootTimeout time.Duration
}

func (c RecoveryConfig) withDefaults() RecoveryConfig {
	if c.Thresholds == (bmdb.RecoveryThresholds{}) {
		c.Thresholds = bmdb.DefaultRecoveryThresholds
	}
	if c.RebootTimeout <= 0 {
		c.RebootTimeout = 10 * time.Minute
	}
	if c.Backoff == (bmdb.Backoff{}) {
		c.Backoff = bmdb.RecoveryBackoff
	}
	pol := c.Policy()
	c.Budget, c.Breaker = pol.Budget, pol.Breaker
	return c
}

// Policy is the rule's numbers, as the shepherd records them in BMDB.
func (c RecoveryConfig) Policy() bmdb.Policy {
	return bmdb.Policy{Thresholds: c.Thresholds, Budget: c.Budget, Breaker: c.Breaker}.WithDefaults()
}

// recovery is the Recovery loop: it reboots machines whose agent stopped
// heart-beating and removes their agent tags, so AgentStart starts it again.
type recovery struct {
	cfg       RecoveryConfig
	providers map[string]Provider
	types     []string
}

func newRecovery(cfg RecoveryConfig, providers map[string]Provider) *recovery {
	r := &recovery{cfg: cfg, providers: providers}
	for t := range providers {
		r.types = append(r.types, t)
	}
	return r
}

func (r *recovery) Process() bmdb.Process { return bmdb.ProcessShepherdRecovery }

func (r *recovery) Claim(ctx context.Context, sess *bmdb.Session) (*bmdb.Work, error) {
	return sess.ClaimRecovery(ctx, r.cfg.Policy(), r.types)
}

func (r *recovery) Do(ctx context.Context, t *Task) (func(context.Context, pgx.Tx) error, error) {
	p, ok := r.providers[t.Machine.Provider]
	if !ok {
		return nil, fail(FailMachine, fmt.Errorf("machine's provider %q is not configured in this shepherd", t.Machine.Provider))
	}
	t.SetDetail(ctx, "rebooting via "+p.Type()+", waiting for it to take effect")
	rctx, cancel := context.WithTimeoutCause(ctx, r.cfg.RebootTimeout, fmt.Errorf("Recovery's reboot timeout of %s ran out", r.cfg.RebootTimeout))
	defer cancel()
	var report string
	var err error
	if rr, ok := p.(RebootReporter); ok {
		report, err = rr.RebootReport(rctx, t.Machine.ProviderID, func(step string) { t.SetDetail(ctx, step) })
	} else {
		err = p.Reboot(rctx, t.Machine.ProviderID)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// The provider's error says whether the reboot was sent and what
		// the timeout ended.
		if rctx.Err() != nil {
			return nil, fail(FailTimeout, fmt.Errorf("reboot via %s: %w", p.Type(), err))
		}
		return nil, fail(FailProvider, fmt.Errorf("reboot via %s: %w", p.Type(), err))
	}
	return func(ctx context.Context, tx pgx.Tx) error {
		if report != "" {
			if err := t.Work.RecordEvent(ctx, tx, bmdb.EventPowerAction, report); err != nil {
				return err
			}
		}
		return bmdb.ClearAgentTags(ctx, tx, t.Machine.MachineID)
	}, nil
}
