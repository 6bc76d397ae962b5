package bmdb_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/internal/faultproxy"
	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// proxied returns a fresh database and a connection to it through a fault
// proxy, plus a direct connection that the proxy's faults do not touch.
func proxied(t *testing.T) (p *faultproxy.Proxy, via, direct *bmdb.Conn) {
	t.Helper()
	ctx := context.Background()
	dbURL := pgtest.URL(t)
	p, pu, err := faultproxy.ForPostgres(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if via, err = bmdb.Open(ctx, pu); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(via.Close)
	if direct, err = bmdb.Open(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	return p, via, direct
}

// logRecorder is a slog handler that keeps the messages it sees.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logRecorder) WithGroup(string) slog.Handler      { return l }
func (l *logRecorder) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.msgs, msg)
}

// TestRenewalsRideOutABlip: an outage shorter than the margin (interval −
// renewal period − fence margin) costs no session and no work, for sessions
// started together.
func TestRenewalsRideOutABlip(t *testing.T) {
	ctx := context.Background()
	p, via, direct := proxied(t)
	ids := addMachines(t, direct, 10)
	const interval = 4 * time.Second
	var works []*bmdb.Work
	var ctxs []context.Context
	for range ids {
		s := session(t, via, "blip", interval)
		w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(10))
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := w.Context(ctx)
		t.Cleanup(cancel)
		works = append(works, w)
		ctxs = append(ctxs, wctx)
	}
	for round := range 2 {
		p.Down()
		downAt := time.Now()
		time.Sleep(800 * time.Millisecond) // the outage itself, not a wait for a result
		p.Pass()
		// Every session renews after the outage.
		testwait.Within(t, "every session to renew after the outage", 10*time.Second, func() bool {
			for _, w := range works {
				if !w.Session().LapsesAt().After(downAt.Add(interval)) {
					return false
				}
			}
			return true
		})
		for i, w := range works {
			select {
			case <-w.Session().Expired():
				t.Fatalf("round %d: session %d expired in an 800 ms outage", round, i)
			default:
			}
			if ctxs[i].Err() != nil {
				t.Fatalf("round %d: work %d fenced in an 800 ms outage: %v", round, i, context.Cause(ctxs[i]))
			}
		}
	}
	for _, w := range works {
		if err := w.Finish(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFencingStopsWorkBeforeTheDatabaseGivesItAway: a worker cut off from
// BMDB (its connections stalled) has its work's context canceled before the
// session's deadline in the database; another session can take the machine
// only after that.
func TestFencingStopsWorkBeforeTheDatabaseGivesItAway(t *testing.T) {
	ctx := context.Background()
	p, via, direct := proxied(t)
	ids := addMachines(t, direct, 1)
	const interval = 2 * time.Second
	cut := session(t, via, "cut-off", interval)
	w, err := cut.Work(ctx, bmdb.ProcessShepherdAgentStart, all(ids))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := w.Context(ctx)
	defer cancel()
	p.Stall()
	defer p.Pass()
	<-wctx.Done()
	fencedAt := time.Now()
	if !errors.Is(context.Cause(wctx), bmdb.ErrSessionExpired) {
		t.Fatalf("fenced with cause %v, want ErrSessionExpired", context.Cause(wctx))
	}
	var deadline time.Time
	if err := direct.Pool.QueryRow(ctx, `SELECT session_deadline FROM sessions WHERE session_id = $1`, cut.ID()).Scan(&deadline); err != nil {
		t.Fatal(err)
	}
	if !fencedAt.Before(deadline) {
		t.Fatalf("fenced at %s, not before the database's deadline %s", fencedAt.Format(time.StampMilli), deadline.Format(time.StampMilli))
	}
	// Another shepherd takes the machine once the session is swept, and not
	// before the fence.
	other := session(t, direct, "other", interval)
	var took *bmdb.Work
	testwait.Within(t, "another session to take the machine", 30*time.Second, func() bool {
		_, _ = direct.Sweep(ctx)
		took, err = other.Work(ctx, bmdb.ProcessShepherdAgentStart, all(ids))
		return err == nil
	})
	if time.Now().Before(fencedAt) {
		t.Fatal("machine taken before the fence")
	}
	if err := took.Finish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	h := history(t, direct, ids[0])
	if len(h) != 4 || h[1].Event != bmdb.EventLost || h[2].Event != bmdb.EventStarted {
		t.Fatalf("history = %+v, want Started, Lost, Started, Finished", h)
	}
}

// TestReleaseIsRetriedUntilRecorded: a Finish while BMDB is unreachable is
// not lost: it is retried and lands once the database is back, exactly once.
func TestReleaseIsRetriedUntilRecorded(t *testing.T) {
	ctx := context.Background()
	p, via, direct := proxied(t)
	ids := addMachines(t, direct, 1)
	logs := &logRecorder{}
	s, err := via.StartSession(ctx, bmdb.SessionConfig{Component: "release", Interval: 4 * time.Second, Logger: slog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(ctx) })
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, all(ids))
	if err != nil {
		t.Fatal(err)
	}
	p.Down()
	done := make(chan error, 1)
	go func() {
		done <- w.Finish(ctx, func(tx pgx.Tx) error { return bmdb.SetAgentStarted(ctx, tx, w.Machine, make([]byte, 32)) })
	}()
	testwait.Within(t, "a failed attempt to be retried", 10*time.Second, func() bool { return logs.has("BMDB write failed; retrying") })
	select {
	case err := <-done:
		t.Fatalf("Finish returned %v while the database was unreachable", err)
	default:
	}
	time.Sleep(500 * time.Millisecond) // the outage goes on a while
	p.Pass()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Finish after the outage: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Finish did not return after the database came back")
	}
	var held int
	if err := direct.Pool.QueryRow(ctx, `SELECT count(*) FROM work`).Scan(&held); err != nil || held != 0 {
		t.Fatalf("work rows after Finish: %d (%v)", held, err)
	}
	h := history(t, direct, ids[0])
	if len(h) != 2 || h[1].Event != bmdb.EventFinished {
		t.Fatalf("history = %+v, want Started, Finished", h)
	}
}

// TestWorkMissingFromBMDBIsFenced: work the database no longer has under a
// live session (a failover to a standby that had not received the claim) is
// abandoned at the next renewal.
func TestWorkMissingFromBMDBIsFenced(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 1)
	s := session(t, conn, "missing", time.Second)
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, all(ids))
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := w.Context(ctx)
	defer cancel()
	if _, err := conn.Pool.Exec(ctx, `DELETE FROM work WHERE session_id = $1`, s.ID()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wctx.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("work missing from BMDB was not fenced")
	}
	if !errors.Is(context.Cause(wctx), bmdb.ErrWorkLost) {
		t.Fatalf("cause %v, want ErrWorkLost", context.Cause(wctx))
	}
	select {
	case <-s.Expired():
		t.Fatal("the session expired; only its work was gone")
	default:
	}
}

// TestWorkContextsEndWithTheSession: contexts of many works end together with their
// session's expiry, none left running.
func TestWorkContextsEndWithTheSession(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 5)
	s := session(t, conn, "many", time.Second)
	var wg sync.WaitGroup
	for range ids {
		w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(5))
		if err != nil {
			t.Fatal(err)
		}
		wctx, cancel := w.Context(ctx)
		defer cancel()
		wg.Go(func() { <-wctx.Done() })
	}
	kill(t, conn, s)
	wg.Wait()
}

// TestClaimSeesWorkThatEndedUnderIt: a claim whose snapshot predates another
// session's claim of the same machine waits for that claim's work row; if the
// other session's work then fails (backoff written, work row gone) before the
// claim's insert goes on, the claim must not take the machine on its stale
// view of eligibility.
func TestClaimSeesWorkThatEndedUnderIt(t *testing.T) {
	conn := open(t)
	ids := addMachines(t, conn, 1)
	a := session(t, conn, "a", 0)
	b := session(t, conn, "b", 0)
	// b's work fails at once: its row goes, a backoff and its history come.
	claimWhileWorkEnds(t, conn, ids[0], b, bmdb.ProcessShepherdAgentStart, a.ClaimAgentStart,
		`INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds) VALUES ($1, 'ShepherdAgentStart', now() + interval '1 hour', 'refused', 3600) ON CONFLICT DO NOTHING`,
		`INSERT INTO work_history (machine_id, process, event, session_id) VALUES ($1, 'ShepherdAgentStart', 'Started', $2), ($1, 'ShepherdAgentStart', 'Failed', $2)`)
}

// claimWhileWorkEnds holds b's uncommitted work of process on machine until
// claim (another session's) waits on its row, then deletes the work, runs
// ends (each with the machine as $1 and b as $2) and commits: claim must
// come back with ErrNothingToDo and leave no work behind.
func claimWhileWorkEnds(t *testing.T, conn *bmdb.Conn, machine uuid.UUID, b *bmdb.Session, process bmdb.Process,
	claim func(context.Context) (*bmdb.Work, error), ends ...string) {
	t.Helper()
	ctx := context.Background()
	raw, err := pgx.Connect(ctx, conn.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	tx, err := raw.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO work (machine_id, session_id, process) VALUES ($1, $2, $3)`, machine, b.ID(), process); err != nil {
		t.Fatal(err)
	}
	type result struct {
		w   *bmdb.Work
		err error
	}
	done := make(chan result, 1)
	go func() {
		w, err := claim(ctx)
		done <- result{w, err}
	}()
	// The claim saw the machine free and now waits on b's row.
	testwait.Within(t, "the claim to wait on b's work row", 30*time.Second, func() bool {
		var n int
		_ = conn.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&n)
		return n > 0
	})
	for _, q := range append([]string{`DELETE FROM work WHERE machine_id = $1 AND session_id = $2`}, ends...) {
		args := []any{machine, b.ID()}
		if !strings.Contains(q, "$2") {
			args = args[:1]
		}
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err == nil {
		t.Fatalf("claimed machine %s for %s, though b's work on it ended under the claim", r.w.Machine, process)
	}
	if !errors.Is(r.err, bmdb.ErrNothingToDo) {
		t.Fatalf("claim: %v, want ErrNothingToDo", r.err)
	}
	var held int
	if err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM work`).Scan(&held); err != nil || held != 0 {
		t.Fatalf("work rows: %d (%v), want none", held, err)
	}
}

// TestSweepRecordsWorkOfAClaimStillInFlight: a claim that checked its session
// alive (before a freeze, say) can commit its work after the session's
// deadline. The sweep must record that work as Lost, not let it die silently
// by the foreign key's cascade when it deletes the session.
func TestSweepRecordsWorkOfAClaimStillInFlight(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 1)
	s := session(t, conn, "frozen", 0)

	raw, err := pgx.Connect(ctx, conn.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(ctx)
	claim, err := raw.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The claim's writes, not yet committed; its foreign key holds the session row.
	if _, err := claim.Exec(ctx, `INSERT INTO work (machine_id, session_id, process) VALUES ($1, $2, 'ShepherdAgentStart')`, ids[0], s.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := claim.Exec(ctx, `INSERT INTO work_history (machine_id, process, event, session_id) VALUES ($1, 'ShepherdAgentStart', 'Started', $2)`, ids[0], s.ID()); err != nil {
		t.Fatal(err)
	}
	kill(t, conn, s)
	swept := make(chan error, 1)
	go func() { _, err := conn.Sweep(ctx); swept <- err }()
	// The sweep may leave the session for later, but must not wait on the claim.
	select {
	case err := <-swept:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the sweep waited for a claim in flight")
	}
	if err := claim.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.Within(t, "the sweep to delete the session", 20*time.Second, func() bool {
		_, _ = conn.Sweep(ctx)
		var n int
		err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE session_id = $1`, s.ID()).Scan(&n)
		return err == nil && n == 0
	})
	h := history(t, conn, ids[0])
	if len(h) != 2 || h[0].Event != bmdb.EventStarted || h[1].Event != bmdb.EventLost {
		t.Fatalf("history = %+v, want Started, Lost", h)
	}
}

// TestClaimRecoverySeesRecoveryThatEndedUnderIt: Recovery claims in one
// statement too. Another shepherd's recovery of the machine (work claimed,
// the reboot done, the agent tags cleared, the work finished) that commits
// after the claim's statement read the candidates must abort the claim: the
// machine no longer needs recovery, and a second reboot is what the check is
// for. Only machines of the claimer's providers are claimed.
func TestClaimRecoverySeesRecoveryThatEndedUnderIt(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 1)
	for _, q := range []string{
		`INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key) VALUES ($1, now() - interval '1 hour', '\x00')`,
		`INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at) VALUES ($1, now() - interval '20 minutes')`,
	} {
		if _, err := conn.Pool.Exec(ctx, q, ids[0]); err != nil {
			t.Fatal(err)
		}
	}
	pol := brakestest.Ready(t, conn.Pool, bmdb.DefaultPolicy())
	a := session(t, conn, "a", 0)
	b := session(t, conn, "b", 0)
	if w, err := a.ClaimRecovery(ctx, pol, []string{"other"}); !errors.Is(err, bmdb.ErrNothingToDo) {
		t.Fatalf("claim for provider type other: %v, %v; want ErrNothingToDo (the machine is of type test)", w, err)
	}
	// b reboots the machine and finishes: its agent tags go, its history
	// comes.
	claimWhileWorkEnds(t, conn, ids[0], b, bmdb.ProcessShepherdRecovery,
		func(ctx context.Context) (*bmdb.Work, error) { return a.ClaimRecovery(ctx, pol, []string{"test"}) },
		`DELETE FROM machine_agent_heartbeat WHERE machine_id = $1`,
		`DELETE FROM machine_agent_started WHERE machine_id = $1`,
		`INSERT INTO work_history (machine_id, process, event, session_id) VALUES ($1, 'ShepherdRecovery', 'Started', $2), ($1, 'ShepherdRecovery', 'Finished', $2)`)
}
