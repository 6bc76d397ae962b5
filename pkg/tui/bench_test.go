package tui

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
	pool := seeded20k(b)
	// One connection, so the server's CPU time for the refreshes can be read
	// from its backend process: on a shared machine wall time mostly
	// measures the wait for a CPU, CPU time what a refresh costs.
	conn, err := pgx.Connect(context.Background(), pool.Config().ConnConfig.ConnString())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	var backend int
	if err := conn.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	src := FleetSource{DB: conn}
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
			cpu0, ok := processCPU(backend)
			for b.Loop() {
				if _, err := src.Page(context.Background(), q); err != nil {
					b.Fatal(err)
				}
			}
			if cpu1, ok1 := processCPU(backend); ok && ok1 {
				b.ReportMetric(float64(cpu1-cpu0)/float64(time.Millisecond)/float64(b.N), "pg-cpu-ms/op")
			}
		})
	}
}

// processCPU is the user+system CPU time of a local process (Linux), or false
// when it cannot be read (the server is remote, or not Linux).
func processCPU(pid int) (time.Duration, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th, in clock ticks (100 per second).
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}
