package bmdb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

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

	registered time.Time // when the claim's answer arrived
	fenced     chan struct{}
	fenceOnce  sync.Once
	fenceErr   error
}

// newWork registers claimed work with its session, which fences it.
func (s *Session) newWork(machine uuid.UUID, process Process) *Work {
	w := &Work{Machine: machine, Process: process, s: s, registered: time.Now(), fenced: make(chan struct{})}
	s.hold(w)
	return w
}

// fence tells whoever acts on the work to stop: the lease may have lapsed
// (ErrSessionExpired) or BMDB no longer has the work (ErrWorkLost).
func (w *Work) fence(err error) {
	w.fenceOnce.Do(func() {
		w.fenceErr = err
		close(w.fenced)
	})
}

// Context returns a context that ends with parent, and as soon as the work
// may no longer be held: when the session's local deadline passes without a
// confirmed renewal, when BMDB says the session is dead, or when a renewal
// finds the work gone. context.Cause tells which. Every side effect on the
// machine must run under it, so none starts after the lease may have lapsed
// and one in flight is abandoned.
func (w *Work) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	go func() {
		select {
		case <-w.fenced:
			cancel(w.fenceErr)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// Work claims a machine for process. candidates runs inside the claiming
// transaction and returns machines in order of preference; the first one the
// database lets this session lock is claimed and a Started event recorded. The
// database's exclusion index decides: a machine with conflicting work is
// skipped, whoever inserted that work. Returns ErrNothingToDo when no
// candidate could be claimed. The claim's check (see claim) covers what
// committed after the claim statement's snapshot, not after candidates' own:
// the shepherd's loops claim through ClaimAgentStart and ClaimRecovery, which
// search in the claim statement itself.
func (s *Session) Work(ctx context.Context, process Process, candidates func(tx pgx.Tx) ([]uuid.UUID, error)) (*Work, error) {
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	if err := s.releaseOrphans(ctx); err != nil {
		return nil, err
	}
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
		s.claimUnsure = transient(err)
		return nil, err
	}
	if claimed == uuid.Nil {
		return nil, ErrNothingToDo
	}
	return s.newWork(claimed, process), nil
}

// ClaimAgentStart claims an AgentStart candidate (see AgentStartCandidates)
// in a single statement: the search, the claim and its Started event commit
// together, with no transaction held open across round trips. The search
// starts at a random id, so concurrent claimers rarely meet; only when no
// candidate lies above that id does a second statement search from the
// lowest. Returns ErrNothingToDo when no machine is eligible.
func (s *Session) ClaimAgentStart(ctx context.Context) (*Work, error) {
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	if err := s.releaseOrphans(ctx); err != nil {
		return nil, err
	}
	start := uuid.New()
	for range 10 {
		w, found, err := s.claimOne(ctx, agentStartClaimCTE, start, ProcessShepherdAgentStart)
		switch {
		case err != nil || w != nil:
			return w, err
		case !found && start == uuid.Nil:
			return nil, ErrNothingToDo
		case !found:
			start = uuid.Nil // wrap around
		default:
			// A claimer that committed after this statement's snapshot
			// took the machine found: look again, from elsewhere.
			start = uuid.New()
		}
	}
	return nil, ErrNothingToDo
}

// ClaimRecovery claims a Recovery candidate under pol (see
// RecoveryCandidates) among the machines of the given provider types, in a
// single statement as ClaimAgentStart does: the candidates are read on the
// snapshot the claim's check starts from, so work that another shepherd
// started and ended on the machine after they were read (a reboot already
// done) aborts the claim instead of rebooting the machine again. Returns
// ErrNothingToDo when no machine of those providers needs recovery.
func (s *Session) ClaimRecovery(ctx context.Context, pol Policy, providers []string) (*Work, error) {
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	if err := s.releaseOrphans(ctx); err != nil {
		return nil, err
	}
	search := `search AS (` + recoverySQL(literalParams(pol), "", "p.provider = ANY ($1::text[])", 1) + `),`
	for range 10 {
		w, found, err := s.claimOne(ctx, search, providers, ProcessShepherdRecovery)
		switch {
		case err != nil || w != nil:
			return w, err
		case !found:
			return nil, ErrNothingToDo
		}
		// A claimer that committed after this statement's snapshot took
		// the machine found: look again, on a fresh snapshot.
	}
	return nil, ErrNothingToDo
}

// claimOne runs one claim of the first machine a search CTE yields (see
// claim), retried on serialization failures, and registers the work it
// claimed. found says whether the search found a machine at all.
func (s *Session) claimOne(ctx context.Context, search string, arg any, process Process) (w *Work, found bool, err error) {
	var claimed uuid.UUID
	err = retrying(func() (err error) {
		found, claimed, err = s.claim(ctx, s.conn.Pool, search, `SELECT machine_id FROM search`, arg, process)
		return err
	})
	switch {
	case err != nil:
		s.claimUnsure = transient(err)
		return nil, false, err
	case claimed != uuid.Nil:
		return s.newWork(claimed, process), true, nil
	}
	return nil, found, nil
}

// The search of ClaimAgentStart, written once: like AgentStartCandidates,
// the first from an id ($1) up. One search, not a search above and one below
// the id in the same statement: the plan is half as big, and a claim spends
// much of its time starting and ending its executor (23% more claim+finish
// cycles when the second search went).
var agentStartClaimCTE = `search AS (` + agentStartSQL(">=", "", 1) + `),`

// claim runs one statement that checks the session, claims the first machine
// the candidates query yields ($1 is arg; ctes, if any, end with a comma) and
// records the claim: the history row exists only if the claim did. found
// says whether there was a candidate at all. The insert's foreign key locks
// the session row, so the sweep cannot delete it under a claim. After its
// inserts the statement calls work_claim_verify (migration 0014), which reads
// the machine's history on a fresh snapshot and aborts the claim with a
// serialization failure if anyone else wrote to it after the statement's own
// snapshot: work that was claimed and ended under this claim. q is a pool
// (the statement is then its own transaction) or a transaction.
func (s *Session) claim(ctx context.Context, q rowQuerier, ctes, candidates string, arg any, process Process) (found bool, claimed uuid.UUID, err error) {
	var alive bool
	var id pgtype.UUID
	err = q.QueryRow(ctx, `
		WITH `+ctes+` alive AS (
			SELECT session_id FROM sessions WHERE session_id = $2 AND session_deadline > now()
		), candidate AS (`+candidates+` LIMIT 1
		), claimed AS (
			INSERT INTO work (machine_id, session_id, process, work_claim_seen)
			SELECT c.machine_id, a.session_id, $3::process, work_history_newest(c.machine_id)
			FROM candidate c, alive a
			ON CONFLICT DO NOTHING
			RETURNING machine_id, process, work_claim_seen
		), logged AS (
			INSERT INTO work_history (machine_id, process, event, session_id, session_component, session_host)
			SELECT machine_id, process, 'Started', $2, $4, $5 FROM claimed
			RETURNING machine_id
		)
		SELECT EXISTS (SELECT 1 FROM alive), EXISTS (SELECT 1 FROM candidate),
		       (SELECT work_claim_verify(c.machine_id, $2, c.work_claim_seen) FROM claimed c JOIN logged USING (machine_id))`,
		arg, s.id, string(process), s.component, s.host).Scan(&alive, &found, &id)
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

// releaseOrphans ends work that a claim whose answer was lost (the database
// went away around its commit) may have left under this session, so that no
// work row stays behind a live session with nobody working on it. Called with
// claimMu held: every claim before it has either registered its work or failed.
func (s *Session) releaseOrphans(ctx context.Context) error {
	if !s.claimUnsure {
		return nil
	}
	s.mu.Lock()
	var known []string
	for w := range s.works {
		known = append(known, w.Machine.String()+"/"+string(w.Process))
	}
	s.mu.Unlock()
	var n int
	err := untilRecorded(ctx, s, s.expired, func(ctx context.Context) error {
		return s.conn.Pool.QueryRow(ctx, `
			WITH released AS (
				DELETE FROM work WHERE session_id = $1 AND NOT (machine_id::text || '/' || process::text = ANY ($2::text[]))
				RETURNING machine_id, process
			), logged AS (
				INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
				SELECT machine_id, process, 'Canceled', 'claim not confirmed: BMDB was unreachable when it committed', $1, $3, $4 FROM released
			)
			SELECT count(*) FROM released`, s.id, known, s.component, s.host).Scan(&n)
	})
	if err != nil {
		return fmt.Errorf("releasing work of a claim whose answer was lost: %w", err)
	}
	if n > 0 {
		s.log.Warn("released work of a claim whose answer was lost", "session", s.id, "released", n)
	}
	s.claimUnsure = false
	return nil
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
// release), then work_release (migration 0014) checks the session, deletes the work row,
// records ev and, with clearBackoff, deletes the process's backoff. Without fn
// that statement is the whole transaction. If the session is dead or the work
// no longer held, nothing of it is committed. A release that fails for a
// transient reason is tried again until it is recorded or the session is
// known dead (then the sweep ends the work as Lost): the work row never
// outlives the work behind a live session.
func (w *Work) end(ctx context.Context, ev Event, cause string, clearBackoff bool, fn func(tx pgx.Tx) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return ErrWorkDone
	}
	release := func(ctx context.Context, q rowQuerier) error {
		var alive, released bool
		err := q.QueryRow(ctx, `SELECT alive, released FROM work_release($1, $2, $3, $4, $5, $6, $7, $8)`,
			w.Machine, string(w.Process), w.s.id, string(ev), cause, w.s.component, w.s.host, clearBackoff).Scan(&alive, &released)
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
	unsure := false // an earlier attempt may have committed
	err := untilRecorded(ctx, w.s, w.s.expired, func(ctx context.Context) error {
		err := retrying(func() error {
			if fn == nil {
				return release(ctx, w.s.conn.Pool)
			}
			return pgx.BeginFunc(ctx, w.s.conn.Pool, func(tx pgx.Tx) error {
				if err := fn(tx); err != nil {
					return err
				}
				return release(ctx, tx)
			})
		})
		if errors.Is(err, ErrWorkLost) && unsure && w.recorded(ctx, ev) {
			return nil
		}
		unsure = unsure || transient(err)
		return err
	})
	if err == nil || errors.Is(err, ErrWorkLost) || errors.Is(err, ErrSessionExpired) {
		w.done = true
		w.s.unhold(w)
		w.fence(ErrWorkDone)
	}
	return err
}

// recorded says whether this session's last event for the work is ev: an
// attempt whose answer was lost did commit.
func (w *Work) recorded(ctx context.Context, ev Event) bool {
	var last Event
	err := w.s.conn.Pool.QueryRow(ctx, `
		SELECT event FROM work_history WHERE machine_id = $1 AND process = $2 AND session_id = $3
		ORDER BY work_history_id DESC LIMIT 1`, w.Machine, w.Process, w.s.id).Scan(&last)
	return err == nil && last == ev
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
