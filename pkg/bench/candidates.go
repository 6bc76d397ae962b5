package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

type candidateQuery struct {
	name string
	run  func(ctx context.Context, tx pgx.Tx, limit int) ([]uuid.UUID, error)
}

var candidateQueries = []candidateQuery{
	{"AgentStart", bmdb.AgentStartCandidates},
	{"Recovery", func(ctx context.Context, tx pgx.Tx, limit int) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(ctx, tx, bmdb.DefaultPolicy(), limit)
	}},
}

// candidateLatencies times each candidate query as a worker runs it (a
// transaction, the query, its rows) and saves its plan to dir when dir is set.
func candidateLatencies(ctx context.Context, conn *bmdb.Conn, fleet, samples int, dir string) ([]Latency, error) {
	// Recovery's rule reads the breakers a shepherd evaluates every second:
	// evaluate them as one would while measuring.
	stop, err := evaluateBreakers(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer stop()
	var out []Latency
	for _, q := range candidateQueries {
		l := Latency{Query: q.name, Fleet: fleet, Limit: ClaimLimit}
		// Every candidate, to check the fleet is in the state we think.
		err := rollback(ctx, conn, func(tx pgx.Tx) error {
			ids, err := q.run(ctx, tx, 1<<30)
			l.Eligible = len(ids)
			return err
		})
		if err != nil {
			return nil, err
		}
		times := make([]time.Duration, 0, samples)
		for range samples {
			err := rollback(ctx, conn, func(tx pgx.Tx) error {
				start := time.Now()
				_, err := q.run(ctx, tx, l.Limit)
				times = append(times, time.Since(start))
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		slices.Sort(times)
		l.P50 = times[len(times)/2]
		l.P99 = times[len(times)*99/100]
		if dir != "" {
			l.Plan = filepath.Join(dir, fmt.Sprintf("plan-%s-%s.txt", strings.ToLower(q.name), fleetName(fleet)))
			if err := savePlan(ctx, conn, q, l, l.Plan); err != nil {
				return nil, err
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// evaluateBreakers evaluates the breakers now and then every second until
// stop, as a running shepherd does.
func evaluateBreakers(ctx context.Context, conn *bmdb.Conn) (stop func(), err error) {
	pol := bmdb.DefaultPolicy()
	if _, err := bmdb.EvaluateBreakers(ctx, conn.Pool, pol); err != nil {
		return nil, fmt.Errorf("evaluating breakers: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_, _ = bmdb.EvaluateBreakers(ctx, conn.Pool, pol)
			}
		}
	}()
	return func() { cancel(); <-done }, nil
}

func fleetName(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// rollback runs fn in a transaction that is rolled back: candidate queries
// lock what they return, and a measurement must leave nothing behind.
func rollback(ctx context.Context, conn *bmdb.Conn, fn func(tx pgx.Tx) error) error {
	tx, err := conn.Pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	return fn(tx)
}

// recordingTx remembers the last query run through it, so the plan saved is
// the plan of exactly the SQL bmdb sends.
type recordingTx struct {
	pgx.Tx
	sql  string
	args []any
}

func (r *recordingTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return r.Tx.Query(ctx, sql, args...)
}

func savePlan(ctx context.Context, conn *bmdb.Conn, q candidateQuery, l Latency, path string) error {
	var plan []string
	var sql string
	err := rollback(ctx, conn, func(tx pgx.Tx) error {
		rec := &recordingTx{Tx: tx}
		if _, err := q.run(ctx, rec, l.Limit); err != nil {
			return err
		}
		sql = rec.sql
		rows, _ := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+rec.sql, rec.args...)
		var err error
		plan, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return fmt.Errorf("explaining %s: %w", q.name, err)
	}
	text := fmt.Sprintf("%s candidates, limit %d, %d machines (steady profile), %d eligible\n\n%s\n\n%s\n",
		q.name, l.Limit, l.Fleet, l.Eligible, strings.TrimSpace(dedent(sql)), strings.Join(plan, "\n"))
	return os.WriteFile(path, []byte(text), 0o644)
}

func dedent(s string) string {
	lines := strings.Split(strings.Trim(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t\t")
	}
	return strings.Join(lines, "\n")
}

// heartbeats upserts heartbeats through bmdb.RecordHeartbeat from workers
// goroutines for d, cycling over a working set of healthy machines (each
// heart-beats every few seconds, as agents do), and reports how many of the
// updates were heap-only.
func heartbeats(ctx context.Context, conn *bmdb.Conn, workers int, d time.Duration) (HOTStats, error) {
	type agent struct {
		id  uuid.UUID
		key []byte
	}
	rows, _ := conn.Pool.Query(ctx, `
		SELECT h.machine_id, s.agent_public_key FROM machine_agent_heartbeat h
		JOIN machine_agent_started s USING (machine_id)
		WHERE h.agent_heartbeat_at > now() - interval '5 minutes'
		LIMIT 20000`)
	agents, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (agent, error) {
		var a agent
		err := r.Scan(&a.id, &a.key)
		return a, err
	})
	if err != nil {
		return HOTStats{}, err
	}
	if len(agents) == 0 {
		return HOTStats{}, fmt.Errorf("no healthy agents to heart-beat")
	}
	rand.Shuffle(len(agents), func(i, j int) { agents[i], agents[j] = agents[j], agents[i] })
	beat := func(a agent) error {
		ok, err := bmdb.RecordHeartbeat(ctx, conn.Pool, a.id, a.key)
		if err == nil && !ok {
			err = fmt.Errorf("heartbeat of %s refused", a.id)
		}
		return err
	}
	// First beats move the coarse time of machines seeded a while ago; the
	// steady state is the beats after.
	for _, a := range agents {
		if err := beat(a); err != nil {
			return HOTStats{}, err
		}
	}
	before, err := hotCounts(ctx, conn)
	if err != nil {
		return HOTStats{}, err
	}
	var next atomic.Int64
	var done atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for time.Now().Before(deadline) && gctx.Err() == nil {
				if err := beat(agents[int(next.Add(1))%len(agents)]); err != nil {
					return err
				}
				done.Add(1)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return HOTStats{}, err
	}
	elapsed := time.Since(start)
	after, err := hotCounts(ctx, conn)
	if err != nil {
		return HOTStats{}, err
	}
	return HOTStats{Updates: after[0] - before[0], HOT: after[1] - before[1], PerSec: float64(done.Load()) / elapsed.Seconds()}, nil
}

// hotCounts reads the heartbeat table's update counters once the statistics
// of finished transactions have been flushed.
func hotCounts(ctx context.Context, conn *bmdb.Conn) ([2]int64, error) {
	time.Sleep(1500 * time.Millisecond)
	var c [2]int64
	err := conn.Pool.QueryRow(ctx, `
		SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'machine_agent_heartbeat'`).Scan(&c[0], &c[1])
	return c, err
}

// brakesOf gives a seeded fleet what operators and the budget leave on a
// real one, so that the rules' holds, marks and budget read rows: holds on
// 0.1% of the healthy machines (half machine-wide, half for Recovery),
// needs-attention marks on 0.01% of them, and two Recovery starts in the
// last day (within the budget) on a tenth of the stale machines. Chosen by
// id, so a fleet's candidates stay the ones the seed made.
func brakesOf(ctx context.Context, conn *bmdb.Conn) error {
	_, err := conn.Pool.Exec(ctx, `
		INSERT INTO machine_holds (machine_id, process, hold_reason, hold_actor, hold_until)
		SELECT machine_id, CASE WHEN get_byte(uuid_send(machine_id), 1) < 128 THEN 'ShepherdRecovery'::process END,
		       'bench', 'bench@bench', CASE WHEN get_byte(uuid_send(machine_id), 2) < 128 THEN now() + interval '1 day' END
		FROM machine_agent_heartbeat
		WHERE agent_heartbeat_at > now() - interval '5 minutes' AND (get_byte(uuid_send(machine_id), 0) * 256 + get_byte(uuid_send(machine_id), 3)) < 66;
		INSERT INTO machine_attention (machine_id, process, attention_reason)
		SELECT machine_id, 'ShepherdRecovery', 'bench' FROM machine_agent_heartbeat
		WHERE agent_heartbeat_at > now() - interval '5 minutes' AND (get_byte(uuid_send(machine_id), 4) * 256 + get_byte(uuid_send(machine_id), 5)) < 7;
		INSERT INTO work_history (machine_id, process, event, event_at, cause)
		SELECT h.machine_id, 'ShepherdRecovery', 'Started', now() - n * interval '1 hour', 'bench'
		FROM (SELECT machine_id FROM machine_agent_heartbeat
		      WHERE agent_heartbeat_at < now() - interval '10 minutes' AND get_byte(uuid_send(machine_id), 7) < 26) h,
		     generate_series(1, 2) n;
		ANALYZE machine_holds, machine_attention, work_history`)
	return err
}

// explainLatency times bmdb.Explain, as bmctl explain runs it, on random
// machines of the fleet.
func explainLatency(ctx context.Context, conn *bmdb.Conn, fleet, samples int) (Latency, error) {
	l := Latency{Query: "explain", Fleet: fleet, Limit: 1}
	stop, err := evaluateBreakers(ctx, conn)
	if err != nil {
		return l, err
	}
	defer stop()
	pct := min(100, 200*float64(samples)/float64(max(fleet, 1)))
	rows, _ := conn.Pool.Query(ctx, `SELECT machine_id FROM machines TABLESAMPLE BERNOULLI ($1) LIMIT $2`, pct, samples)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return l, err
	}
	if len(ids) == 0 {
		return l, fmt.Errorf("no machines to explain")
	}
	times := make([]time.Duration, 0, len(ids))
	for _, id := range ids {
		start := time.Now()
		if _, err := bmdb.Explain(ctx, conn.Pool, id); err != nil {
			return l, fmt.Errorf("explaining %s: %w", id, err)
		}
		times = append(times, time.Since(start))
	}
	slices.Sort(times)
	l.P50, l.P99, l.Eligible = times[len(times)/2], times[len(times)*99/100], len(ids)
	return l, nil
}
