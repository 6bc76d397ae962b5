package bmdb

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// Work is a lock on a machine held by a session for a process. It must end
// with exactly one of Finish, Fail or Cancel.
type Work struct {
	Machine uuid.UUID
	Process Process

	s    *Session
	mu   sync.Mutex
	done bool
}

// Work claims a machine for process. candidates runs inside the claiming
// transaction and returns machines in order of preference; the first one the
// database lets this session lock is claimed and a Started event recorded. The
// database's exclusion index decides: a machine with conflicting work is
// skipped, whoever inserted that work. Returns ErrNothingToDo when no
// candidate could be claimed.
func (s *Session) Work(ctx context.Context, process Process, candidates func(tx pgx.Tx) ([]uuid.UUID, error)) (*Work, error) {
	var claimed uuid.UUID
	err := retrying(func() error {
		return pgx.BeginFunc(ctx, s.conn.Pool, func(tx pgx.Tx) error {
			claimed = uuid.Nil
			ids, err := candidates(tx)
			if err != nil {
				return err
			}
			for _, id := range ids {
				_, claimed, err = s.claim(ctx, tx, "", "SELECT $1::uuid AS machine_id", id, process)
				if err != nil {
					return fmt.Errorf("claiming machine %s: %w", id, err)
				}
				if claimed != uuid.Nil {
					return nil
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if claimed == uuid.Nil {
		return nil, ErrNothingToDo
	}
	return &Work{Machine: claimed, Process: process, s: s}, nil
}

// ClaimAgentStart claims an AgentStart candidate (see AgentStartCandidates)
// in a single statement: the search, the claim and its Started event commit
// together, with no transaction held open across round trips. Returns
// ErrNothingToDo when no machine is eligible.
func (s *Session) ClaimAgentStart(ctx context.Context) (*Work, error) {
	for range 10 {
		var (
			found   bool
			claimed uuid.UUID
		)
		err := retrying(func() (err error) {
			found, claimed, err = s.claim(ctx, s.conn.Pool, agentStartClaimCTEs, agentStartClaimCandidates, uuid.New(), ProcessShepherdAgentStart)
			return err
		})
		switch {
		case err != nil:
			return nil, err
		case claimed != uuid.Nil:
			return &Work{Machine: claimed, Process: ProcessShepherdAgentStart, s: s}, nil
		case !found:
			return nil, ErrNothingToDo
		}
		// A claimer that committed after this statement's snapshot took
		// the machine found: look again.
	}
	return nil, ErrNothingToDo
}

// The candidates of ClaimAgentStart, written once: like AgentStartCandidates,
// from a random id ($1) up, else from the lowest id.
var (
	agentStartClaimCTEs = `after AS (` + agentStartSQL(">=", "", 1) + `),
		before AS (` + agentStartSQL("<", "NOT EXISTS (SELECT 1 FROM after)", 1) + `),`
	agentStartClaimCandidates = `SELECT machine_id FROM after UNION ALL SELECT machine_id FROM before`
)

// claim runs one statement that checks the session, claims the first machine
// the candidates query yields ($1 is arg; ctes, if any, end with a comma) and
// records the claim: the history row exists only if the claim did. found says
// whether there was a candidate at all. The insert's foreign key locks the
// session row, so the sweep cannot delete it under a claim.
func (s *Session) claim(ctx context.Context, q rowQuerier, ctes, candidates string, arg any, process Process) (found bool, claimed uuid.UUID, err error) {
	var alive bool
	var id pgtype.UUID
	err = q.QueryRow(ctx, `
		WITH `+ctes+` alive AS (
			SELECT session_id FROM sessions WHERE session_id = $2 AND session_deadline > now()
		), candidate AS (`+candidates+` LIMIT 1
		), claimed AS (
			INSERT INTO work (machine_id, session_id, process)
			SELECT c.machine_id, a.session_id, $3::process FROM candidate c, alive a
			ON CONFLICT DO NOTHING
			RETURNING machine_id, process
		), logged AS (
			INSERT INTO work_history (machine_id, process, event, session_id, session_component, session_host)
			SELECT machine_id, process, 'Started', $2, $4, $5 FROM claimed
			RETURNING machine_id
		)
		SELECT EXISTS (SELECT 1 FROM alive), EXISTS (SELECT 1 FROM candidate), (SELECT machine_id FROM logged)`,
		arg, s.id, process, s.component, s.host).Scan(&alive, &found, &id)
	var pe *pgconn.PgError
	switch {
	case errors.As(err, &pe) && pe.ConstraintName == "work_session_id_fkey":
		// Closed while claiming: the row went after the check.
		s.markExpired()
		return false, uuid.Nil, ErrSessionExpired
	case err != nil:
		return false, uuid.Nil, err
	case !alive:
		s.markExpired()
		return false, uuid.Nil, ErrSessionExpired
	}
	return found, id.Bytes, nil
}

// rowQuerier is a pool or a transaction: claims and releases that are a
// single statement run on the pool, with no transaction around them.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Session is the session holding the work.
func (w *Work) Session() *Session { return w.s }

// SetDetail records the step the process is on ("dialing", "uploading agent"),
// for operators watching.
func (w *Work) SetDetail(ctx context.Context, detail string) error {
	return w.s.Transact(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE work SET work_detail = $4 WHERE machine_id = $1 AND process = $2 AND session_id = $3`,
			w.Machine, w.Process, w.s.id, detail)
		if err == nil && tag.RowsAffected() == 0 {
			return ErrWorkLost
		}
		return err
	})
}

// end releases the work: fn runs first (its changes land together with the
// release), then one statement checks the session, deletes the work row,
// records ev and, with clearBackoff, deletes the process's backoff. Without fn
// that statement is the whole transaction. If the session is dead or the work
// no longer held, nothing of it is committed.
func (w *Work) end(ctx context.Context, ev Event, cause string, clearBackoff bool, fn func(tx pgx.Tx) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return ErrWorkDone
	}
	release := func(q rowQuerier) error {
		var alive, released bool
		err := q.QueryRow(ctx, `
			WITH alive AS (
				SELECT 1 FROM sessions WHERE session_id = $3 AND session_deadline > now()
			), released AS (
				DELETE FROM work WHERE machine_id = $1 AND process = $2 AND session_id = $3
				AND EXISTS (SELECT 1 FROM alive)
				RETURNING machine_id, process
			), cleared AS (
				DELETE FROM work_backoff b USING released r
				WHERE $7 AND b.machine_id = r.machine_id AND b.process = r.process
			), logged AS (
				INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
				SELECT machine_id, process, $4, $5, $3, $6, $8 FROM released
				RETURNING 1
			)
			SELECT EXISTS (SELECT 1 FROM alive), EXISTS (SELECT 1 FROM logged)`,
			w.Machine, w.Process, w.s.id, ev, cause, w.s.component, clearBackoff, w.s.host).Scan(&alive, &released)
		switch {
		case err != nil:
			return err
		case !alive:
			w.s.markExpired()
			return ErrSessionExpired
		case !released:
			return ErrWorkLost
		}
		return nil
	}
	err := retrying(func() error {
		if fn == nil {
			return release(w.s.conn.Pool)
		}
		return pgx.BeginFunc(ctx, w.s.conn.Pool, func(tx pgx.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			return release(tx)
		})
	})
	if err == nil || errors.Is(err, ErrWorkLost) || errors.Is(err, ErrSessionExpired) {
		w.done = true
	}
	return err
}

// Finish ends the work successfully. fn, if not nil, runs in the same
// transaction (for example to set the tag the process produced); if it fails,
// nothing changes and the work is still held. Finishing clears the process's
// backoff.
func (w *Work) Finish(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return w.end(ctx, EventFinished, "", true, fn)
}

// Fail ends the work unsuccessfully with cause. With a policy, the machine is
// kept out of this process's candidates for the next backoff interval; the
// interval grows with each failure until a Finish.
func (w *Work) Fail(ctx context.Context, policy *Backoff, cause string) error {
	return w.end(ctx, EventFailed, cause, false, func(tx pgx.Tx) error {
		if policy == nil {
			return nil
		}
		var previous int64
		err := tx.QueryRow(ctx, `SELECT backoff_last_interval_seconds FROM work_backoff WHERE machine_id = $1 AND process = $2 FOR UPDATE`,
			w.Machine, w.Process).Scan(&previous)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		next := policy.Next(previous)
		_, err = tx.Exec(ctx, `
			INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds)
			VALUES ($1, $2, now() + $3::bigint * interval '1 second', $4, $3::bigint)
			ON CONFLICT (machine_id, process) DO UPDATE SET
				backoff_until = excluded.backoff_until,
				backoff_cause = excluded.backoff_cause,
				backoff_last_interval_seconds = excluded.backoff_last_interval_seconds`,
			w.Machine, w.Process, next, cause)
		return err
	})
}

// Cancel ends the work without success or failure (for example on shutdown);
// the backoff is left as it was.
func (w *Work) Cancel(ctx context.Context, cause string) error {
	return w.end(ctx, EventCanceled, cause, false, nil)
}
