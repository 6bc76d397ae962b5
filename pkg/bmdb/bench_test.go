package bmdb_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bmctl/bmctl/internal/cpuuse"
	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/seed"
)

// Benchmarks, not tests: `go test -run '^$' -bench . ./pkg/bmdb/`. The
// database work happens only when a benchmark runs. `make bench` measures the
// same things at full scale beside pgbench (see pkg/bench).

// benchConn opens a fresh database with a seeded fleet of n machines.
func benchConn(b *testing.B, n int, p seed.Profile) *bmdb.Conn {
	b.Helper()
	ctx := context.Background()
	url := pgtest.URL(b)
	if strings.Contains(url, "?") {
		url += "&pool_max_conns=40"
	} else {
		url += "?pool_max_conns=40"
	}
	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(conn.Close)
	if _, err := seed.Seed(ctx, conn.Pool, seed.Options{Machines: n, Profile: p, Seed: uint64(n)}); err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Pool.Exec(ctx, `VACUUM (ANALYZE)`); err != nil {
		b.Fatal(err)
	}
	return conn
}

// BenchmarkClaimFinish: sessions each claim an AgentStart machine and finish
// it at once, over 10,000 provided machines none of which has an agent.
// Finishing sets no tag, so every machine stays a candidate. claim=statement
// is the shepherd's ClaimAgentStart, claim=work the general Work with
// AgentStartCandidates.
func BenchmarkClaimFinish(b *testing.B) {
	conn := benchConn(b, 10_000, seed.Profile{Name: "new", New: 1})
	claims := []struct {
		name  string
		claim func(ctx context.Context, s *bmdb.Session) (*bmdb.Work, error)
	}{
		{"statement", func(ctx context.Context, s *bmdb.Session) (*bmdb.Work, error) { return s.ClaimAgentStart(ctx) }},
		{"work", func(ctx context.Context, s *bmdb.Session) (*bmdb.Work, error) {
			return s.Work(ctx, bmdb.ProcessShepherdAgentStart, func(tx pgx.Tx) ([]uuid.UUID, error) {
				return bmdb.AgentStartCandidates(ctx, tx, 1)
			})
		}},
	}
	for _, c := range claims {
		for _, n := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("claim=%s/sessions=%d", c.name, n), func(b *testing.B) {
				ctx := context.Background()
				sessions := make([]*bmdb.Session, n)
				for i := range sessions {
					s, err := conn.StartSession(ctx, bmdb.SessionConfig{Component: "bench", Interval: time.Minute})
					if err != nil {
						b.Fatal(err)
					}
					defer s.Close(ctx)
					sessions[i] = s
				}
				var left, empty atomic.Int64
				left.Store(int64(b.N))
				cpu, err := cpuuse.Now()
				if err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				var g errgroup.Group
				for _, s := range sessions {
					g.Go(func() error {
						for left.Add(-1) >= 0 {
							w, err := c.claim(ctx, s)
							if errors.Is(err, bmdb.ErrNothingToDo) {
								// Lost a race for the same machine: try again.
								empty.Add(1)
								left.Add(1)
								continue
							}
							if err != nil {
								return err
							}
							if err := w.Finish(ctx, nil); err != nil {
								return err
							}
						}
						return nil
					})
				}
				if err := g.Wait(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "cycles/s")
				b.ReportMetric(float64(empty.Load())/float64(b.N), "empty/op")
				reportCPU(b, cpu)
			})
		}
	}
}

// BenchmarkAgentStartCandidates: one AgentStart candidate query (limit 1)
// in a steady fleet of 100,000 machines: 500 new, 99% healthy. The plan is
// logged (go test -v).
func BenchmarkAgentStartCandidates(b *testing.B) {
	conn := benchConn(b, 100_000, seed.Steady)
	b.Run("machines=100000", func(b *testing.B) {
		ctx := context.Background()
		query := func() error {
			tx, err := conn.Pool.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(ctx)
			ids, err := bmdb.AgentStartCandidates(ctx, tx, 1)
			if err == nil && len(ids) != 1 {
				err = fmt.Errorf("%d candidates, want 1", len(ids))
			}
			return err
		}
		for b.Loop() {
			if err := query(); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		b.Log("plan:\n" + agentStartPlan(b, conn))
	})
}

// agentStartPlan explains exactly the SQL AgentStartCandidates sends.
func agentStartPlan(b *testing.B, conn *bmdb.Conn) string {
	ctx := context.Background()
	tx, err := conn.Pool.Begin(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer tx.Rollback(ctx)
	rec := &recordingTx{Tx: tx}
	if _, err := bmdb.AgentStartCandidates(ctx, rec, 1); err != nil {
		b.Fatal(err)
	}
	rows, _ := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+rec.sql, rec.args...)
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		b.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

type recordingTx struct {
	pgx.Tx
	sql  string
	args []any
}

func (r *recordingTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return r.Tx.Query(ctx, sql, args...)
}

// reportCPU reports the machine's and this process's (the client's) CPU
// time per op since start.
func reportCPU(b *testing.B, start cpuuse.Sample) {
	machine, self, err := start.Since()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(machine.Microseconds())/float64(b.N), "machine-µs/op")
	b.ReportMetric(float64(self.Microseconds())/float64(b.N), "client-µs/op")
}
