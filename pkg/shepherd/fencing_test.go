package shepherd_test

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/faultproxy"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// span is one SSH connection as the simulated machine saw it.
type span struct{ start, end time.Time }

// TestCutOffShepherdStopsActingBeforeItsDeadline: a shepherd whose database
// connections stall (a partition) abandons the machine it is working on
// before BMDB's deadline for its session passes; a second shepherd takes the
// machine only after that, and the machine never sees the two at once.
func TestCutOffShepherdStopsActingBeforeItsDeadline(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var mu sync.Mutex
	var spans []span
	execs := make(chan struct{}, 4)
	m, pid, err := e.fleet.Add()
	if err != nil {
		t.Fatal(err)
	}
	m.SetOnExec(func(ctx context.Context, _ string, _ io.Reader, _, _ io.Writer) int {
		select {
		case execs <- struct{}{}:
		default:
		}
		<-ctx.Done() // the agent never answers: the shepherd waits on the machine
		return 255
	})
	m.SetOnConnection(func() func() {
		start := time.Now()
		return func() {
			mu.Lock()
			spans = append(spans, span{start, time.Now()})
			mu.Unlock()
		}
	})
	if _, err := bmdb.AddProvidedMachine(ctx, e.conn.Pool, bmdb.ProvidedMachine{
		Provider: e.fleet.Type(), ProviderID: pid, Address: m.Addr(), Status: "active",
	}); err != nil {
		t.Fatal(err)
	}

	proxy, viaURL, err := faultproxy.ForPostgres(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	cutConn, err := bmdb.Open(ctx, viaURL)
	if err != nil {
		t.Fatal(err)
	}
	defer cutConn.Close()

	const interval = 3 * time.Second
	as := e.agentStart()
	as.Parallelism = 1
	as.ExecTimeout = time.Hour
	stopCut := e.run(shepherdConfig(cutConn, as, interval))
	<-execs // the cut-off shepherd is on the machine
	var session string
	if err := e.conn.Pool.QueryRow(ctx, `SELECT session_id::text FROM work`).Scan(&session); err != nil {
		t.Fatal(err)
	}
	proxy.Stall()
	// BMDB's deadline for the cut-off session, watched until the sweep
	// deletes it: stalled renewals cannot move it any more.
	var deadline time.Time
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			var d time.Time
			err := e.conn.Pool.QueryRow(ctx, `SELECT session_deadline FROM sessions WHERE session_id = $1`, session).Scan(&d)
			if err != nil {
				return
			}
			mu.Lock()
			if d.After(deadline) {
				deadline = d
			}
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()

	other := e.agentStart()
	other.Parallelism = 1
	other.ExecTimeout = time.Hour
	stopOther := e.run(shepherdConfig(e.conn, other, interval))
	select {
	case <-execs: // the second shepherd is on the machine
	case <-time.After(2 * time.Minute):
		t.Fatal("the second shepherd never reached the machine")
	}
	stopOther()
	proxy.Pass()
	stopCut()

	<-watched
	mu.Lock()
	defer mu.Unlock()
	if len(spans) < 2 {
		t.Fatalf("the machine saw %d SSH connections, want the two shepherds'", len(spans))
	}
	first, second := spans[0], spans[1]
	if !first.end.Before(second.start) {
		t.Errorf("the cut-off shepherd was on the machine until %s, after the second arrived at %s",
			first.end.Format(time.StampMilli), second.start.Format(time.StampMilli))
	}
	if !first.end.Before(deadline) {
		t.Errorf("the cut-off shepherd left the machine at %s, not before its session's deadline %s",
			first.end.Format(time.StampMilli), deadline.Format(time.StampMilli))
	}
	t.Logf("cut-off shepherd left at %s; its session's deadline was %s; the second shepherd arrived at %s",
		first.end.Format(time.StampMilli), deadline.Format(time.StampMilli), second.start.Format(time.StampMilli))
}

func shepherdConfig(conn *bmdb.Conn, as *shepherd.AgentStartConfig, interval time.Duration) shepherd.Config {
	return shepherd.Config{Conn: conn, AgentStart: as, SessionInterval: interval}
}

// TestCancelRequestEndsTheWork: an operator's cancel request on the work row
// (what `bmctl work cancel` writes) reaches the holding worker at its next
// renewal; it abandons the machine and records Canceled with who asked and why.
func TestCancelRequestEndsTheWork(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	m, id, _ := e.machine()
	execs := make(chan struct{}, 1)
	m.SetOnExec(func(ctx context.Context, _ string, _ io.Reader, _, _ io.Writer) int {
		select {
		case execs <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return 255
	})
	as := e.agentStart()
	as.Parallelism = 1
	as.ExecTimeout = time.Hour
	e.run(shepherdConfig(e.conn, as, 3*time.Second))
	<-execs
	if _, err := e.conn.Pool.Exec(ctx, `UPDATE work SET work_cancel_requested_at = now(), work_cancel_reason = 'disk swap', work_cancel_actor = 'alice@jump1' WHERE machine_id = $1`, id); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the worker to cancel the work", func() bool {
		_, ok := hasEvent(e.history(id), bmdb.ProcessShepherdAgentStart, bmdb.EventCanceled, "canceled by alice@jump1: disk swap")
		return ok
	})
	// The request ended the work it was made on (the machine may be claimed
	// again at once: a cancel is not a hold).
	evs := e.history(id)
	canceled, _ := hasEvent(evs, bmdb.ProcessShepherdAgentStart, bmdb.EventCanceled)
	if started, _ := hasEvent(evs, bmdb.ProcessShepherdAgentStart, bmdb.EventStarted); started.Session != canceled.Session {
		t.Fatalf("history %s: the Canceled is not the first work's end", events(evs))
	}
}
