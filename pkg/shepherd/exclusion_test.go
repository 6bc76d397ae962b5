package shepherd_test

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// slowAgent is a well-behaved agent that takes a while, so that work is
// held long enough for the other loop and the other shepherd to try the
// machine.
func slowAgent(m *sshsim.Machine) sshsim.ExecFunc {
	return func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) int {
		select {
		case <-ctx.Done():
			return 255
		case <-time.After(150 * time.Millisecond):
		}
		return m.AgentExec(ctx, cmd, stdin, stdout, stderr)
	}
}

// TestLoopsAndShepherdsExcludeEachOther churns machines between AgentStart
// and Recovery (agents never heart-beat, so each started machine is soon
// recovered, then started again) under two shepherds on one database, each
// running both loops with two workers. An independent poller and the
// history check that no machine was ever held by two work items at once.
func TestLoopsAndShepherdsExcludeEachOther(t *testing.T) {
	e := newEnv(t)
	e.fleet.SetRebootOff(150 * time.Millisecond)
	var ids []uuid.UUID
	for range 6 {
		m, id, _ := e.machine()
		m.SetOnExec(slowAgent(m))
		ids = append(ids, id)
	}

	var overlaps atomic.Int64
	pollCtx, stopPoll := context.WithCancel(context.Background())
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		for pollCtx.Err() == nil {
			var n int
			err := e.conn.Pool.QueryRow(pollCtx, `SELECT count(*) FROM (SELECT machine_id FROM work GROUP BY machine_id HAVING count(*) > 1) x`).Scan(&n)
			if err == nil {
				overlaps.Add(int64(n))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	for range 2 {
		conn, err := bmdb.Open(context.Background(), e.url) // a separate pool, as a second process would have
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		e.run(shepherd.Config{Conn: conn, Providers: []shepherd.Provider{e.fleet}, AgentStart: e.agentStart(), Recovery: e.recovery()})
	}
	for _, id := range ids {
		testwait.For(t, "two recoveries of every machine", func() bool {
			return e.count(`SELECT count(*) FROM work_history WHERE machine_id = $1 AND process = 'ShepherdRecovery' AND event = 'Finished'`, id) >= 2
		})
	}
	stopPoll()
	<-polled
	if n := overlaps.Load(); n > 0 {
		t.Errorf("the poller saw a machine held by two work items %d times", n)
	}
	sessions := map[uuid.UUID]bool{}
	for _, id := range ids {
		evs := e.history(id)
		var open *event
		for i, ev := range evs {
			sessions[ev.Session] = true
			switch ev.Event {
			case bmdb.EventStarted:
				if open != nil {
					t.Fatalf("machine %s: %s started while %s held it:%s", id, ev.Process, open.Process, events(evs[:i+1]))
				}
				open = &evs[i]
			default:
				if open == nil || open.Process != ev.Process {
					t.Fatalf("machine %s: %s %s without a matching start:%s", id, ev.Process, ev.Event, events(evs[:i+1]))
				}
				open = nil
			}
		}
	}
	// Two shepherds × two loops × two workers: the work was spread.
	if len(sessions) < 4 {
		t.Errorf("work came from %d sessions, want the loops of both shepherds to have taken part", len(sessions))
	}
}

// TestHeldMachineCannotBeClaimedByTheOtherLoop holds a machine with one
// process and checks the other cannot claim it even when the machine's tags
// make it a candidate for both, in each direction.
func TestHeldMachineCannotBeClaimedByTheOtherLoop(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m, id, _ := e.machine()
	execs := make(chan struct{}, 1)
	m.SetOnExec(func(ctx context.Context, _ string, _ io.Reader, _, _ io.Writer) int {
		execs <- struct{}{}
		<-ctx.Done()
		return 255
	})
	cfg := e.agentStart()
	cfg.ExecTimeout = time.Minute
	stop := e.run(shepherd.Config{AgentStart: cfg})
	<-execs // AgentStart holds the machine, its agent hanging

	// Now the machine also looks like a dead agent to Recovery.
	if _, err := e.conn.Pool.Exec(ctx, `INSERT INTO machine_agent_started VALUES ($1, now() - interval '1 hour', '\x00')`, id); err != nil {
		t.Fatal(err)
	}
	sess, err := e.conn.StartSession(ctx, bmdb.SessionConfig{Component: "test-recovery"})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close(ctx)
	pol := bmdb.Policy{Thresholds: bmdb.RecoveryThresholds{NoHeartbeatAfterStart: time.Second, StaleHeartbeat: time.Second}}
	brakestest.Ready(t, e.conn.Pool, pol)
	_, err = sess.Work(ctx, bmdb.ProcessShepherdRecovery, func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.RecoveryCandidates(ctx, tx, pol, 10)
	})
	if !errors.Is(err, bmdb.ErrNothingToDo) {
		t.Errorf("Recovery's candidate query offered a machine AgentStart holds: %v", err)
	}
	_, err = sess.Work(ctx, bmdb.ProcessShepherdRecovery, func(pgx.Tx) ([]uuid.UUID, error) { return []uuid.UUID{id}, nil })
	if !errors.Is(err, bmdb.ErrNothingToDo) {
		t.Errorf("Recovery claimed a machine AgentStart holds: %v", err)
	}
	stop()

	// The other way round: Recovery holds the machine, rebooting it slowly,
	// and its agent tags are gone so AgentStart would want it.
	e.fleet.SetRebootOff(time.Minute)
	rec := e.recovery()
	rec.RebootTimeout = time.Minute
	stop = e.run(shepherd.Config{Providers: []shepherd.Provider{e.fleet}, Recovery: rec})
	testwait.For(t, "Recovery to hold the machine", func() bool {
		return e.count(`SELECT count(*) FROM work WHERE machine_id = $1 AND process = 'ShepherdRecovery'`, id) == 1
	})
	testwait.For(t, "Recovery's work detail", func() bool {
		return e.count(`SELECT count(*) FROM work WHERE machine_id = $1 AND work_detail LIKE 'rebooting via sim%'`, id) == 1
	})
	if err := bmdb.ClearAgentTags(ctx, e.conn.Pool, id); err != nil {
		t.Fatal(err)
	}
	_, err = sess.Work(ctx, bmdb.ProcessShepherdAgentStart, func(tx pgx.Tx) ([]uuid.UUID, error) {
		return bmdb.AgentStartCandidates(ctx, tx, 10)
	})
	if !errors.Is(err, bmdb.ErrNothingToDo) {
		t.Errorf("AgentStart's candidate query offered a machine Recovery holds: %v", err)
	}
	_, err = sess.Work(ctx, bmdb.ProcessShepherdAgentStart, func(pgx.Tx) ([]uuid.UUID, error) { return []uuid.UUID{id}, nil })
	if !errors.Is(err, bmdb.ErrNothingToDo) {
		t.Errorf("AgentStart claimed a machine Recovery holds: %v", err)
	}
	stop()
}

// TestGracefulShutdownLeavesNoWork stops a shepherd in the middle of work:
// the work is canceled (history says so, no backoff), sessions are closed.
func TestGracefulShutdownLeavesNoWork(t *testing.T) {
	e := newEnv(t)
	m, id, _ := e.machine()
	execs := make(chan struct{}, 1)
	interrupted := make(chan struct{})
	m.SetOnExec(func(ctx context.Context, _ string, _ io.Reader, _, _ io.Writer) int {
		execs <- struct{}{}
		<-ctx.Done()
		close(interrupted)
		return 255
	})
	cfg := e.agentStart()
	cfg.ExecTimeout = time.Hour
	stop := e.run(shepherd.Config{AgentStart: cfg})
	<-execs
	// Operators see the step the work is on.
	if n := e.count(`SELECT count(*) FROM work WHERE machine_id = $1 AND work_detail = 'starting agent'`, id); n != 1 {
		t.Error("the held work does not say it is starting the agent")
	}
	stop()
	<-interrupted // the shepherd hung up on the agent rather than wait an hour

	if n := e.count(`SELECT count(*) FROM work`); n != 0 {
		t.Errorf("%d work rows left after shutdown", n)
	}
	if n := e.count(`SELECT count(*) FROM sessions`); n != 0 {
		t.Errorf("%d sessions left after shutdown", n)
	}
	if _, ok := hasEvent(e.history(id), bmdb.ProcessShepherdAgentStart, bmdb.EventCanceled, "shepherd shutting down"); !ok {
		t.Errorf("history %s\nwant the interrupted work Canceled", events(e.history(id)))
	}
	if n := e.count(`SELECT count(*) FROM work_backoff`); n != 0 {
		t.Error("shutdown put the machine in backoff")
	}
}

// TestKilledShepherdsWorkIsTakenOver kills a shepherd process with SIGKILL
// in the middle of work. Its lock holds until its session's deadline; then
// another shepherd takes the machine over and history records the lost work.
func TestKilledShepherdsWorkIsTakenOver(t *testing.T) {
	e := newEnv(t)
	m, id, _ := e.machine()
	execs := make(chan struct{}, 1)
	m.SetOnExec(func(ctx context.Context, _ string, _ io.Reader, _, _ io.Writer) int {
		execs <- struct{}{}
		<-ctx.Done()
		return 255
	})
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "BMCTL_TEST_HELPER=shepherd", "BMCTL_TEST_DB="+e.url,
		"BMCTL_TEST_KEY="+e.keyPath, "BMCTL_TEST_AGENT="+e.agentBin)
	child.Stderr = testWriter{t}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	<-execs // the child shepherd holds the machine

	var dead uuid.UUID
	var deadline time.Time
	if err := e.conn.Pool.QueryRow(context.Background(), `
		SELECT s.session_id, s.session_deadline FROM work w JOIN sessions s USING (session_id) WHERE w.machine_id = $1`, id).Scan(&dead, &deadline); err != nil {
		t.Fatal(err)
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = child.Wait()
	if n := e.count(`SELECT count(*) FROM work WHERE machine_id = $1`, id); n != 1 {
		t.Fatal("the killed shepherd's lock vanished before its session deadline")
	}

	m.SetOnExec(nil)
	e.run(shepherd.Config{AgentStart: e.agentStart()})
	testwait.For(t, "another shepherd to take the machine over", func() bool { return e.agentStarted(id) })

	evs := e.history(id)
	lost, ok := hasEvent(evs, bmdb.ProcessShepherdAgentStart, bmdb.EventLost, "session expired")
	if !ok || lost.Session != dead {
		t.Fatalf("history %s\nwant the killed session's work recorded as Lost", events(evs))
	}
	var takeover *event
	for i := range evs {
		if evs[i].Event == bmdb.EventStarted && evs[i].Session != dead {
			takeover = &evs[i]
			break
		}
	}
	if takeover == nil || takeover.At.Before(deadline) {
		t.Errorf("history %s\nwant the takeover after the dead session's deadline %s", events(evs), deadline)
	}
	if last := evs[len(evs)-1]; last.Event != bmdb.EventFinished || last.Session == dead {
		t.Errorf("history %s\nwant it to end Finished by the new shepherd", events(evs))
	}
}

// TestWorkerStartsNewSessionWhenItsSessionExpires kills the workers'
// sessions under them (as a long network partition would): they notice,
// start new sessions and go on working.
func TestWorkerStartsNewSessionWhenItsSessionExpires(t *testing.T) {
	e := newEnv(t)
	metrics := shepherd.NewMetrics(nil)
	e.run(shepherd.Config{AgentStart: e.agentStart(), Metrics: metrics, SessionInterval: time.Second})
	testwait.For(t, "the workers' sessions", func() bool {
		return e.count(`SELECT count(*) FROM sessions WHERE session_component LIKE 'shepherd-agentstart%'`) == 2
	})
	old := e.count(`SELECT count(*) FROM sessions WHERE session_component LIKE 'shepherd-agentstart%'`)
	if _, err := e.conn.Pool.Exec(context.Background(), `UPDATE sessions SET session_deadline = now() - interval '1 minute'`); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "new sessions", func() bool {
		return counterValue(metrics.SessionStarts.WithLabelValues("ShepherdAgentStart")) >= float64(2*old)
	})
	_, id, _ := e.machine()
	testwait.For(t, "an agent started under a new session", func() bool { return e.agentStarted(id) })
}
