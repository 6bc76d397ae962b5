package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/heartbeat/hbbench"
	"github.com/bmctl/bmctl/pkg/localpg"
)

func init() { devSubcommands = append(devSubcommands, newHeartbeatBenchCmd) }

func newHeartbeatBenchCmd(a *app) *cobra.Command {
	var (
		opt    hbbench.Options
		fastDB bool
	)
	cmd := &cobra.Command{
		Use:   "heartbeat-bench",
		Short: "Measure the heartbeats per second one heartbeat server sustains, and their latency",
		Long: `Starts a throwaway PostgreSQL cluster (never the configured BMDB), registers
--agents simulated agents with their own keys, serves the heartbeat endpoint on
127.0.0.1 and has every agent connect over its own mutual-TLS connection and
report its hardware, then heart-beat for --duration or --max-heartbeats,
whichever ends first. With --interval 0 each agent sends its next heartbeat as
soon as the last is answered (the server's capacity); with an interval, the
fleet offers agents/interval heartbeats per second.

Agents and server share this machine's CPUs, so the figure is a floor.`,
		Example: "  bmctl dev heartbeat-bench --agents 5000 --duration 20s",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opt.Agents < 1 || opt.Duration <= 0 || opt.MaxHeartbeats < 1 {
				return usageError{fmt.Errorf("--agents, --duration and --max-heartbeats must be positive")}
			}
			ctx := cmd.Context()
			dir, err := os.MkdirTemp("", "bmctl-hbbench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			cluster := &localpg.Cluster{Dir: filepath.Join(dir, "pg"), Fast: fastDB}
			if err := cluster.Start(ctx); err != nil {
				return err
			}
			defer func() {
				sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				_ = cluster.Stop(sctx)
			}()
			if err := cluster.CreateDatabase(ctx, "hbbench"); err != nil {
				return err
			}
			opt.DatabaseURL = cluster.URL("hbbench")
			if err := bmdb.MigrateUp(opt.DatabaseURL); err != nil {
				return err
			}
			opt.CADir = filepath.Join(dir, "ca")
			opt.DatabaseCPU = func() time.Duration { return clusterCPU(cluster) }
			opt.Logger = a.logger()
			res, err := hbbench.Run(ctx, opt)
			if err != nil {
				return err
			}
			mode := "closed loop (next heartbeat as soon as answered)"
			if opt.Interval > 0 {
				mode = fmt.Sprintf("every %s per agent (offered %.0f/s)", opt.Interval, float64(opt.Agents)/opt.Interval.Seconds())
			}
			fmt.Fprintf(a.Out, "agents:        %d, %s, database fsync %v\n", res.Agents, mode, !fastDB)
			fmt.Fprintf(a.Out, "first contact: %s for all agents (TLS handshake + hardware report)\n", res.Setup.Round(time.Millisecond))
			fmt.Fprintf(a.Out, "heartbeats:    %d accepted, %d failed in %s\n", res.Accepted, res.Failed, res.Elapsed.Round(time.Millisecond))
			fmt.Fprintf(a.Out, "throughput:    %.0f heartbeats/s\n", res.PerSecond)
			fmt.Fprintf(a.Out, "latency:       p50 %s  p90 %s  p99 %s  max %s\n", ms(res.P50), ms(res.P90), ms(res.P99), ms(res.Max))
			if res.Accepted > 0 {
				per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(res.Accepted) }
				fmt.Fprintf(a.Out, "cpu:           %.0fµs per heartbeat: %.0fµs agents and server (this process), %.0fµs database\n",
					per(res.CPU+res.DatabaseCPU), per(res.CPU), per(res.DatabaseCPU))
			}
			if load, err := os.ReadFile("/proc/loadavg"); err == nil {
				fmt.Fprintf(a.Out, "load average:  %s (on %d CPUs)\n", strings.Join(strings.Fields(string(load))[:3], " "), runtime.NumCPU())
			}
			if res.FirstError != "" {
				fmt.Fprintf(a.Out, "first failure: %s\n", res.FirstError)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&opt.Agents, "agents", 5000, "simulated agents, each with its own key and connection")
	f.DurationVar(&opt.Duration, "duration", 20*time.Second, "longest measured phase")
	f.Int64Var(&opt.MaxHeartbeats, "max-heartbeats", 2_000_000, "most heartbeats in the measured phase")
	f.DurationVar(&opt.Interval, "interval", 0, "each agent's heartbeat period (0: closed loop)")
	f.IntVar(&opt.PoolSize, "pool-size", 0, "the endpoint's database connections (0: default)")
	f.BoolVar(&fastDB, "fast-db", false, "turn fsync off in the throwaway database")
	return cmd
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// clusterCPU is the CPU time the cluster's postmaster and its backends have
// used, read from /proc (Linux); 0 where that is not possible.
func clusterCPU(c *localpg.Cluster) time.Duration {
	pidText, err := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	postmaster := strings.SplitN(string(pidText), "\n", 2)[0]
	entries, _ := os.ReadDir("/proc")
	var ticks int64
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15); comm may hold spaces.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 13 || (e.Name() != postmaster && f[1] != postmaster) {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ is 100 on Linux
}
