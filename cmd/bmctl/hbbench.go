package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
	"github.com/bmctl/bmctl/pkg/heartbeat/hbbench"
	"github.com/bmctl/bmctl/pkg/localpg"
)

func init() { devSubcommands = append(devSubcommands, newHeartbeatBenchCmd) }

func newHeartbeatBenchCmd(a *app) *cobra.Command {
	var (
		opt       hbbench.Options
		fastDB    bool
		inProcess bool
		batchWait time.Duration
		ratio     bool
	)
	cmd := &cobra.Command{
		Use:   "heartbeat-bench",
		Short: "Measure the heartbeats per second one heartbeat server sustains, and their latency",
		Long: `Starts a throwaway PostgreSQL cluster (never the configured BMDB) and a
'bmctl server' process on 127.0.0.1 (--in-process: a server in this process),
registers --agents simulated agents with their own keys, and has every agent
connect over its own mutual-TLS connection and report its hardware, then
heart-beat for --duration or --max-heartbeats, whichever ends first. With --interval 0 each agent sends its next heartbeat as
soon as the last is answered (the server's capacity); with an interval, the
fleet offers agents/interval heartbeats per second.

Agents and server share this machine's CPUs, so the figure is a floor.`,
		Example: "  bmctl dev heartbeat-bench --agents 5000 --duration 20s",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opt.Agents < 1 || opt.Duration <= 0 || opt.MaxHeartbeats < 1 {
				return usageError{fmt.Errorf("--agents, --duration and --max-heartbeats must be positive")}
			}
			if batchWait < 0 || batchWait > time.Second {
				return usageError{fmt.Errorf("--batch-wait %s must be between 0 and 1s", batchWait)}
			}
			opt.BatchWait = noWaitIfZero(batchWait)
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
			opt.Logger = a.logger()
			if !inProcess {
				stop, err := startBenchServer(ctx, &opt)
				if err != nil {
					return err
				}
				defer stop()
			}
			dbMeter := hbbench.Meter{Name: "database", Read: func() time.Duration { return clusterCPU(cluster) }}
			opt.Meters = append(opt.Meters, dbMeter)
			res, err := hbbench.Run(ctx, opt)
			if err != nil {
				return err
			}
			mode := "closed loop (next heartbeat as soon as answered)"
			if opt.Interval > 0 {
				mode = fmt.Sprintf("every %s per agent (offered %.0f/s)", opt.Interval, float64(opt.Agents)/opt.Interval.Seconds())
			}
			fmt.Fprintf(a.Out, "agents:        %d, %s, database fsync %v, batch wait %s\n", res.Agents, mode, !fastDB, batchWait)
			fmt.Fprintf(a.Out, "first contact: %s for all agents (TLS handshake + hardware report)\n", res.Setup.Round(time.Millisecond))
			fmt.Fprintf(a.Out, "heartbeats:    %d accepted, %d failed in %s\n", res.Accepted, res.Failed, res.Elapsed.Round(time.Millisecond))
			fmt.Fprintf(a.Out, "throughput:    %.0f heartbeats/s\n", res.PerSecond)
			fmt.Fprintf(a.Out, "latency:       p50 %s  p90 %s  p99 %s  max %s\n", ms(res.P50), ms(res.P90), ms(res.P99), ms(res.Max))
			if res.ServerP99 > 0 {
				fmt.Fprintf(a.Out, "server side:   p50 ≤ %s  p99 ≤ %s (the endpoint's own histogram: request read to answer written)\n", bound(res.ServerP50), bound(res.ServerP99))
			}
			if res.Accepted > 0 {
				var parts []string
				for _, c := range res.CPU {
					name := c.Name
					if name == "bench" {
						name = "agents"
						if inProcess {
							name = "agents+server"
						}
					}
					parts = append(parts, fmt.Sprintf("%s %.0fµs", name, float64(c.Used.Microseconds())/float64(res.Accepted)))
				}
				fmt.Fprintf(a.Out, "cpu:           per heartbeat: %s\n", strings.Join(parts, ", "))
				fmt.Fprintf(a.Out, "wal:           %.0f bytes per heartbeat (%.1f MB/s)\n", float64(res.WALBytes)/float64(res.Accepted), float64(res.WALBytes)/1e6/res.Elapsed.Seconds())
			}
			if load, err := os.ReadFile("/proc/loadavg"); err == nil {
				fmt.Fprintf(a.Out, "load average:  %s (on %d CPUs)\n", strings.Join(strings.Fields(string(load))[:3], " "), runtime.NumCPU())
			}
			if res.FirstError != "" {
				fmt.Fprintf(a.Out, "first failure: %s\n", res.FirstError)
			}
			if !ratio {
				return nil
			}
			return ratioTable(ctx, a, opt, res, dbMeter, filepath.Join(dir, "bare-ca"))
		},
	}
	f := cmd.Flags()
	f.IntVar(&opt.Agents, "agents", 5000, "simulated agents, each with its own key and connection")
	f.DurationVar(&opt.Duration, "duration", 20*time.Second, "longest measured phase")
	f.Int64Var(&opt.MaxHeartbeats, "max-heartbeats", 2_000_000, "most heartbeats in the measured phase")
	f.DurationVar(&opt.Interval, "interval", 0, "each agent's heartbeat period (0: closed loop)")
	f.IntVar(&opt.PoolSize, "pool-size", 0, "the endpoint's database connections (0: default)")
	f.BoolVar(&fastDB, "fast-db", false, "turn fsync off in the throwaway database")
	f.BoolVar(&inProcess, "in-process", false, "serve the endpoint in this process instead of a bmctl server process")
	f.BoolVar(&ratio, "ratio", false, "then measure the transport ceiling (a bare mutual-TLS server, no database) and the database ceiling (a plain batched upsert loop), and print bmctl's ratio to each")
	f.DurationVar(&batchWait, "batch-wait", heartbeat.DefaultBatchWait, "the endpoint's --batch-wait: longest a heartbeat waits to share a commit (0: none)")
	return cmd
}

// ratioTable measures the two ceilings after the endpoint's run, on the
// same database and machine, and prints the three side by side.
func ratioTable(ctx context.Context, a *app, opt hbbench.Options, bmctl hbbench.Result, db hbbench.Meter, caDir string) error {
	interval := opt.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	bare, ca, stop, err := hbbench.ServeBare(caDir, interval)
	if err != nil {
		return err
	}
	topt := opt
	topt.Endpoint, topt.EndpointCA, topt.Meters = bare, ca, []hbbench.Meter{db}
	transport, err := hbbench.Run(ctx, topt)
	stop()
	if err != nil {
		return fmt.Errorf("transport ceiling: %w", err)
	}
	const workers = 4
	batch := min(500, opt.Agents/workers)
	if batch < 1 {
		return usageError{errors.New("--ratio needs at least 4 agents")}
	}
	dopt := opt
	dopt.Meters = []hbbench.Meter{db}
	upserts, err := hbbench.UpsertCeiling(ctx, dopt, workers, batch)
	if err != nil {
		return fmt.Errorf("database ceiling: %w", err)
	}
	cpu := func(r hbbench.Result, name string) string {
		for _, c := range r.CPU {
			if c.Name == name && r.Accepted > 0 {
				return fmt.Sprintf("%.0fµs", float64(c.Used.Microseconds())/float64(r.Accepted))
			}
		}
		return "-"
	}
	fmt.Fprintf(a.Out, "\nratio table (measured back to back in this run, same machine and database):\n")
	tw := tabwriter.NewWriter(a.Out, 0, 4, 2, ' ', 0)
	wal := func(r hbbench.Result) string {
		if r.Accepted == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0fB", float64(r.WALBytes)/float64(r.Accepted))
	}
	fmt.Fprintln(tw, "\theartbeats/s\tp50\tp99\tdatabase cpu/heartbeat\twal/heartbeat\tbmctl's ratio")
	fmt.Fprintf(tw, "bmctl endpoint\t%.0f\t%s\t%s\t%s\t%s\t\n", bmctl.PerSecond, ms(bmctl.P50), ms(bmctl.P99), cpu(bmctl, "database"), wal(bmctl))
	fmt.Fprintf(tw, "transport ceiling\t%.0f\t%s\t%s\t%s\t%s\t%.2f\n",
		transport.PerSecond, ms(transport.P50), ms(transport.P99), cpu(transport, "database"), wal(transport), bmctl.PerSecond/transport.PerSecond)
	fmt.Fprintf(tw, "database ceiling\t%.0f\t%s\t%s\t%s\t%s\t%.2f\n",
		upserts.PerSecond, ms(upserts.P50), ms(upserts.P99), cpu(upserts, "database"), wal(upserts), bmctl.PerSecond/upserts.PerSecond)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.Out, "transport ceiling: the same agents against a bare mutual-TLS server in the bench process that answers without the database")
	fmt.Fprintf(a.Out, "database ceiling:  %d connections upserting %d heartbeat rows per statement in a closed loop, no checks (latency per statement)\n", workers, batch)
	if opt.Interval > 0 {
		fmt.Fprintln(a.Out, "(with --interval the endpoint and the transport ceiling serve the offered load; compare latency and CPU; the database ceiling is a closed loop)")
	}
	return nil
}

// bound renders a histogram bucket's upper bound.
func bound(d time.Duration) string {
	if d == time.Duration(math.MaxInt64) {
		return "+Inf"
	}
	return ms(d)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// startBenchServer starts `bmctl server` on the bench's database, with its
// per-agent limit lifted (the bench measures capacity), and points opt at
// it. stop ends it.
func startBenchServer(ctx context.Context, opt *hbbench.Options) (stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "server", "--db", opt.DatabaseURL, "--listen", "127.0.0.1:0",
		"--dev-ca-dir", opt.CADir, "--dev-ca-hosts", "127.0.0.1", "--agent-rate", "1e9", "--batch-wait", max(0, opt.BatchWait).String())
	if opt.PoolSize > 0 {
		cmd.Args[3] += fmt.Sprintf("&pool_max_conns=%d", opt.PoolSize)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop = func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	// The server says where it listens in its first log line; what it logs
	// later goes on to the bench's log.
	listening := regexp.MustCompile(`url=(https://\S+)`)
	found := make(chan string, 1)
	var lines []string
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil && !sent {
				found <- m[1]
				sent = true
			}
			if len(lines) < 20 {
				lines = append(lines, sc.Text())
			}
			opt.Logger.Debug("server: " + sc.Text())
		}
		close(found)
	}()
	select {
	case url, ok := <-found:
		if !ok {
			stop()
			return nil, fmt.Errorf("bmctl server exited before listening: %s", strings.Join(lines, "; "))
		}
		opt.Endpoint = url
	case <-time.After(time.Minute):
		stop()
		return nil, errors.New("bmctl server did not start listening within a minute")
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	if opt.EndpointCA, err = os.ReadFile(devca.CertPath(opt.CADir)); err != nil {
		stop()
		return nil, err
	}
	pid := cmd.Process.Pid
	opt.Meters = append(opt.Meters, hbbench.Meter{Name: "server", Read: func() time.Duration { return procCPU(strconv.Itoa(pid)) }})
	return stop, nil
}

// procCPU is the CPU time process pid has used, from /proc (Linux).
func procCPU(pid string) time.Duration {
	f := procStat(pid)
	if f == nil {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// procStat is /proc/<pid>/stat after the command name: state, ppid, ...
func procStat(pid string) []string {
	stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return nil
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])) // the name may hold spaces
	if len(f) < 13 {
		return nil
	}
	return f
}

// clusterCPU is the CPU time the cluster's postmaster and its backends have
// used; 0 where /proc cannot tell.
func clusterCPU(c *localpg.Cluster) time.Duration {
	pidText, err := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	postmaster := strings.SplitN(string(pidText), "\n", 2)[0]
	entries, _ := os.ReadDir("/proc")
	var total time.Duration
	for _, e := range entries {
		if f := procStat(e.Name()); f != nil && (e.Name() == postmaster || f[1] == postmaster) {
			total += procCPU(e.Name())
		}
	}
	return total
}
