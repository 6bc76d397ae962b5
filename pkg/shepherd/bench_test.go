package shepherd_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// benchMachines is the fleet BenchmarkAgentStart brings up.
const benchMachines = 500

// BenchmarkAgentStart measures one shepherd with 32 AgentStart workers
// bringing 500 simulated machines (in-process SSH servers) from provided to
// agent-started with the real agent, the bmctl binary built for the run:
// dial, pin the host key, check the agent's digest, upload it over SFTP if
// the machine lacks it, run it, check its reply, set the tag. One op is the
// whole fleet. "first" starts from machines that have no agent (as after a
// power cycle), "restart" from machines that still have it (as when agents
// are restarted): nothing should be uploaded again.
//
//	go test -run '^$' -bench AgentStart ./pkg/shepherd/
func BenchmarkAgentStart(b *testing.B) {
	e := newEnv(b)
	e.agentBin = filepath.Join(b.TempDir(), "bmctl")
	if out, err := exec.Command("go", "build", "-o", e.agentBin, "../../cmd/bmctl").CombinedOutput(); err != nil {
		b.Fatalf("building bmctl as the agent: %v\n%s", err, out)
	}
	st, err := os.Stat(e.agentBin)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("agent binary: %d bytes", st.Size())
	var machines []*sshsim.Machine
	for range benchMachines {
		m, _, _ := e.machine()
		machines = append(machines, m)
	}
	moved := func() (n int64) {
		for _, m := range machines {
			n += m.BytesReceived()
		}
		return n
	}
	for _, round := range []struct {
		name  string
		fresh bool
	}{{"first", true}, {"restart", false}} {
		b.Run(round.name+"/parallelism=32", func(b *testing.B) {
			ctx := context.Background()
			cfg := e.agentStart()
			cfg.Parallelism = 32
			cfg.QueryRate = 0
			cfg.IdleWait = 10 * time.Millisecond
			cfg.ExecTimeout = time.Minute
			log := slog.New(slog.DiscardHandler)

			var total time.Duration
			var bytes int64
			for b.Loop() {
				b.StopTimer()
				if round.fresh {
					for _, m := range machines {
						if err := m.PowerCycle(ctx, 0); err != nil { // empties its /tmp
							b.Fatal(err)
						}
					}
				}
				// Every round starts from provided machines nobody has seen.
				if err := pgx.BeginFunc(ctx, e.conn.Pool, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, `DELETE FROM machine_agent_started; DELETE FROM machine_ssh_host_key; DELETE FROM work_history`)
					return err
				}); err != nil {
					b.Fatal(err)
				}
				before := moved()
				b.StartTimer()
				start := time.Now()
				stop := e.run(shepherd.Config{AgentStart: cfg, Logger: log, SessionInterval: 10 * time.Second})
				for e.count(`SELECT count(*) FROM machine_agent_started`) < benchMachines {
					time.Sleep(5 * time.Millisecond)
				}
				total += time.Since(start)
				b.StopTimer()
				stop()
				bytes += moved() - before
				if n := e.count(`SELECT count(*) FROM work_history WHERE event <> 'Started' AND event <> 'Finished'`); n != 0 {
					b.Fatalf("%d work items did not finish", n)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(benchMachines*b.N)/total.Seconds(), "machines/s")
			b.ReportMetric(total.Seconds()/float64(b.N), "s/fleet")
			b.ReportMetric(float64(bytes)/float64(b.N)/1e6, "MB-uploaded/fleet")
		})
	}
}
