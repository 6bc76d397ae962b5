package bmdb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	}
	// The insert is not cut short by ctx: a cancellation racing the commit
	// could leave a session row nobody closes. ctx is checked after it.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := c.Pool.QueryRow(ictx, `
		INSERT INTO sessions (session_component, session_host, session_pid, session_version, session_interval_seconds, session_deadline)
		VALUES ($1, $2, $3, $4, $5::int, now() + $5::int * interval '1 second')
		RETURNING session_id`,
		cfg.Component, host, os.Getpid(), cfg.Version, secs).Scan(&s.id)
	if err != nil {
		return nil, fmt.Errorf("starting session: %w", err)
	}
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

// Expired is closed when the session is known to be dead.
func (s *Session) Expired() <-chan struct{} { return s.expired }

func (s *Session) markExpired() {
	s.expireMu.Do(func() { close(s.expired) })
}

// keepAlive pokes the session every interval/2 and sweeps dead sessions.
func (s *Session) keepAlive(ctx context.Context) {
	defer close(s.stopped)
	t := time.NewTicker(s.interval / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, s.interval/2)
		tag, err := s.conn.Pool.Exec(pctx, `
			UPDATE sessions SET session_deadline = now() + session_interval_seconds * interval '1 second'
			WHERE session_id = $1 AND session_deadline > now()`, s.id)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			s.log.Warn("session heartbeat failed", "session", s.id, "err", err)
			continue
		case tag.RowsAffected() == 0:
			s.log.Warn("session expired", "session", s.id, "component", s.component)
			s.markExpired()
			return
		}
		if _, err := s.conn.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sweeping expired sessions failed", "err", err)
		}
	}
}

// Close ends the session: its remaining work is released (history records it
// as canceled) and the session row is deleted.
func (s *Session) Close(ctx context.Context) error {
	s.cancel()
	<-s.stopped
	defer s.markExpired()
	return pgx.BeginFunc(ctx, s.conn.Pool, func(tx pgx.Tx) error {
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

// Sweep deletes sessions past their deadline plus SweepGrace, and records each
// work item that dies with them as lost, so no Started stays without an end.
// It returns how many sessions it deleted.
func (c *Conn) Sweep(ctx context.Context) (int, error) {
	var n int
	err := c.Pool.QueryRow(ctx, `
		WITH dead AS (
			DELETE FROM sessions WHERE session_deadline < now() - make_interval(secs => $1)
			RETURNING session_id, session_component, session_host, session_deadline
		), lost AS (
			DELETE FROM work w USING dead WHERE w.session_id = dead.session_id
			RETURNING w.machine_id, w.process, dead.session_id, dead.session_component, dead.session_host, dead.session_deadline
		), logged AS (
			INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
			SELECT machine_id, process, 'Lost',
			       'session expired at ' || to_char(session_deadline AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC; work lost',
			       session_id, session_component, session_host
			FROM lost
		)
		SELECT count(*) FROM dead`, SweepGrace.Seconds()).Scan(&n)
	return n, err
}
