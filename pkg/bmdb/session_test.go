package bmdb_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// kill makes a session look like its owner died long ago: nobody extends its
// deadline any more and the deadline is past.
func kill(t *testing.T, conn *bmdb.Conn, s *bmdb.Session) {
	t.Helper()
	_, err := conn.Pool.Exec(context.Background(),
		`UPDATE sessions SET session_deadline = now() - interval '1 minute' WHERE session_id = $1`, s.ID())
	if err != nil {
		t.Fatal(err)
	}
}

func TestSessionExpiryStopsTransact(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	s := session(t, conn, "test", time.Second)
	if err := s.Transact(ctx, func(tx pgx.Tx) error { return nil }); err != nil {
		t.Fatalf("live session: %v", err)
	}
	kill(t, conn, s)
	err := s.Transact(ctx, func(tx pgx.Tx) error {
		t.Error("fn ran under an expired session")
		return nil
	})
	if !errors.Is(err, bmdb.ErrSessionExpired) {
		t.Fatalf("Transact = %v, want ErrSessionExpired", err)
	}
	select {
	case <-s.Expired():
	case <-time.After(5 * time.Second):
		t.Fatal("Expired() not closed")
	}
}

func TestSessionHeartbeatKeepsItAlive(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	s := session(t, conn, "test", time.Second)
	// Three intervals later the session is still alive thanks to its pokes.
	time.Sleep(3 * time.Second)
	if err := s.Transact(ctx, func(tx pgx.Tx) error { return nil }); err != nil {
		t.Fatalf("session died despite heartbeats: %v", err)
	}
}

func TestKilledSessionWorkIsSweptAndReclaimed(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 1)
	dead := session(t, conn, "crashing-shepherd", time.Second)
	w, err := dead.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1))
	if err != nil {
		t.Fatal(err)
	}
	other := session(t, conn, "other-shepherd", time.Second)
	// While the dead session's deadline has not passed, the machine is held.
	if _, err := other.Work(ctx, bmdb.ProcessShepherdRecovery, all(ids)); !errors.Is(err, bmdb.ErrNothingToDo) {
		t.Fatalf("claim of held machine: %v", err)
	}
	kill(t, conn, dead)
	n, err := conn.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 session swept", n, err)
	}
	w2, err := other.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1))
	if err != nil {
		t.Fatalf("claim after sweep: %v", err)
	}
	if w2.Machine != ids[0] {
		t.Fatalf("claimed %s", w2.Machine)
	}
	// The dead session's work item cannot end any more.
	if err := w.Finish(ctx, nil); !errors.Is(err, bmdb.ErrSessionExpired) {
		t.Fatalf("Finish on swept work = %v", err)
	}
	if err := w2.Finish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	h := history(t, conn, ids[0])
	want := []bmdb.Event{bmdb.EventStarted, bmdb.EventLost, bmdb.EventStarted, bmdb.EventFinished}
	if len(h) != len(want) {
		t.Fatalf("history = %+v", h)
	}
	for i, e := range want {
		if h[i].Event != e {
			t.Fatalf("history[%d] = %+v, want %s", i, h[i], e)
		}
	}
	if *h[1].Session != dead.ID() || h[1].Cause == "" {
		t.Errorf("Lost event = %+v, want the dead session and a cause", h[1])
	}
}

func TestSweepLeavesLiveAndRecentSessions(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	s := session(t, conn, "live", time.Second)
	// Just past its deadline, within the grace: not swept yet.
	if _, err := conn.Pool.Exec(ctx, `UPDATE sessions SET session_deadline = now() - interval '100 milliseconds' WHERE session_id = $1`, s.ID()); err != nil {
		t.Fatal(err)
	}
	live := session(t, conn, "live2", time.Second)
	if n, err := conn.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("Sweep = %d, %v; want nothing swept", n, err)
	}
	if err := live.Transact(ctx, func(pgx.Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestCloseReleasesWork(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 2)
	s, err := conn.StartSession(ctx, bmdb.SessionConfig{Component: "closing"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var work, sessions int
	if err := conn.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM work), (SELECT count(*) FROM sessions)`).Scan(&work, &sessions); err != nil {
		t.Fatal(err)
	}
	if work != 0 || sessions != 0 {
		t.Fatalf("after Close: %d work, %d sessions", work, sessions)
	}
	for _, id := range ids {
		h := history(t, conn, id)
		if len(h) != 2 || h[1].Event != bmdb.EventCanceled {
			t.Fatalf("history of %s = %+v", id, h)
		}
	}
	if err := s.Transact(ctx, func(pgx.Tx) error { return nil }); !errors.Is(err, bmdb.ErrSessionExpired) {
		t.Fatalf("Transact after Close = %v", err)
	}
}

func TestFailBacksOffAndFinishResets(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	ids := addMachines(t, conn, 1)
	s := session(t, conn, "test", 0)
	policy := bmdb.Backoff{Initial: time.Second, Maximum: time.Hour, Exponent: 1.1}

	// failedAt is the database's clock just before a Fail: the backoff it
	// writes runs from no earlier than that. Asking whether backoff_until is
	// still ahead of now() when the check runs would fail whenever the check
	// came a full interval (one second) after the Fail on a loaded machine.
	var failedAt time.Time
	lastInterval := func() (int64, bool) {
		var secs int64
		var future bool
		err := conn.Pool.QueryRow(ctx, `SELECT backoff_last_interval_seconds,
			backoff_until >= $2::timestamptz + backoff_last_interval_seconds * interval '1 second'
			FROM work_backoff WHERE machine_id = $1`, ids[0], failedAt).Scan(&secs, &future)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, false
		}
		if err != nil {
			t.Fatal(err)
		}
		return secs, future
	}
	// Fail four times, claiming through a candidate function that ignores the
	// backoff, as an operator retry would: 1, 2, 3, 4 seconds.
	for i, want := range []int64{1, 2, 3, 4} {
		w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, all(ids))
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Pool.QueryRow(ctx, `SELECT now()`).Scan(&failedAt); err != nil {
			t.Fatal(err)
		}
		if err := w.Fail(ctx, &policy, "boom"); err != nil {
			t.Fatal(err)
		}
		if got, future := lastInterval(); got != want || !future {
			t.Fatalf("failure %d: interval %d (future %v), want %d", i+1, got, future, want)
		}
	}
	// The backoff keeps the machine out of AgentStart, not out of Recovery's
	// own queue (checked by claiming Recovery through an explicit list).
	if _, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1)); !errors.Is(err, bmdb.ErrNothingToDo) {
		t.Fatalf("claim during backoff: %v", err)
	}
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, all(ids))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Finish(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, present := lastInterval(); present {
		t.Fatal("backoff still present after Finish")
	}
	// After a success the next failure starts again at Initial.
	w, err = s.Work(ctx, bmdb.ProcessShepherdAgentStart, all(ids))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Fail(ctx, &policy, "again"); err != nil {
		t.Fatal(err)
	}
	if got, _ := lastInterval(); got != 1 {
		t.Fatalf("interval after reset = %d, want 1", got)
	}
}

func TestBackoffExpiresAndMachineReturns(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	addMachines(t, conn, 1)
	s := session(t, conn, "test", 0)
	w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Fail(ctx, &bmdb.Backoff{Initial: time.Second}, "boom"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1)); !errors.Is(err, bmdb.ErrNothingToDo) {
		t.Fatalf("claim during backoff: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		w, err := s.Work(ctx, bmdb.ProcessShepherdAgentStart, agentStart(1))
		if err == nil {
			_ = w.Cancel(ctx, "test done")
			return
		}
		if !errors.Is(err, bmdb.ErrNothingToDo) || time.Now().After(deadline) {
			t.Fatalf("machine did not come back after its backoff: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
