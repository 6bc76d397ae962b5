package shepherd_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/shepherd"
)

// benchMachines is the fleet BenchmarkAgentStart brings up.
const benchMachines = 500

// BenchmarkAgentStart measures one shepherd with 1, 8 and 32 AgentStart
// workers bringing 500 simulated machines (in-process SSH servers) from
// provided to agent-started: dial, pin the host key, upload a 1 MiB agent
// over SFTP, run it, check its reply, set the tag. One op is the whole fleet.
//
//	go test -run '^$' -bench AgentStart ./pkg/shepherd/
func BenchmarkAgentStart(b *testing.B) {
	for _, par := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("parallelism=%d", par), func(b *testing.B) {
			e := newEnv(b)
			bin := make([]byte, 1<<20)
			_, _ = rand.Read(bin)
			e.agentBin = filepath.Join(b.TempDir(), "agent")
			if err := os.WriteFile(e.agentBin, bin, 0o755); err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			for range benchMachines {
				e.machine()
			}
			cfg := e.agentStart()
			cfg.Parallelism = par
			cfg.QueryRate = 0
			cfg.IdleWait = 10 * time.Millisecond
			log := slog.New(slog.DiscardHandler)

			var total time.Duration
			var claimMs float64
			for b.Loop() {
				b.StopTimer()
				// Every round starts from provided machines nobody has seen.
				if err := pgx.BeginFunc(ctx, e.conn.Pool, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, `DELETE FROM machine_agent_started; DELETE FROM machine_ssh_host_key; DELETE FROM work_history`)
					return err
				}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				stop := e.run(shepherd.Config{AgentStart: cfg, Logger: log, SessionInterval: 10 * time.Second})
				for e.count(`SELECT count(*) FROM machine_agent_started`) < benchMachines {
					time.Sleep(5 * time.Millisecond)
				}
				total += time.Since(start)
				b.StopTimer()
				stop()
				if n := e.count(`SELECT count(*) FROM work_history WHERE event <> 'Started' AND event <> 'Finished'`); n != 0 {
					b.Fatalf("%d work items did not finish", n)
				}
				// How long one machine's work took, claim to finish: with
				// more workers than cores it grows as they share the CPU.
				var ms float64
				if err := e.conn.Pool.QueryRow(ctx, `
					SELECT avg(extract(epoch FROM f.event_at - s.event_at) * 1000) FROM work_history s
					JOIN work_history f ON f.machine_id = s.machine_id AND f.event = 'Finished'
					WHERE s.event = 'Started'`).Scan(&ms); err != nil {
					b.Fatal(err)
				}
				claimMs += ms
				b.StartTimer()
			}
			b.ReportMetric(float64(benchMachines*b.N)/total.Seconds(), "machines/s")
			b.ReportMetric(claimMs/float64(b.N), "ms/machine")
		})
	}
}
