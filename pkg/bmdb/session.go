package bmdb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// SessionConfig describes the component that starts a session.
type SessionConfig struct {
	// Component names what holds the session ("shepherd-agentstart").
	Component string
	// Interval is the lease: the session dies when not poked for this long.
	// It is poked every Interval/2. Defaults to 10s; minimum 1s.
	Interval time.Duration
	// Version of the component, recorded for operators.
	Version string
	// Logger receives heartbeat and sweep failures. Defaults to slog.Default.
	Logger *slog.Logger
}

// SweepGrace is how long past its deadline a session is left before the sweep
// deletes it and records its work as lost.
const SweepGrace = 2 * time.Second

// FenceMargin is how much of a confirmed lease a session gives up on purpose:
// a renewal sent at local time t confirms the lease until t+Interval on
// BMDB's side (the database sets its deadline after it receives the request),
// so the session counts itself alive only until t+Interval−FenceMargin. The
// margin covers a request to a machine that is in flight when the local
// deadline passes (it is abandoned, and lands before the database can give
// the machine away), and the drift between the two clocks' rates over one
// interval, which is parts per million. No wall-clock agreement is assumed:
// the local deadline is measured on this host's monotonic clock from when the
// renewal was sent.
func FenceMargin(interval time.Duration) time.Duration {
	return max(interval/5, 200*time.Millisecond)
}

// renewEvery is how often a session renews its lease. An outage shorter than
// Interval − renewEvery − FenceMargin (about half the interval) costs no
// session: failed renewals are retried until the local deadline.
func renewEvery(interval time.Duration) time.Duration { return interval / 3 }

// Session is a component's liveness lease in BMDB. Work claimed under it dies
// with it.
type Session struct {
	conn      *Conn
	id        uuid.UUID
	component string
	host      string
	interval  time.Duration
	log       *slog.Logger

	cancel   context.CancelFunc
	stopped  chan struct{}
	expired  chan struct{}
	expireMu sync.Once

	mu       sync.Mutex
	lapsesAt time.Time          // the local deadline: last confirmed lease minus FenceMargin
	works    map[*Work]struct{} // held work, fenced when the lease lapses
	sweeping sync.Mutex

	// claimMu orders claims, so an orphan left by a claim whose answer was
	// lost is released before the next claim (see releaseOrphans).
	claimMu     sync.Mutex
	claimUnsure bool
}

// StartSession creates a session and keeps it alive in the background until
// Close, or until it expires because BMDB could not be reached in time.
func (c *Conn) StartSession(ctx context.Context, cfg SessionConfig) (*Session, error) {
	if cfg.Component == "" {
		return nil, errors.New("session needs a component name")
	}
	if cfg.Interval == 0 {
		cfg.Interval = 10 * time.Second
	}
	if cfg.Interval < time.Second {
		cfg.Interval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	host, _ := os.Hostname()
	secs := int(cfg.Interval.Round(time.Second) / time.Second)
	s := &Session{
		conn:      c,
		component: cfg.Component,
		host:      host,
		interval:  time.Duration(secs) * time.Second,
		log:       cfg.Logger,
		stopped:   make(chan struct{}),
		expired:   make(chan struct{}),
		works:     map[*Work]struct{}{},
	}
	// The insert is not cut short by ctx: a cancellation racing the commit
	// could leave a session row nobody closes. ctx is checked after it.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	sent := time.Now()
	err := c.Pool.QueryRow(ictx, `
		INSERT INTO sessions (session_component, session_host, session_pid, session_version, session_interval_seconds, session_deadline)
		VALUES ($1, $2, $3, $4, $5::int, now() + $5::int * interval '1 second')
		RETURNING session_id`,
		cfg.Component, host, os.Getpid(), cfg.Version, secs).Scan(&s.id)
	if err != nil {
		return nil, fmt.Errorf("starting session: %w", err)
	}
	s.lapsesAt = sent.Add(s.interval - FenceMargin(s.interval))
	hctx, stop := context.WithCancel(context.Background())
	s.cancel = stop
	go s.keepAlive(hctx)
	if ctx.Err() != nil {
		_ = s.Close(ictx)
		return nil, ctx.Err()
	}
	return s, nil
}

// ID is the session's id, recorded in work and history.
func (s *Session) ID() uuid.UUID { return s.id }

// Component is the name the session was started with.
func (s *Session) Component() string { return s.component }

// Expired is closed when the session is dead or may be: BMDB said so, or its
// lease lapsed locally (no renewal confirmed in time). Nothing may be done
// under it after that; start a new one.
func (s *Session) Expired() <-chan struct{} { return s.expired }

// LapsesAt is the local deadline: when the session stops counting itself
// alive unless a renewal is confirmed first.
func (s *Session) LapsesAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lapsesAt
}

func (s *Session) markExpired() {
	s.expireMu.Do(func() {
		close(s.expired)
		s.mu.Lock()
		works := s.works
		s.works = map[*Work]struct{}{}
		s.mu.Unlock()
		for w := range works {
			w.fence(ErrSessionExpired)
		}
	})
}

// keepAlive renews the lease every renewEvery, retrying a failed renewal at
// once and then after short jittered pauses, and expires the session when
// the local deadline passes without a confirmed renewal, even while a
// renewal is still waiting for a frozen database.
func (s *Session) keepAlive(ctx context.Context) {
	defer close(s.stopped)
	// Workers that start together renew at spread-out moments, so one blip
	// does not meet all of their renewals at once.
	next := time.Now().Add(renewEvery(s.interval)/2 + jitter(renewEvery(s.interval)/2))
	failures := 0
	for {
		lapse := time.NewTimer(time.Until(s.LapsesAt()))
		wait := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			lapse.Stop()
			wait.Stop()
			return
		case <-lapse.C:
			wait.Stop()
			s.log.Warn("session lease lapsed: no renewal confirmed in time; abandoning its work", "session", s.id, "component", s.component)
			s.markExpired()
			return
		case <-wait.C:
			lapse.Stop()
		}
		sent := time.Now()
		alive, held, err := s.renew(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			failures++
			if failures == 1 {
				s.log.Warn("session renewal failed; retrying", "session", s.id, "err", err, "lapses_in", time.Until(s.LapsesAt()).Round(time.Millisecond))
			}
			// Once at once, then 50–250 ms apart, until the lease lapses.
			next = time.Now()
			if failures > 1 {
				next = next.Add(50*time.Millisecond + jitter(200*time.Millisecond))
			}
			continue
		case !alive:
			s.log.Warn("session expired", "session", s.id, "component", s.component)
			s.markExpired()
			return
		}
		if failures > 0 {
			s.log.Info("session renewed again", "session", s.id, "failed_attempts", failures)
		}
		failures = 0
		s.confirmed(sent, held)
		next = sent.Add(renewEvery(s.interval) - renewEvery(s.interval)/10 + jitter(renewEvery(s.interval)/5))
		go s.sweep(ctx)
	}
}

// renew extends the lease and returns the work BMDB says the session holds.
// It gives up when the local deadline passes.
func (s *Session) renew(ctx context.Context) (alive bool, held map[workKey]*CancelRequest, err error) {
	rctx, cancel := context.WithDeadline(ctx, s.LapsesAt())
	defer cancel()
	rows, err := s.conn.Pool.Query(rctx, `
		WITH renewed AS (
			UPDATE sessions SET session_deadline = now() + session_interval_seconds * interval '1 second'
			WHERE session_id = $1 AND session_deadline > now()
			RETURNING session_id
		)
		SELECT NULL::uuid, NULL::process, false, '', '' FROM renewed
		UNION ALL
		SELECT w.machine_id, w.process, w.work_cancel_requested_at IS NOT NULL,
		       coalesce(w.work_cancel_actor, ''), coalesce(w.work_cancel_reason, '')
		FROM work w JOIN renewed USING (session_id)`, s.id)
	if err != nil {
		return false, nil, err
	}
	held = map[workKey]*CancelRequest{}
	for rows.Next() {
		var m pgtype.UUID
		var p *Process
		var cancel bool
		var req CancelRequest
		if err := rows.Scan(&m, &p, &cancel, &req.Actor, &req.Reason); err != nil {
			rows.Close()
			return false, nil, err
		}
		if p == nil {
			alive = true
			continue
		}
		held[workKey{m.Bytes, *p}] = nil
		if cancel {
			held[workKey{m.Bytes, *p}] = &req
		}
	}
	return alive, held, rows.Err()
}

// CancelRequest is an operator's request to cancel work (bmctl work cancel),
// seen by the holding session at its renewal: the work's Context ends with
// it as the cause.
type CancelRequest struct{ Actor, Reason string }

func (c *CancelRequest) Error() string {
	if c.Reason == "" {
		return "canceled by " + c.Actor
	}
	return "canceled by " + c.Actor + ": " + c.Reason
}

// Is makes a CancelRequest match ErrCancelRequested.
func (c *CancelRequest) Is(target error) bool { return target == ErrCancelRequested }

type workKey struct {
	machine uuid.UUID
	process Process
}

// confirmed moves the local deadline after a renewal sent at sent. Work BMDB
// no longer has under this session (after a failover to a standby that had
// not received the claim, say) is fenced, and so is work an operator asked to
// cancel. Work registered after the renewal was sent may be missing from held
// and is left alone.
func (s *Session) confirmed(sent time.Time, held map[workKey]*CancelRequest) {
	s.mu.Lock()
	s.lapsesAt = sent.Add(s.interval - FenceMargin(s.interval))
	fenced := map[*Work]error{}
	for w := range s.works {
		req, ok := held[workKey{w.Machine, w.Process}]
		switch {
		case !ok && w.registered.Before(sent):
			fenced[w] = ErrWorkLost
			delete(s.works, w)
		case req != nil:
			fenced[w] = req
		}
	}
	s.mu.Unlock()
	for w, err := range fenced {
		if errors.Is(err, ErrWorkLost) {
			s.log.Warn("work no longer held in BMDB; abandoning it", "session", s.id, "machine", w.Machine, "process", w.Process)
		}
		w.fence(err)
	}
}

// sweep deletes dead sessions, one sweep at a time per session.
func (s *Session) sweep(ctx context.Context) {
	if !s.sweeping.TryLock() {
		return
	}
	defer s.sweeping.Unlock()
	sctx, cancel := context.WithTimeout(ctx, s.interval)
	defer cancel()
	if _, err := s.conn.Sweep(sctx); err != nil && ctx.Err() == nil {
		s.log.Warn("sweeping expired sessions failed", "err", err)
	}
}

// hold registers claimed work so the session can fence it.
func (s *Session) hold(w *Work) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.expired:
		w.fence(ErrSessionExpired)
		return
	default:
	}
	s.works[w] = struct{}{}
}

func (s *Session) unhold(w *Work) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.works, w)
}

// jitter is a random duration in [0, d).
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(d)))
}

// Close ends the session: its remaining work is released (history records it
// as canceled) and the session row is deleted.
func (s *Session) Close(ctx context.Context) error {
	s.cancel()
	<-s.stopped
	s.markExpired()
	return untilRecorded(ctx, s, nil, s.closeOnce)
}

func (s *Session) closeOnce(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.conn.Pool, func(tx pgx.Tx) error {
		// Locked first, so no claim can add work between the release and the
		// delete (that work would die by the cascade, without an end).
		if _, err := tx.Exec(ctx, `SELECT 1 FROM sessions WHERE session_id = $1 FOR UPDATE`, s.id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			WITH released AS (DELETE FROM work WHERE session_id = $1 RETURNING machine_id, process)
			INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
			SELECT machine_id, process, 'Canceled', 'session closed', $1, $2, $3 FROM released`,
			s.id, s.component, s.host)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM sessions WHERE session_id = $1`, s.id)
		return err
	})
}

// Transact runs fn in a transaction under the session. It fails with
// ErrSessionExpired if the session is dead, and retries fn on serialization
// failures and deadlocks, so fn must be safe to run more than once.
func (s *Session) Transact(ctx context.Context, fn func(tx pgx.Tx) error) error {
	return retrying(func() error {
		return pgx.BeginFunc(ctx, s.conn.Pool, func(tx pgx.Tx) error {
			if err := s.checkAlive(ctx, tx); err != nil {
				return err
			}
			return fn(tx)
		})
	})
}

// retrying runs op again on serialization failures and deadlocks.
func retrying(op func() error) error {
	for attempt := 0; ; attempt++ {
		err := op()
		if attempt < 10 && retryable(err) {
			time.Sleep(time.Duration(rand.IntN(5*(attempt+1))) * time.Millisecond)
			continue
		}
		return err
	}
}

// checkAlive fails unless the session is alive. The key-share lock keeps the
// sweep from deleting the session until the transaction ends, while the
// session's own heartbeat can still update it.
func (s *Session) checkAlive(ctx context.Context, tx pgx.Tx) error {
	var alive bool
	err := tx.QueryRow(ctx, `SELECT session_deadline > now() FROM sessions WHERE session_id = $1 FOR KEY SHARE`, s.id).Scan(&alive)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !alive) {
		s.markExpired()
		return ErrSessionExpired
	}
	return err
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// Unreachable says whether err means BMDB could not be reached or was
// restarting, failing over or read-only: a failure that may go away by
// itself, as opposed to a wrong URL, password or schema.
func Unreachable(err error) bool { return transient(err) }

// transient says whether err may go away by itself: the database was out of
// reach, restarting, read-only (a standby, mid-failover), or the statement
// lost a serialization race. Such a failure says nothing about whether a
// statement that was sent committed.
func transient(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "40001", pe.Code == "40P01", // serialization, deadlock
			pe.Code == "25006",                // read-only transaction: a standby
			pe.Code == "53300",                // too many connections
			strings.HasPrefix(pe.Code, "08"),  // connection exception
			strings.HasPrefix(pe.Code, "57P"): // shutdown, crash, cannot connect now
			return true
		}
		return false
	}
	// A dial that failed, a connection that broke or timed out.
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ne) || errors.As(err, &ce) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded)
}

// untilRecorded runs op until it succeeds or fails for a reason other than a
// transient one, with short jittered pauses, each attempt bounded so that a
// frozen database cannot hold it forever. It gives up with ErrSessionExpired
// once stop is closed (after one last attempt), and with ctx's error when
// ctx ends.
func untilRecorded(ctx context.Context, s *Session, stop <-chan struct{}, op func(ctx context.Context) error) error {
	attempt := func() error {
		actx, cancel := context.WithTimeout(ctx, max(s.interval/2, time.Second))
		defer cancel()
		return op(actx)
	}
	pause := 50 * time.Millisecond
	for {
		err := attempt()
		if !transient(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.log.Debug("BMDB write failed; retrying", "session", s.id, "err", err)
		t := time.NewTimer(pause + jitter(pause))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-stop:
			t.Stop()
			// A dead session's work is the sweep's to end (as Lost).
			if err := attempt(); err == nil || !transient(err) {
				return err
			}
			return ErrSessionExpired
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}

// Sweep deletes sessions past their deadline plus SweepGrace, and records each
// work item that dies with them as lost, so no Started stays without an end.
// It returns how many sessions it deleted.
func (c *Conn) Sweep(ctx context.Context) (int, error) {
	var n int
	err := pgx.BeginFunc(ctx, c.Pool, func(tx pgx.Tx) error {
		// Locking the dead sessions first waits out (or, SKIP LOCKED, leaves
		// for the next sweep) a claim still inserting under one: a claim
		// that checked its session alive before a freeze can commit after
		// the deadline. The work is read by a later statement, which sees
		// that claim's row, so no work dies by the foreign key's cascade
		// without its Lost.
		rows, err := tx.Query(ctx, `SELECT session_id FROM sessions
			WHERE session_deadline < now() - make_interval(secs => $1) FOR UPDATE SKIP LOCKED`, SweepGrace.Seconds())
		if err != nil {
			return err
		}
		dead, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil || len(dead) == 0 {
			return err
		}
		n = len(dead)
		_, err = tx.Exec(ctx, `
			WITH lost AS (
				DELETE FROM work w USING sessions s
				WHERE w.session_id = s.session_id AND s.session_id = ANY ($1)
				RETURNING w.machine_id, w.process, s.session_id, s.session_component, s.session_host, s.session_deadline
			)
			INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
			SELECT machine_id, process, 'Lost',
			       'session expired at ' || to_char(session_deadline AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC; work lost',
			       session_id, session_component, session_host
			FROM lost`, dead)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM sessions WHERE session_id = ANY ($1)`, dead)
		return err
	})
	return n, err
}
