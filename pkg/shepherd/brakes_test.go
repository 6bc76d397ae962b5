package shepherd_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// hold places an operator's hold with SQL (pkg/ops is the operators' way).
func (e *env) hold(machine uuid.UUID, process string, until string) {
	e.t.Helper()
	var p, u any
	if process != "" {
		p = process
	}
	if until != "" {
		u = until
	}
	if _, err := e.conn.Pool.Exec(context.Background(), `
		INSERT INTO machine_holds (machine_id, process, hold_reason, hold_actor, hold_until)
		VALUES ($1, $2::process, 'disk swap', 'alice@jump1', now() + $3::interval)`, machine, p, u); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) started(machine uuid.UUID, process bmdb.Process) int {
	return e.count(`SELECT count(*) FROM work_history WHERE machine_id = $1 AND process = $2 AND event = 'Started'`, machine, process)
}

// TestHoldsStopEveryProcess runs both loops over a fleet where every
// machine's agent never heart-beats, so unheld machines cycle through
// AgentStart and Recovery over and over: a machine-wide hold and a
// Recovery hold keep their machines untouched meanwhile; released, the
// machine is claimed; an expiring hold stops holding by itself, leaves a
// HoldExpired event, and its machine is claimed after the expiry.
func TestHoldsStopEveryProcess(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, control, _ := e.machine()
	heldM, held, _ := e.machine()
	e.hold(held, "", "")
	expiringM, expiring, _ := e.machine()
	e.hold(expiring, "", "6 seconds")
	var holdUntil time.Time
	if err := e.conn.Pool.QueryRow(ctx, `SELECT hold_until FROM machine_holds WHERE machine_id = $1`, expiring).Scan(&holdUntil); err != nil {
		t.Fatal(err)
	}
	_, recHeld, _ := e.machine()
	// An agent that never heart-beat, long ago: Recovery's candidate, but
	// for its hold on Recovery.
	if _, err := e.conn.Pool.Exec(ctx, `INSERT INTO machine_agent_started VALUES ($1, now() - interval '1 hour', '\x00')`, recHeld); err != nil {
		t.Fatal(err)
	}
	e.hold(recHeld, string(bmdb.ProcessShepherdRecovery), "")

	rec := e.recovery()
	rec.Budget = bmdb.Budget{Attempts: 100, Window: time.Hour} // the control machine cycles freely
	e.run(shepherd.Config{Providers: []shepherd.Provider{e.fleet}, AgentStart: e.agentStart(), Recovery: rec})

	// The control machine goes round twice; meanwhile the held ones are
	// eligible but for their holds, the whole time.
	testwait.For(t, "the control machine recovered twice", func() bool { return e.started(control, bmdb.ProcessShepherdRecovery) >= 2 })
	if n := len(e.history(held)); n != 0 || len(heldM.Execs()) != 0 {
		t.Fatalf("held machine: history %s, commands %q; want it untouched", events(e.history(held)), heldM.Execs())
	}
	if n := e.started(recHeld, bmdb.ProcessShepherdRecovery); n != 0 {
		t.Fatalf("Recovery started %d times on a machine held for Recovery", n)
	}
	st, err := fleet.GetMachine(ctx, e.conn.Pool, held, bmdb.RecoveryThresholds{})
	if err != nil || st.State != fleet.StateHeld || st.Hold == nil || st.Hold.Actor != "alice@jump1" || st.Hold.Reason != "disk swap" {
		t.Errorf("held machine's summary %+v (%v), want state held with alice's hold", st, err)
	}

	// The expiring hold ends by itself: the machine is claimed after its
	// end, and the end is history.
	// (The rule stops honouring the hold at its end; the brakes' sweep
	// records the end within a second or so, maybe after the claim.)
	testwait.For(t, "the machine whose hold expired to be claimed, and the expiry recorded", func() bool {
		_, expired := hasEvent(e.history(expiring), bmdb.ProcessShepherdRecovery, bmdb.EventHoldExpired)
		return expired && e.agentStarted(expiring)
	})
	evs := e.history(expiring)
	if ev, ok := hasEvent(evs, bmdb.ProcessShepherdRecovery, bmdb.EventHoldExpired, "hold by alice@jump1 (disk swap)", "expired", "every process"); !ok {
		t.Errorf("history %s\nwant HoldExpired with the operator and reason", events(evs))
	} else if ev.At.Before(holdUntil) {
		t.Errorf("HoldExpired at %s, before the hold's end %s", ev.At, holdUntil)
	}
	if first, ok := hasEvent(evs, bmdb.ProcessShepherdAgentStart, bmdb.EventStarted); !ok || first.At.Before(holdUntil) {
		t.Errorf("AgentStart started at %s, want after the hold's end %s", first.At, holdUntil)
	}
	if len(expiringM.Execs()) == 0 {
		t.Error("the agent was never started on the machine whose hold expired")
	}
	if n := e.count(`SELECT count(*) FROM machine_holds WHERE machine_id = $1`, expiring); n != 0 {
		t.Errorf("the expired hold is still recorded")
	}

	// Released, the held machines are claimed.
	if _, err := e.conn.Pool.Exec(ctx, `DELETE FROM machine_holds WHERE machine_id = ANY($1)`, []uuid.UUID{held, recHeld}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the released machine's agent start", func() bool { return e.agentStarted(held) || e.started(held, bmdb.ProcessShepherdRecovery) > 0 })
	testwait.For(t, "Recovery of the machine released from its Recovery hold", func() bool { return e.started(recHeld, bmdb.ProcessShepherdRecovery) > 0 })
}

// TestBudgetStopsTheFourthRecovery: a machine whose agent never heart-beats
// is recovered again and again, until its budget (3 in the window) is
// spent; the fourth Recovery does not happen, the machine gets a
// needs-attention mark with the reason (history, metric, views), and stays
// alone while the brakes keep running.
func TestBudgetStopsTheFourthRecovery(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, id, _ := e.machine()
	rec := e.recovery()
	rec.Budget = bmdb.Budget{Attempts: 3, Window: time.Hour}
	metrics := shepherd.NewMetrics(nil)
	e.run(shepherd.Config{Providers: []shepherd.Provider{e.fleet}, AgentStart: e.agentStart(), Recovery: rec, Metrics: metrics})

	testwait.For(t, "the needs-attention mark", func() bool {
		return e.count(`SELECT count(*) FROM machine_attention WHERE machine_id = $1 AND process = 'ShepherdRecovery'`, id) == 1
	})
	if n := e.started(id, bmdb.ProcessShepherdRecovery); n != 3 {
		t.Fatalf("Recovery started %d times before the mark, want 3", n)
	}
	evs := e.history(id)
	if _, ok := hasEvent(evs, bmdb.ProcessShepherdRecovery, bmdb.EventAttentionMarked, "remediation budget exhausted", "3 Recovery attempts within 1h0m0s"); !ok {
		t.Errorf("history %s\nwant AttentionMarked with the budget", events(evs))
	}
	if v := counterValue(metrics.AttentionMarks); v != 1 {
		t.Errorf("attention marks metric %v, want 1", v)
	}
	// The brakes go on evaluating (a signal they ran: the breakers'
	// evaluation time moves); Recovery still leaves the machine alone.
	var first time.Time
	if err := e.conn.Pool.QueryRow(ctx, `SELECT breaker_evaluated_at FROM breaker_states WHERE breaker_scope = 'fleet'`).Scan(&first); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "three more evaluations of the brakes", func() bool {
		var at time.Time
		_ = e.conn.Pool.QueryRow(ctx, `SELECT breaker_evaluated_at FROM breaker_states WHERE breaker_scope = 'fleet'`).Scan(&at)
		return at.Sub(first) >= 3*time.Second
	})
	if n := e.started(id, bmdb.ProcessShepherdRecovery); n != 3 {
		t.Errorf("Recovery started %d times, want the budget's 3", n)
	}
	m, err := fleet.GetMachine(ctx, e.conn.Pool, id, bmdb.RecoveryThresholds{})
	if err != nil || m.State != fleet.StateNeedsAttention || m.Attention == nil || m.Attention.Process != bmdb.ProcessShepherdRecovery {
		t.Errorf("machine summary %+v (%v), want needs_attention with Recovery's mark", m, err)
	}
	ex, err := bmdb.Explain(ctx, e.conn.Pool, id)
	if err != nil {
		t.Fatal(err)
	}
	if v := ex.Processes[1]; v.Process != bmdb.ProcessShepherdRecovery || v.Candidate {
		t.Errorf("explain says %+v, want Recovery not a candidate", v)
	}
}
