package bmdb

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
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
	err := s.Transact(ctx, func(tx pgx.Tx) error {
		claimed = uuid.Nil
		ids, err := candidates(tx)
		if err != nil {
			return err
		}
		for _, id := range ids {
			// Claim and record it in one statement: one round trip less
			// per claim. The history row exists only if the claim did.
			tag, err := tx.Exec(ctx, `
				WITH claimed AS (
					INSERT INTO work (machine_id, session_id, process) VALUES ($1, $2, $3)
					ON CONFLICT DO NOTHING
					RETURNING machine_id, process)
				INSERT INTO work_history (machine_id, process, event, session_id, session_component, session_host)
				SELECT machine_id, process, 'Started', $2, $4, $5 FROM claimed`,
				id, s.id, process, s.component, s.host)
			if err != nil {
				return fmt.Errorf("claiming machine %s: %w", id, err)
			}
			if tag.RowsAffected() == 1 {
				claimed = id
				return nil
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if claimed == uuid.Nil {
		return nil, ErrNothingToDo
	}
	return &Work{Machine: claimed, Process: process, s: s}, nil
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

// end releases the work in one transaction: fn runs first (its changes land
// together with the release), then the work row is deleted, ev recorded and,
// with clearBackoff, the process's backoff deleted, all in one statement (one
// round trip). If the work is no longer held, nothing of it is committed.
func (w *Work) end(ctx context.Context, ev Event, cause string, clearBackoff bool, fn func(tx pgx.Tx) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return ErrWorkDone
	}
	err := w.s.Transact(ctx, func(tx pgx.Tx) error {
		if fn != nil {
			if err := fn(tx); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `
			WITH released AS (
				DELETE FROM work WHERE machine_id = $1 AND process = $2 AND session_id = $3
				RETURNING machine_id, process
			), cleared AS (
				DELETE FROM work_backoff b USING released r
				WHERE $7 AND b.machine_id = r.machine_id AND b.process = r.process
			)
			INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
			SELECT machine_id, process, $4, $5, $3, $6, $8 FROM released`,
			w.Machine, w.Process, w.s.id, ev, cause, w.s.component, clearBackoff, w.s.host)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrWorkLost
		}
		return nil
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
