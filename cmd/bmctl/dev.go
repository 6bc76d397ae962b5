package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bench"
	"github.com/bmctl/bmctl/pkg/seed"
)

func init() { commands = append(commands, newDevCmd) }

// devSubcommands are the `bmctl dev` tools for developers and demos. Other
// files add theirs from init, so each tool stays in its own file.
var devSubcommands []func(*app) *cobra.Command

func newDevCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Developer tools: synthetic fleets, benchmarks",
	}
	asGroup(cmd)
	cmd.AddCommand(newDevSeedCmd(a), newDevBenchCmd(a))
	for _, sub := range devSubcommands {
		cmd.AddCommand(sub(a))
	}
	return cmd
}

func newDevSeedCmd(a *app) *cobra.Command {
	var (
		machines int
		profile  string
		provider string
		rngSeed  uint64
		workTTL  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "seed",
		Short: "Fill BMDB with a synthetic fleet (for benchmarks and demos)",
		Long: `Adds --machines synthetic machines to BMDB in one transaction, in the states of
the chosen profile, with the work history that led there.

Profile steady: 99% healthy (agent started, fresh heartbeat), 0.5% new
(AgentStart candidates), 0.5% stale (Recovery candidates), a few hundred in
backoff and some active work under a session named "seed" that lives for
--work-ttl (then the sweep records that work as lost).

Healthy heartbeats are fresh as of the seed and nothing refreshes them: they
turn stale after 10 minutes unless agents report.`,
		Example: "  bmctl dev seed --machines 100000 --profile steady",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if machines < 1 {
				return usageError{fmt.Errorf("--machines must be at least 1, got %d", machines)}
			}
			p, err := seed.LookupProfile(profile)
			if err != nil {
				return usageError{err}
			}
			ctx := cmd.Context()
			conn, err := a.connect(ctx)
			if err != nil {
				return err
			}
			defer conn.Close()
			res, err := seed.Seed(ctx, conn.Pool, seed.Options{
				Machines: machines, Profile: p, Provider: provider, Seed: rngSeed, WorkTTL: workTTL,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(a.Out, "seeded %d machines (profile %s, provider %s) in %s\n", res.Machines, p.Name, provider, res.Elapsed.Round(time.Millisecond))
			fmt.Fprintf(a.Out, "  healthy %d, new %d, stale heartbeat %d, never heart-beat %d\n", res.Healthy, res.New, res.Stale, res.Silent)
			fmt.Fprintf(a.Out, "  backoff: AgentStart %d, Recovery %d\n", res.AgentStartBackoff, res.RecoveryBackoff)
			fmt.Fprintf(a.Out, "  work under session %s: AgentStart %d, Recovery %d\n", res.Session, res.AgentStartWork, res.RecoveryWork)
			fmt.Fprintf(a.Out, "  candidates now: AgentStart %d, Recovery %d\n", res.AgentStartEligible(), res.RecoveryEligible())
			fmt.Fprintf(a.Out, "  history events %d\n", res.History)
			return nil
		},
	}
	cmd.Flags().IntVar(&machines, "machines", 0, "number of machines to add (required)")
	cmd.Flags().StringVar(&profile, "profile", seed.Steady.Name, "fleet profile: steady")
	cmd.Flags().StringVar(&provider, "provider", "seed", "provider name of the seeded machines")
	cmd.Flags().Uint64Var(&rngSeed, "seed", 0, "random seed, for a reproducible fleet (default: random)")
	cmd.Flags().DurationVar(&workTTL, "work-ttl", time.Hour, "how long the seeding session and its active work live")
	return cmd
}

func newDevBenchCmd(a *app) *cobra.Command {
	var (
		cfg    bench.Config
		fleets string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure claim throughput and candidate latency on a dedicated PostgreSQL cluster",
		Long: `Starts a throwaway PostgreSQL cluster (fsync off) and measures, in one run:
pgbench -N tps, claim+finish cycles/s through bmdb and the seed's way (the three
interleaved at each concurrency, --rounds times, each cell the median), and
candidate query latency in the steady profile. Prints one table and saves it
with the EXPLAIN (ANALYZE, BUFFERS) plans in --out. Ignores --db: it never
touches a configured database.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, f := range strings.Split(fleets, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(f))
				if err != nil || n < 100 {
					return usageError{fmt.Errorf("--fleets wants machine counts of at least 100 separated by commas, got %q", f)}
				}
				cfg.Fleets = append(cfg.Fleets, n)
			}
			if cfg.Duration < time.Second {
				return usageError{fmt.Errorf("--duration must be at least 1s, got %s", cfg.Duration)}
			}
			if cfg.Rounds < 1 {
				return usageError{fmt.Errorf("--rounds must be at least 1, got %d", cfg.Rounds)}
			}
			cfg.Progress = a.Err
			if exe, err := os.Executable(); err == nil {
				cfg.ShepherdBinary = exe
			}
			return bench.Run(cmd.Context(), cfg, a.Out)
		},
	}
	cmd.Flags().StringVar(&cfg.Dir, "out", "bench", "directory for the table and the query plans")
	cmd.Flags().DurationVar(&cfg.Duration, "duration", 10*time.Second, "length of each throughput measurement")
	cmd.Flags().IntVar(&cfg.Rounds, "rounds", 3, "interleaved rounds of throughput measurements; each cell is their median")
	cmd.Flags().StringVar(&fleets, "fleets", "100000,1000000", "steady fleet sizes for candidate latency")
	cmd.Flags().IntVar(&cfg.ClaimMachines, "claim-machines", 100_000, "fleet size for claim+finish")
	cmd.Flags().IntVar(&cfg.ClaimEligible, "claim-eligible", 10_000, "AgentStart candidates in the claim+finish fleet")
	cmd.Flags().IntVar(&cfg.Samples, "samples", 2000, "candidate queries timed per measurement")
	return cmd
}
