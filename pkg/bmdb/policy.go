package bmdb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Policy is everything a shepherd's candidate rules depend on besides the
// database's rows. A running shepherd records its policy in BMDB
// (RecordPolicy), so views and explain judge machines by its numbers.
type Policy struct {
	Thresholds RecoveryThresholds
	Budget     Budget
	Breaker    BreakerPolicy
}

// Budget is the remediation budget: at most Attempts Recovery attempts per
// machine in any sliding Window. A machine over it gets a needs-attention
// mark and Recovery leaves it alone until an operator clears the mark.
type Budget struct {
	Attempts int
	Window   time.Duration
}

// BreakerPolicy is the fleet circuit breaker: Recovery stops while more
// machines are silent than max(MaxSilent, MaxSilentFraction × machines), in
// the fleet or (with the Location numbers) in any one location.
type BreakerPolicy struct {
	MaxSilent                 int
	MaxSilentFraction         float64
	LocationMaxSilent         int
	LocationMaxSilentFraction float64
	// Silence: a machine counts as silent once its last heartbeat is this
	// old. Default half the stale threshold, so that a location going
	// silent at once opens its breaker before any of its machines is stale
	// enough for Recovery.
	Silence time.Duration
	// MaxAge: breaker states evaluated longer ago than this count as open
	// (no shepherd is evaluating them). Default 10s; EvaluateBreakers runs
	// every second.
	MaxAge time.Duration
}

// DefaultBudget and DefaultBreaker are the shepherd's defaults.
var (
	DefaultBudget  = Budget{Attempts: 3, Window: 24 * time.Hour}
	DefaultBreaker = BreakerPolicy{MaxSilent: 10, MaxSilentFraction: 0.1, LocationMaxSilent: 5, LocationMaxSilentFraction: 0.25, MaxAge: 10 * time.Second}
)

// DefaultPolicy is the policy of a shepherd run with default flags.
func DefaultPolicy() Policy {
	return Policy{Thresholds: DefaultRecoveryThresholds, Budget: DefaultBudget, Breaker: DefaultBreaker}.WithDefaults()
}

// WithDefaults fills zero fields with the defaults.
func (p Policy) WithDefaults() Policy {
	if p.Thresholds.NoHeartbeatAfterStart <= 0 {
		p.Thresholds.NoHeartbeatAfterStart = DefaultRecoveryThresholds.NoHeartbeatAfterStart
	}
	if p.Thresholds.StaleHeartbeat <= 0 {
		p.Thresholds.StaleHeartbeat = DefaultRecoveryThresholds.StaleHeartbeat
	}
	if p.Budget.Attempts <= 0 {
		p.Budget.Attempts = DefaultBudget.Attempts
	}
	if p.Budget.Window <= 0 {
		p.Budget.Window = DefaultBudget.Window
	}
	b := &p.Breaker
	if b.MaxSilent <= 0 && b.MaxSilentFraction <= 0 {
		b.MaxSilent, b.MaxSilentFraction = DefaultBreaker.MaxSilent, DefaultBreaker.MaxSilentFraction
	}
	if b.LocationMaxSilent <= 0 && b.LocationMaxSilentFraction <= 0 {
		b.LocationMaxSilent, b.LocationMaxSilentFraction = DefaultBreaker.LocationMaxSilent, DefaultBreaker.LocationMaxSilentFraction
	}
	if b.Silence <= 0 {
		b.Silence = p.Thresholds.StaleHeartbeat / 2
	}
	if b.MaxAge <= 0 {
		b.MaxAge = DefaultBreaker.MaxAge
	}
	return p
}

// Validate says what is wrong with a policy given on flags.
func (p Policy) Validate() error {
	b := p.Breaker
	switch {
	case p.Budget.Attempts < 0:
		return errors.New("the remediation budget's attempts must be at least 1")
	case b.MaxSilentFraction < 0 || b.MaxSilentFraction > 1 || b.LocationMaxSilentFraction < 0 || b.LocationMaxSilentFraction > 1:
		return errors.New("breaker fractions must be between 0 and 1")
	case b.MaxSilent < 0 || b.LocationMaxSilent < 0:
		return errors.New("breaker counts must not be negative")
	case b.Silence > 0 && p.Thresholds.StaleHeartbeat > 0 && b.Silence > p.Thresholds.StaleHeartbeat:
		return fmt.Errorf("the breaker's silence (%s) must not exceed the stale-heartbeat threshold (%s): the breaker must open before Recovery acts", b.Silence, p.Thresholds.StaleHeartbeat)
	}
	return nil
}

// Limit is max(absolute, fraction × machines): more silent machines than
// this open a breaker.
func limit(absolute int, fraction float64, machines int64) int64 {
	return max(int64(absolute), int64(math.Floor(fraction*float64(machines))))
}

// policyJSON is a Policy as recorded: seconds, names that read in psql.
type policyJSON struct {
	NoHeartbeatAfterStart     float64 `json:"no_heartbeat_after_start_seconds"`
	StaleHeartbeat            float64 `json:"stale_heartbeat_seconds"`
	BudgetAttempts            int     `json:"budget_attempts"`
	BudgetWindow              float64 `json:"budget_window_seconds"`
	BreakerMaxSilent          int     `json:"breaker_max_silent"`
	BreakerMaxSilentFraction  float64 `json:"breaker_max_silent_fraction"`
	BreakerLocationMaxSilent  int     `json:"breaker_location_max_silent"`
	BreakerLocationMaxSilentF float64 `json:"breaker_location_max_silent_fraction"`
	BreakerSilence            float64 `json:"breaker_silence_seconds"`
	BreakerMaxAge             float64 `json:"breaker_max_age_seconds"`
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func (p Policy) MarshalJSON() ([]byte, error) {
	b := p.Breaker
	return json.Marshal(policyJSON{
		p.Thresholds.NoHeartbeatAfterStart.Seconds(), p.Thresholds.StaleHeartbeat.Seconds(),
		p.Budget.Attempts, p.Budget.Window.Seconds(),
		b.MaxSilent, b.MaxSilentFraction, b.LocationMaxSilent, b.LocationMaxSilentFraction,
		b.Silence.Seconds(), b.MaxAge.Seconds(),
	})
}

func (p *Policy) UnmarshalJSON(data []byte) error {
	var j policyJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*p = Policy{
		Thresholds: RecoveryThresholds{NoHeartbeatAfterStart: seconds(j.NoHeartbeatAfterStart), StaleHeartbeat: seconds(j.StaleHeartbeat)},
		Budget:     Budget{Attempts: j.BudgetAttempts, Window: seconds(j.BudgetWindow)},
		Breaker: BreakerPolicy{MaxSilent: j.BreakerMaxSilent, MaxSilentFraction: j.BreakerMaxSilentFraction,
			LocationMaxSilent: j.BreakerLocationMaxSilent, LocationMaxSilentFraction: j.BreakerLocationMaxSilentF,
			Silence: seconds(j.BreakerSilence), MaxAge: seconds(j.BreakerMaxAge)},
	}
	return nil
}

// RecordPolicy records the policy the shepherd of session runs with.
func RecordPolicy(ctx context.Context, db DBTX, session uuid.UUID, p Policy) error {
	_, err := db.Exec(ctx, `
		INSERT INTO shepherd_policies (session_id, policy) VALUES ($1, $2)
		ON CONFLICT (session_id) DO UPDATE SET policy = excluded.policy, policy_recorded_at = now()`, session, p)
	return err
}

// RecordedPolicy is a policy with where it came from.
type RecordedPolicy struct {
	Policy Policy `json:"policy"`
	// Session recorded it; nil when no shepherd ever did (the defaults).
	Session    *uuid.UUID `json:"session_id"`
	RecordedAt *time.Time `json:"recorded_at"`
	// Live: the recording shepherd's session is alive.
	Live bool `json:"live"`
}

// CurrentPolicy is the policy of the live shepherd that started last, else
// of the last shepherd that ran, else the defaults.
func CurrentPolicy(ctx context.Context, db DBTX) (RecordedPolicy, error) {
	var (
		r   RecordedPolicy
		id  uuid.UUID
		at  time.Time
		pol Policy
	)
	err := db.QueryRow(ctx, `
		SELECT p.session_id, p.policy, p.policy_recorded_at, coalesce(s.session_deadline > now(), false)
		FROM shepherd_policies p LEFT JOIN sessions s ON s.session_id = p.session_id
		ORDER BY coalesce(s.session_deadline > now(), false) DESC, p.policy_recorded_at DESC LIMIT 1`).Scan(&id, &pol, &at, &r.Live)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return RecordedPolicy{Policy: DefaultPolicy()}, nil
	case err != nil:
		return r, err
	}
	r.Policy, r.Session, r.RecordedAt = pol.WithDefaults(), &id, &at
	return r, nil
}
