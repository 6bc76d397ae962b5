package tui

import (
	"context"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/seed"
)

var (
	fleet20kOnce sync.Once
	fleet20k     *pgxpool.Pool
)

// seeded20k is a database with a steady fleet of 20,000 machines, shared by
// the benchmarks.
func seeded20k(b *testing.B) *pgxpool.Pool {
	fleet20kOnce.Do(func() {
		ctx := context.Background()
		pool, err := pgxpool.New(ctx, pgtest.URL(b))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := seed.Seed(ctx, pool, seed.Options{Machines: 20000, Profile: seed.Steady, Seed: 42}); err != nil {
			b.Fatal(err)
		}
		fleet20k = pool
	})
	if fleet20k == nil {
		b.Fatal("seeding failed")
	}
	return fleet20k
}

// BenchmarkRefresh20k is one refresh of the view at 20,000 machines: the
// window around a 40-row screen, the count that matches, and the fleet
// summary, for the orders and filters an operator uses most.
func BenchmarkRefresh20k(b *testing.B) {
	src := FleetSource{DB: seeded20k(b)}
	cases := []struct {
		name string
		q    Query
	}{
		{"by-machine", Query{Sort: ColMachine}},
		{"by-state", Query{Sort: ColState}},
		{"by-heartbeat-desc", Query{Sort: ColHeartbeat, Desc: true}},
		{"middle-page", Query{Sort: ColProvider, Offset: 10000}},
		{"text-filter", Query{Sort: ColMachine, Text: "seed-1"}},
		{"state-filter", Query{Sort: ColMachine, State: "heartbeat_stale"}},
		{"process-filter", Query{Sort: ColWork, Process: "ShepherdRecovery"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			q := c.q
			q.Limit = 120
			for b.Loop() {
				if _, err := src.Page(context.Background(), q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
