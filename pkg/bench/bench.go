// Package bench measures what decides how big a fleet bmctl can run, all in
// one run on one dedicated PostgreSQL cluster: the machine's ceiling
// (pgbench), claim+finish throughput through bmdb against the seed's
// select-time exclusion under SERIALIZABLE, and candidate query latency at
// 100k and 1M machines. It prints one table and saves the query plans.
package bench

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/bmctl/bmctl/internal/cpuuse"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/localpg"
	"github.com/bmctl/bmctl/pkg/seed"
)

// Config sizes a benchmark run. Zero values take the defaults of `make bench`.
type Config struct {
	// Dir receives the table (results.txt) and the EXPLAIN plans.
	Dir string
	// Duration of each throughput measurement.
	Duration time.Duration
	// Rounds of throughput measurements; each cell is their median.
	Rounds int
	// Sessions are the concurrency levels of the throughput measurements.
	Sessions []int
	// ClaimMachines and ClaimEligible shape the claim+finish fleet.
	ClaimMachines, ClaimEligible int
	// Fleets are the steady-profile sizes for candidate latency.
	Fleets []int
	// Samples per candidate latency measurement.
	Samples int
	// PgbenchScale sizes pgbench's tables (100k accounts per unit); default
	// 10, enough that 16 clients rarely update one account at once.
	PgbenchScale int
	// URL of an existing database to use instead of a throwaway cluster.
	URL string
	// ShepherdBinary is a bmctl binary whose `shepherd run` is measured for
	// memory; empty skips that measurement.
	ShepherdBinary string
	// HistoryEvents is the size of the history `history --all --since 1h`
	// is timed over (default 5M).
	HistoryEvents int
	// Progress receives one line per step.
	Progress io.Writer
}

func (c *Config) defaults() {
	if c.Dir == "" {
		c.Dir = "bench"
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Rounds == 0 {
		c.Rounds = 3
	}
	if len(c.Sessions) == 0 {
		c.Sessions = []int{1, 4, 16}
	}
	if c.ClaimMachines == 0 {
		c.ClaimMachines = 100_000
	}
	if c.ClaimEligible == 0 {
		c.ClaimEligible = c.ClaimMachines / 10
	}
	if len(c.Fleets) == 0 {
		c.Fleets = []int{100_000, 1_000_000}
	}
	if c.Samples == 0 {
		c.Samples = 2000
	}
	if c.PgbenchScale == 0 {
		c.PgbenchScale = 10
	}
	if c.HistoryEvents == 0 {
		c.HistoryEvents = 5_000_000
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
}

// Results is everything one run measured.
type Results struct {
	Started time.Time
	// Load is the machine's load average at the start and the end: the
	// numbers mean little when other work shares the CPUs.
	LoadStart, LoadEnd string
	BigFleet           int
	Server             string
	Settings           string
	Duration           time.Duration
	Rounds             int
	Sessions           []int
	Pgbench            map[int]float64
	// PgbenchCPU is the machine's CPU time per pgbench transaction.
	PgbenchCPU map[int]time.Duration
	// Ratio is 2 × claim+finish cycles/s ÷ pgbench tps, per round, median.
	Ratio map[int]float64
	// ClaimPool is the connections claim+finish and the seed's way share.
	ClaimPool  int
	Claim      map[int]Throughput
	Seed       map[int]Throughput
	Candidates []Latency
	// Explain is bmctl explain's latency per fleet size.
	Explain    []Latency
	HOT        HOTStats
	Shepherd   string // peak RSS, or why not measured
	ShepherdOK bool
	// ShepherdClaims the shepherd made while measured.
	ShepherdClaims int
	History        HistoryLatency
}

// Throughput of claim+finish cycles at one concurrency.
type Throughput struct {
	CyclesPerSec float64
	Cycles       int
	Empty        int // claims that found nothing (a lost race)
	Retries      int // transactions retried on 40001
	// MachineCPU is the CPU time every process on the machine spent per
	// cycle (per transaction for pgbench), ClientCPU bmctl's own share.
	MachineCPU, ClientCPU time.Duration
}

// Latency of one candidate query at one fleet size.
type Latency struct {
	Query    string
	Fleet    int
	Limit    int
	Eligible int
	P50, P99 time.Duration
	Plan     string // file the plan was saved to
}

// HOTStats shows whether heartbeat upserts stay heap-only.
type HOTStats struct {
	Updates, HOT int64
	PerSec       float64
}

// Run runs every measurement and writes the table to out and Dir.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	cfg.defaults()
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return err
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(cfg.Progress, "bench: "+format+"\n", args...)
	}
	url := cfg.URL
	pg := pgbenchTarget{}
	if url == "" {
		dir, err := os.MkdirTemp("", "bmctl-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		// fsync off: the run measures CPU and locking, not this VM's disk;
		// pgbench and bmdb run on the same settings, so the ratios hold.
		cluster := &localpg.Cluster{Dir: dir, Fast: true}
		logf("starting a dedicated PostgreSQL cluster in %s", dir)
		if err := cluster.Start(ctx); err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_ = cluster.Stop(sctx)
		}()
		if err := cluster.CreateDatabase(ctx, "bench"); err != nil {
			return err
		}
		url = cluster.URL("bench")
		pg = pgbenchTarget{host: cluster.SocketDir(), user: "postgres", db: "bench"}
		if os.Geteuid() != 0 {
			pg.user = ""
		}
	} else {
		pg = pgbenchTarget{url: url}
	}
	if err := bmdb.MigrateUp(url); err != nil {
		return err
	}
	conn, err := bmdb.Open(ctx, withPoolSize(url, 64))
	if err != nil {
		return err
	}
	defer conn.Close()

	res := &Results{Started: time.Now().UTC(), Duration: cfg.Duration, Rounds: cfg.Rounds, Sessions: cfg.Sessions,
		Pgbench: map[int]float64{}, Ratio: map[int]float64{}, Claim: map[int]Throughput{}, Seed: map[int]Throughput{},
		PgbenchCPU: map[int]time.Duration{},
		LoadStart:  loadavg(), BigFleet: cfg.Fleets[len(cfg.Fleets)-1]}
	_ = conn.Pool.QueryRow(ctx, `SELECT current_setting('server_version'),
		format('fsync=%s synchronous_commit=%s shared_buffers=%s', current_setting('fsync'),
		       current_setting('synchronous_commit'), current_setting('shared_buffers'))`).Scan(&res.Server, &res.Settings)

	// The ceiling, pgbench's simple-update workload, measured right beside
	// the claim+finish cycles at each concurrency, so that a change in the
	// load from elsewhere shifts both.
	logf("pgbench -i")
	if err := pg.init(ctx, cfg.PgbenchScale); err != nil {
		return err
	}
	logf("seeding %d machines, %d eligible for AgentStart", cfg.ClaimMachines, cfg.ClaimEligible)
	claimFleet := seed.Profile{Name: "claim", New: float64(cfg.ClaimEligible) / float64(cfg.ClaimMachines)}
	if err := reseed(ctx, conn, cfg.ClaimMachines, claimFleet); err != nil {
		return err
	}
	// Claims go through one pool as the shepherd's do: a session is a lease,
	// not a connection, and the pool (bmdb's default size) is what keeps the
	// database at the concurrency it runs best at. pgbench, the ceiling,
	// opens a connection per client.
	shepherdConn, err := bmdb.Open(ctx, url)
	if err != nil {
		return err
	}
	defer shepherdConn.Close()
	res.ClaimPool = int(shepherdConn.Pool.Config().MaxConns)
	// Rounds interleave the three at every concurrency; each cell is the
	// median of its rounds, so one slow moment (a cold cache, autovacuum,
	// another process) does not decide a comparison.
	pgRuns, claimRuns, seedRuns := map[int][]Throughput{}, map[int][]Throughput{}, map[int][]Throughput{}
	for round := 1; round <= cfg.Rounds; round++ {
		for _, c := range cfg.Sessions {
			p, err := pgbench(ctx, conn, pg, c, cfg.Duration)
			if err != nil {
				return err
			}
			logf("round %d: pgbench -N -c %d: %.0f tps", round, c, p.CyclesPerSec)
			pgRuns[c] = append(pgRuns[c], p)
			t, err := claimFinish(ctx, shepherdConn, c, cfg.Duration)
			if err != nil {
				return err
			}
			logf("round %d: claim+finish, %d sessions: %.0f cycles/s (%d empty claims)", round, c, t.CyclesPerSec, t.Empty)
			claimRuns[c] = append(claimRuns[c], t)
			t, err = seedWay(ctx, shepherdConn, c, cfg.Duration)
			if err != nil {
				return err
			}
			logf("round %d: seed's way, %d sessions: %.0f cycles/s, %d retries", round, c, t.CyclesPerSec, t.Retries)
			seedRuns[c] = append(seedRuns[c], t)
		}
	}
	for _, c := range cfg.Sessions {
		// The ratio pairs each claim run with the pgbench run just before
		// it, under the same conditions, and takes the median pair.
		var ratios []Throughput
		for i, t := range claimRuns[c] {
			ratios = append(ratios, Throughput{CyclesPerSec: 2 * t.CyclesPerSec / pgRuns[c][i].CyclesPerSec})
		}
		res.Ratio[c] = median(ratios).CyclesPerSec
		res.Pgbench[c] = median(pgRuns[c]).CyclesPerSec
		res.PgbenchCPU[c] = median(pgRuns[c]).MachineCPU
		res.Claim[c] = median(claimRuns[c])
		res.Seed[c] = median(seedRuns[c])
	}

	// Candidate latency in the steady profile.
	for _, n := range cfg.Fleets {
		logf("seeding %d machines, steady profile", n)
		if err := reseed(ctx, conn, n, seed.Steady); err != nil {
			return err
		}
		lat, err := candidateLatencies(ctx, conn, n, cfg.Samples, cfg.Dir)
		if err != nil {
			return err
		}
		for _, l := range lat {
			logf("%s limit %d at %d: p50 %s p99 %s (%d eligible)", l.Query, l.Limit, n, l.P50, l.P99, l.Eligible)
		}
		res.Candidates = append(res.Candidates, lat...)
		ex, err := explainLatency(ctx, conn, n, cfg.Samples)
		if err != nil {
			return err
		}
		logf("explain at %d: p50 %s p99 %s", n, ex.P50, ex.P99)
		res.Explain = append(res.Explain, ex)
		if n == cfg.Fleets[len(cfg.Fleets)-1] {
			// Heartbeats at full speed on the biggest fleet, then the
			// candidate queries again: upserts must stay HOT and not bloat
			// what the queries read.
			logf("heartbeats for %s at %d machines", cfg.Duration, n)
			res.HOT, err = heartbeats(ctx, conn, 4, cfg.Duration)
			if err != nil {
				return err
			}
			lat, err := candidateLatencies(ctx, conn, n, cfg.Samples, "")
			if err != nil {
				return err
			}
			for i := range lat {
				lat[i].Query += " after heartbeats"
			}
			res.Candidates = append(res.Candidates, lat...)
		}
	}
	logf("history --all --since 1h over %d events", cfg.HistoryEvents)
	res.History, err = fleetHistory(ctx, conn, cfg.HistoryEvents, min(cfg.Samples, 50))
	if err != nil {
		return err
	}
	logf("history --all --since 1h: p50 %s p99 %s (%d events in the hour)", res.History.P50, res.History.P99, res.History.InWindow)
	res.Shepherd = "not measured (no shepherd binary given)"
	if cfg.ShepherdBinary != "" {
		logf("shepherd with 32 workers per loop for %s at %d machines", cfg.Duration, cfg.Fleets[len(cfg.Fleets)-1])
		kb, claims, err := shepherdRSS(ctx, conn, cfg.ShepherdBinary, url, 2*cfg.Duration)
		if err != nil {
			return err
		}
		res.Shepherd = fmt.Sprintf("%.1f MB peak", float64(kb)/1024)
		res.ShepherdClaims = claims
		res.ShepherdOK = kb < 100*1024
	}

	res.LoadEnd = loadavg()
	var table = render(res)
	if err := os.WriteFile(filepath.Join(cfg.Dir, "results.txt"), []byte(table), 0o644); err != nil {
		return err
	}
	_, err = io.WriteString(out, table)
	return err
}

func withPoolSize(url string, n int) string {
	sep := "?"
	for _, r := range url {
		if r == '?' {
			sep = "&"
		}
	}
	return fmt.Sprintf("%s%spool_max_conns=%d", url, sep, n)
}

// reseed empties the fleet tables and seeds n machines, then vacuums so the
// measurements start from a settled table (visibility map, statistics).
func reseed(ctx context.Context, conn *bmdb.Conn, n int, p seed.Profile) error {
	if _, err := conn.Pool.Exec(ctx, `TRUNCATE machines, machine_provided, machine_agent_started, machine_agent_heartbeat,
		machine_hardware_report, work, work_backoff, work_history, sessions CASCADE`); err != nil {
		return err
	}
	if _, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: n, Profile: p, Seed: uint64(n)}); err != nil {
		return err
	}
	if err := brakesOf(ctx, conn); err != nil {
		return err
	}
	_, err := conn.Pool.Exec(ctx, `VACUUM (ANALYZE) machines, machine_provided, machine_agent_started, machine_agent_heartbeat, work, work_backoff, work_history, sessions`)
	return err
}

// pgbench is one run of pgbench's workload from a settled database, with
// the machine's CPU time per transaction.
func pgbench(ctx context.Context, conn *bmdb.Conn, pg pgbenchTarget, clients int, d time.Duration) (Throughput, error) {
	if err := settle(ctx, conn); err != nil {
		return Throughput{}, err
	}
	cpu, err := cpuuse.Now()
	if err != nil {
		return Throughput{}, err
	}
	tps, err := pg.run(ctx, clients, d)
	if err != nil {
		return Throughput{}, err
	}
	machine, _, err := cpu.Since()
	return Throughput{CyclesPerSec: tps, MachineCPU: time.Duration(float64(machine) / (tps * d.Seconds()))}, err
}

// settle pays the previous throughput run's debt before the next starts:
// without it, autovacuum cleans up after pgbench's updates while the claims
// run, and after the claims while pgbench runs, and each is charged for the
// other's garbage.
func settle(ctx context.Context, conn *bmdb.Conn) error {
	if _, err := conn.Pool.Exec(ctx, `VACUUM`); err != nil {
		return fmt.Errorf("vacuum between runs: %w", err)
	}
	if _, err := conn.Pool.Exec(ctx, `CHECKPOINT`); err != nil {
		return fmt.Errorf("checkpoint between runs (needs a superuser or pg_checkpoint): %w", err)
	}
	return nil
}

// median is the run with the median rate (the upper one of an even count).
func median(runs []Throughput) Throughput {
	sorted := slices.SortedFunc(slices.Values(runs), func(a, b Throughput) int { return cmp.Compare(a.CyclesPerSec, b.CyclesPerSec) })
	return sorted[len(sorted)/2]
}

func cpus() int { return runtime.NumCPU() }

// loadavg is the 1, 5 and 15 minute load averages, or "?".
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if err != nil || len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
