package ops

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// OverrideBreaker forces Recovery's circuit breaker closed for a bounded
// time (migration 0010's breaker_overrides): the fleet's, or with Location
// that location's. An override already in place is replaced. The override
// is a BreakerOverridden event, recorded under FleetMachine.
type OverrideBreaker struct {
	Location string // "": the fleet's breaker
	Until    time.Time
	Reason   string
}

func (OverrideBreaker) Name() string { return "override the breaker" }

// Scope is the breaker_scope the override is stored under.
func (a OverrideBreaker) Scope() string {
	if a.Location == "" {
		return "fleet"
	}
	return "location:" + a.Location
}

func (a OverrideBreaker) scopeText() string {
	if a.Location == "" {
		return "the fleet's breaker"
	}
	return "the breaker of location " + a.Location
}

func (a OverrideBreaker) Plan(ctx context.Context, tx pgx.Tx, lock bool) (Plan, error) {
	if a.Reason == "" {
		return Plan{}, fmt.Errorf("a breaker override needs a reason")
	}
	if err := checkFuture(ctx, tx, "the override", a.Until); err != nil {
		return Plan{}, err
	}
	if a.Location != "" {
		var known bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM machine_provided WHERE provider_location = $1)`, a.Location).Scan(&known); err != nil {
			return Plan{}, err
		}
		if !known {
			return Plan{}, fmt.Errorf("no machine is at location %q; check the name (bmctl machines list -o wide)", a.Location)
		}
	}
	if lock {
		// Serialises overrides of one scope: a second waits, then sees the first.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('breaker_overrides:' || $1))`, a.Scope()); err != nil {
			return Plan{}, err
		}
	}
	var (
		reason, actor string
		until         time.Time
	)
	err := tx.QueryRow(ctx, `SELECT override_reason, override_actor, override_until FROM breaker_overrides
		WHERE breaker_scope = $1 AND override_until > now()`, a.Scope()).Scan(&reason, &actor, &until)
	replaces := ""
	switch {
	case err == nil:
		replaces = fmt.Sprintf(" (replaces the override by %s until %s: %s)", actor, utc(until), reason)
	case !errors.Is(err, pgx.ErrNoRows):
		return Plan{}, err
	}
	desc := fmt.Sprintf("%s closed until %s: %s%s", a.scopeText(), utc(a.Until), a.Reason, replaces)
	return Plan{Changes: []Change{{
		MachineID: FleetMachine, Process: bmdb.ProcessShepherdRecovery, Event: EventBreakerOverridden,
		What: "force " + desc, Cause: "forced " + desc, key: a.Scope(),
	}}}, nil
}

func (a OverrideBreaker) Apply(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO breaker_overrides (breaker_scope, override_until, override_reason, override_actor, override_placed_at)
		VALUES ($1, $2, $3, $4, now())
		ON CONFLICT (breaker_scope) DO UPDATE SET override_until = excluded.override_until,
			override_reason = excluded.override_reason, override_actor = excluded.override_actor,
			override_placed_at = now()`, a.Scope(), a.Until, a.Reason, actor)
	return err
}
