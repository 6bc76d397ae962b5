// Package brakestest sets up the brakes of the candidate rules for tests
// that drive Recovery without a heartbeat endpoint or a shepherd: an
// observer that has watched for a long time, and freshly evaluated breakers.
package brakestest

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Watched records a heartbeat observer that has been alive and writing for
// a day and is taken as alive for days more (its gap tolerance is huge), as
// if an endpoint had run all along: staleness then counts from heartbeats
// alone.
func Watched(t testing.TB, pool *pgxpool.Pool) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
		INSERT INTO heartbeat_observer (observer_alive_at, observer_since, observer_gap_seconds, observer_host)
		VALUES (now(), now() - interval '1 day', 1e7, 'brakestest')
		ON CONFLICT (observer_singleton) DO UPDATE SET observer_alive_at = excluded.observer_alive_at,
			observer_since = excluded.observer_since, observer_gap_seconds = excluded.observer_gap_seconds`)
	if err != nil {
		t.Fatalf("recording a test observer: %v", err)
	}
}

// Breakers evaluates the breakers under pol, as a running shepherd does
// every second, and returns their states.
func Breakers(t testing.TB, pool *pgxpool.Pool, pol bmdb.Policy) []bmdb.BreakerState {
	t.Helper()
	st, err := bmdb.EvaluateBreakers(context.Background(), pool, pol)
	if err != nil {
		t.Fatalf("evaluating breakers: %v", err)
	}
	return st
}

// Ready is Watched and Breakers under pol, which it also records as a
// shepherd's policy (views judge by it) with breaker states taken as fresh
// for an hour, so that a slow test's views do not see them go stale. It
// returns the policy recorded.
func Ready(t testing.TB, pool *pgxpool.Pool, pol bmdb.Policy) bmdb.Policy {
	t.Helper()
	Watched(t, pool)
	pol.Breaker.MaxAge = time.Hour
	pol = pol.WithDefaults()
	if err := bmdb.RecordPolicy(context.Background(), pool, uuid.New(), pol); err != nil {
		t.Fatalf("recording a test policy: %v", err)
	}
	Breakers(t, pool, pol)
	return pol
}
