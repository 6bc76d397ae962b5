package shepherd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/time/rate"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Loop is one kind of work a runner drives: which machines need it, and what
// to do to one of them.
type Loop interface {
	// Process is the BMDB process the loop's work is claimed as.
	Process() bmdb.Process
	// Claim claims a machine the loop may work on under sess, or fails with
	// bmdb.ErrNothingToDo.
	Claim(ctx context.Context, sess *bmdb.Session) (*bmdb.Work, error)
	// Do acts on a claimed machine. On success it returns what to write in
	// the transaction that finishes the work (may be nil); on failure an
	// error whose FailureClass picks the backoff. ctx ends on shutdown or
	// when the session expires.
	Do(ctx context.Context, t *Task) (finish func(ctx context.Context, tx pgx.Tx) error, err error)
}

// LoopConfig is how a loop runs.
type LoopConfig struct {
	// Parallelism is how many workers run the loop, each with its own BMDB
	// session. Default 1.
	Parallelism int
	// QueryRate caps candidate queries per second over all workers of the
	// loop. Zero or less: no cap.
	QueryRate float64
	// Backoff is the loop's default policy for failed work.
	Backoff bmdb.Backoff
	// BackoffOverrides replace Backoff for specific failure classes.
	BackoffOverrides map[FailureClass]bmdb.Backoff
	// IdleWait is how long a worker that found nothing to do waits before
	// asking again. Default 2s.
	IdleWait time.Duration
}

func (c LoopConfig) withDefaults() LoopConfig {
	if c.Parallelism < 1 {
		c.Parallelism = 1
	}
	if c.IdleWait <= 0 {
		c.IdleWait = 2 * time.Second
	}
	return c
}

// backoffFor returns the policy for a failure of class.
func (c LoopConfig) backoffFor(class FailureClass) bmdb.Backoff {
	if b, ok := c.BackoffOverrides[class]; ok {
		return b
	}
	return c.Backoff
}

// Task is one claimed machine, handed to Loop.Do.
type Task struct {
	Work    *bmdb.Work
	Machine bmdb.ProvidedMachine
	Log     *slog.Logger
}

// SetDetail records the step the work is on, for operators watching. A
// failure to record it does not stop the work: a lost session stops it
// anyway, through the context.
func (t *Task) SetDetail(ctx context.Context, detail string) {
	if err := t.Work.SetDetail(ctx, detail); err != nil && ctx.Err() == nil {
		t.Log.Debug("setting work detail failed", "detail", detail, "err", err)
	}
}

// runner runs a loop's workers.
type runner struct {
	conn            *bmdb.Conn
	loop            Loop
	cfg             LoopConfig
	log             *slog.Logger
	metrics         *Metrics
	version         string
	sessionInterval time.Duration
	limiter         *rate.Limiter
}

// endTimeout bounds the transactions that end work and sessions, which run
// after the loop's context may already be canceled.
const endTimeout = 10 * time.Second

func newRunner(conn *bmdb.Conn, loop Loop, cfg LoopConfig, log *slog.Logger, m *Metrics, version string, sessionInterval time.Duration) *runner {
	cfg = cfg.withDefaults()
	limit := rate.Inf
	if cfg.QueryRate > 0 {
		limit = rate.Limit(cfg.QueryRate)
	}
	return &runner{
		conn: conn, loop: loop, cfg: cfg, metrics: m, version: version, sessionInterval: sessionInterval,
		log:     log.With("process", string(loop.Process())),
		limiter: rate.NewLimiter(limit, cfg.Parallelism),
	}
}

// run blocks until ctx ends and every worker has released its work and
// closed its session.
func (r *runner) run(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range r.cfg.Parallelism {
		wg.Go(func() { r.worker(ctx, i) })
	}
	wg.Wait()
}

func (r *runner) component() string {
	return "shepherd-" + strings.ToLower(strings.TrimPrefix(string(r.loop.Process()), "Shepherd"))
}

// worker holds a session for as long as it can and starts a new one when it
// expires.
func (r *runner) worker(ctx context.Context, id int) {
	log := r.log.With("worker", id)
	process := string(r.loop.Process())
	retry := time.Second
	for ctx.Err() == nil {
		// Not canceled by shutdown: an INSERT interrupted by a cancel may
		// still commit, leaving a session nobody closes.
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
		sess, err := r.conn.StartSession(sctx, bmdb.SessionConfig{
			Component: r.component(), Interval: r.sessionInterval, Version: r.version, Logger: log,
		})
		scancel()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("starting BMDB session failed; retrying", "err", err, "retry_in", retry)
				sleep(ctx, retry, nil)
				retry = min(2*retry, 30*time.Second)
			}
			continue
		}
		retry = time.Second
		r.metrics.Sessions.WithLabelValues(process).Inc()
		r.metrics.SessionStarts.WithLabelValues(process).Inc()
		log.Debug("session started", "session", sess.ID())
		r.inSession(ctx, sess, log.With("session", sess.ID()))
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
		if err := sess.Close(cctx); err != nil {
			log.Warn("closing session failed; it will expire", "session", sess.ID(), "err", err)
		}
		cancel()
		r.metrics.Sessions.WithLabelValues(process).Dec()
	}
}

func (r *runner) inSession(ctx context.Context, sess *bmdb.Session, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.Expired():
			log.Warn("session expired; starting a new one")
			return
		default:
		}
		if err := r.limiter.Wait(ctx); err != nil {
			return
		}
		err := r.once(ctx, sess, log)
		switch {
		case err == nil:
		case errors.Is(err, bmdb.ErrNothingToDo):
			sleep(ctx, r.cfg.IdleWait, sess.Expired())
		case errors.Is(err, bmdb.ErrSessionExpired):
			log.Warn("session expired; starting a new one")
			return
		case ctx.Err() != nil:
			return
		default:
			log.Warn("claiming work failed", "err", err)
			sleep(ctx, r.cfg.IdleWait, sess.Expired())
		}
	}
}

// once claims one machine, works on it and ends the work.
func (r *runner) once(ctx context.Context, sess *bmdb.Session, log *slog.Logger) error {
	process := r.loop.Process()
	w, err := r.loop.Claim(ctx, sess)
	if err != nil {
		return err
	}
	started := time.Now()
	r.metrics.Claims.WithLabelValues(string(process)).Inc()
	log = log.With("machine", w.Machine)

	// Work stops on shutdown and as soon as the lock may no longer be ours
	// (the session's lease lapsed locally or BMDB says it is gone): after
	// that another shepherd may take the machine.
	wctx, cancel := w.Context(ctx)
	defer cancel()

	var finish func(context.Context, pgx.Tx) error
	m, err := bmdb.GetProvidedMachine(wctx, r.conn.Pool, w.Machine)
	if err != nil {
		err = fail(FailInternal, fmt.Errorf("reading the machine's provided tag: %w", err))
	} else {
		log = log.With("provider_id", m.ProviderID)
		log.Info("claimed")
		finish, err = r.loop.Do(wctx, &Task{Work: w, Machine: m, Log: log})
	}

	// Not bounded by shutdown nor by a timeout: ending the work is retried
	// until it is recorded or the session is known dead, and no new work is
	// claimed before that.
	outcome := r.end(context.WithoutCancel(ctx), wctx, w, finish, err, log)
	r.metrics.WorkDuration.WithLabelValues(string(process), outcome).Observe(time.Since(started).Seconds())
	return nil
}

// end releases the work the way its outcome calls for, and logs it.
func (r *runner) end(ctx, wctx context.Context, w *bmdb.Work, finish func(context.Context, pgx.Tx) error, err error, log *slog.Logger) (outcome string) {
	process := string(w.Process)
	select {
	case <-w.Session().Expired():
		log.Warn("work abandoned: the session's lease lapsed or it expired; another shepherd may take it over", "err", err, "cause", context.Cause(wctx))
		return "lost"
	default:
	}
	if err == nil {
		ferr := w.Finish(ctx, func(tx pgx.Tx) error {
			if finish == nil {
				return nil
			}
			return finish(ctx, tx)
		})
		if ferr == nil {
			r.metrics.Finishes.WithLabelValues(process).Inc()
			log.Info("finished")
			return "finished"
		}
		if errors.Is(ferr, bmdb.ErrWorkLost) || errors.Is(ferr, bmdb.ErrSessionExpired) {
			log.Warn("work lost before it could finish", "err", ferr)
			return "lost"
		}
		err = fail(FailInternal, fmt.Errorf("recording the result: %w", ferr))
	}
	if wctx.Err() != nil {
		// Shutdown, or the work was fenced: it did not fail, it was
		// interrupted.
		cause := "shepherd shutting down"
		switch c := context.Cause(wctx); {
		case errors.Is(c, bmdb.ErrWorkLost):
			cause = "work no longer held in BMDB"
		case errors.Is(c, bmdb.ErrCancelRequested):
			cause = c.Error()
		}
		if cerr := w.Cancel(ctx, cause); cerr != nil {
			log.Warn("canceling work failed; it is released when the session closes", "err", cerr)
		}
		r.metrics.Cancels.WithLabelValues(process).Inc()
		log.Info("canceled", "cause", cause, "interrupted", err)
		return "canceled"
	}
	class := ClassOf(err)
	policy := r.cfg.backoffFor(class)
	if ferr := w.Fail(ctx, &policy, err.Error()); ferr != nil {
		log.Warn("recording failure failed", "cause", err, "err", ferr)
	}
	r.metrics.Failures.WithLabelValues(process, string(class)).Inc()
	log.Warn("failed", "cause", err.Error(), "class", string(class))
	return "failed"
}

// sleep waits for d, or until ctx ends or also is closed.
func sleep(ctx context.Context, d time.Duration, also <-chan struct{}) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-also:
	case <-t.C:
	}
}
