package bench

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/bmctl/bmctl/internal/cpuuse"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// ClaimLimit is how many candidates a claim asks for: the next machine.
const ClaimLimit = 1

// claimFinish runs n sessions, each claiming an AgentStart machine as the
// shepherd does (bmdb's ClaimAgentStart) and finishing it at once, for d.
// Finishing sets no tag, so the machine stays eligible and the eligible count
// stays put.
func claimFinish(ctx context.Context, conn *bmdb.Conn, n int, d time.Duration) (Throughput, error) {
	return runSessions(ctx, conn, n, d, func(ctx context.Context, s *bmdb.Session, t *counters) error {
		w, err := s.ClaimAgentStart(ctx)
		if errors.Is(err, bmdb.ErrNothingToDo) {
			t.empty.Add(1)
			return nil
		}
		if err != nil {
			return err
		}
		if err := w.Finish(ctx, nil); err != nil {
			return err
		}
		t.cycles.Add(1)
		return nil
	})
}

type counters struct{ cycles, empty, retries atomic.Int64 }

func runSessions(ctx context.Context, conn *bmdb.Conn, n int, d time.Duration,
	cycle func(ctx context.Context, s *bmdb.Session, t *counters) error) (Throughput, error) {
	sessions := make([]*bmdb.Session, n)
	for i := range sessions {
		s, err := conn.StartSession(ctx, bmdb.SessionConfig{Component: "bench", Interval: 30 * time.Second})
		if err != nil {
			return Throughput{}, err
		}
		sessions[i] = s
		defer s.Close(context.Background())
	}
	if err := settle(ctx, conn); err != nil {
		return Throughput{}, err
	}
	var t counters
	cpu, err := cpuuse.Now()
	if err != nil {
		return Throughput{}, err
	}
	start := time.Now()
	deadline := start.Add(d)
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range sessions {
		g.Go(func() error {
			for time.Now().Before(deadline) && gctx.Err() == nil {
				if err := cycle(gctx, s, &t); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err = g.Wait()
	elapsed := time.Since(start)
	machine, client, cerr := cpu.Since()
	cycles := max(t.cycles.Load(), 1)
	return Throughput{
		CyclesPerSec: float64(t.cycles.Load()) / elapsed.Seconds(),
		Cycles:       int(t.cycles.Load()),
		Empty:        int(t.empty.Load()),
		Retries:      int(t.retries.Load()),
		MachineCPU:   machine / time.Duration(cycles),
		ClientCPU:    client / time.Duration(cycles),
	}, cmp.Or(err, cerr)
}

// The seed's AgentStart query: every machine anti-joined against its agent
// tag, any shepherd work and its backoff, relying on SERIALIZABLE to make
// the select-time "no work" check safe.
const seedAgentStartQuery = `
SELECT machine_provided.machine_id
FROM machines
INNER JOIN machine_provided ON machines.machine_id = machine_provided.machine_id
LEFT JOIN work ON machines.machine_id = work.machine_id
  AND work.process IN ('ShepherdAccess', 'ShepherdAgentStart', 'ShepherdRecovery')
LEFT JOIN work_backoff ON machines.machine_id = work_backoff.machine_id
  AND work_backoff.backoff_until > now() AND work_backoff.process = 'ShepherdAgentStart'
LEFT JOIN machine_agent_started ON machines.machine_id = machine_agent_started.machine_id
WHERE machine_agent_started.machine_id IS NULL
  AND work.machine_id IS NULL
  AND work_backoff.machine_id IS NULL
LIMIT $1`

// seedWay is the same cycle as claimFinish done the seed's way: the
// select-time exclusion query, then a plain insert, each transaction under
// SERIALIZABLE and retried on serialization failures.
func seedWay(ctx context.Context, conn *bmdb.Conn, n int, d time.Duration) (Throughput, error) {
	return runSessions(ctx, conn, n, d, func(ctx context.Context, s *bmdb.Session, t *counters) error {
		var claimed uuid.UUID
		err := serializable(ctx, conn, s, t, func(tx pgx.Tx) error {
			claimed = uuid.Nil
			rows, _ := tx.Query(ctx, seedAgentStartQuery, ClaimLimit)
			ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			if err != nil || len(ids) == 0 {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO work (machine_id, session_id, process) VALUES ($1, $2, 'ShepherdAgentStart')`,
				ids[0], s.ID()); err != nil {
				return err
			}
			claimed = ids[0]
			return history(ctx, tx, s, claimed, bmdb.EventStarted)
		})
		if err != nil {
			return err
		}
		if claimed == uuid.Nil {
			t.empty.Add(1)
			return nil
		}
		err = serializable(ctx, conn, s, t, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `DELETE FROM work WHERE machine_id = $1 AND process = 'ShepherdAgentStart' AND session_id = $2`,
				claimed, s.ID()); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM work_backoff WHERE machine_id = $1 AND process = 'ShepherdAgentStart'`, claimed); err != nil {
				return err
			}
			return history(ctx, tx, s, claimed, bmdb.EventFinished)
		})
		if err != nil {
			return err
		}
		t.cycles.Add(1)
		return nil
	})
}

func history(ctx context.Context, tx pgx.Tx, s *bmdb.Session, machine uuid.UUID, ev bmdb.Event) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO work_history (machine_id, process, event, session_id, session_component, session_host)
		VALUES ($1, 'ShepherdAgentStart', $2, $3, $4, 'bench')`, machine, ev, s.ID(), s.Component())
	return err
}

// serializable runs fn under SERIALIZABLE after the same session check bmdb
// makes, retrying serialization failures (and the unique violations a lost
// race can surface as) with the same jitter as bmdb, for as long as it takes:
// at 16 sessions a transaction can fail a hundred times in a row, and giving
// up on a finish would leave its machine locked.
func serializable(ctx context.Context, conn *bmdb.Conn, s *bmdb.Session, t *counters, fn func(tx pgx.Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := pgx.BeginTxFunc(ctx, conn.Pool, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
			var alive bool
			if err := tx.QueryRow(ctx, `SELECT session_deadline > now() FROM sessions WHERE session_id = $1 FOR KEY SHARE`, s.ID()).Scan(&alive); err != nil {
				return err
			}
			if !alive {
				return bmdb.ErrSessionExpired
			}
			return fn(tx)
		})
		var pe *pgconn.PgError
		if ctx.Err() == nil && errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "23505") {
			t.retries.Add(1)
			time.Sleep(time.Duration(rand.IntN(5*(min(attempt, 10)+1))) * time.Millisecond)
			continue
		}
		return err
	}
}
