package main

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/internal/pgtest"
)

// TestDemoHeadless runs `bmctl demo --no-tui` as its own process with faults
// on, until the database shows every machine heart-beat through the real
// endpoint at least once and failures produced backoffs and Recovery; then
// interrupts it and checks the shutdown left no work and no sessions.
func TestDemoHeadless(t *testing.T) {
	const machines = 8
	url := pgtest.URL(t)
	ctx := context.Background()
	db, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// A Recovery needs an agent that stops heart-beating, a fault each started
	// agent draws at the failure rate (in an order that depends on
	// scheduling). At 0.3 all 8 agents escaped it in about 6% of runs, and
	// the test then waited for a recovery that could never come; at 0.5 that
	// is 0.4%.
	demo := exec.Command(os.Args[0], "--db", url, "demo", "--no-tui", "--machines", "8", "--failure-rate", "0.5", "--seed", "7")
	demo.Env = append(os.Environ(), "BMCTL_TEST_MAIN=1", "BMCTL_STATE_DIR="+t.TempDir())
	demo.Stdout, demo.Stderr = os.Stderr, os.Stderr
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- demo.Wait() }()
	defer func() {
		if demo.ProcessState == nil {
			_ = demo.Process.Kill()
		}
	}()

	var healthy, agentFailures, backoffs, recoveries int
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := db.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM machine_hardware_report),
			(SELECT count(*) FROM work_history WHERE process = 'ShepherdAgentStart' AND event = 'Failed'),
			(SELECT count(DISTINCT machine_id) FROM work_history WHERE event = 'Failed'),
			(SELECT count(*) FROM work_history WHERE process = 'ShepherdRecovery' AND event = 'Finished')`).
			Scan(&healthy, &agentFailures, &backoffs, &recoveries)
		if err != nil {
			t.Fatal(err)
		}
		if healthy == machines && agentFailures > 0 && recoveries > 0 {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("demo exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 5 minutes: %d/%d machines heart-beat, %d AgentStart failures, %d recoveries", healthy, machines, agentFailures, recoveries)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Failed work left backoffs behind (until a later success cleared them),
	// recorded with the failure's cause.
	var backoffRows int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM work_history h WHERE event = 'Failed' AND cause <> ''`).Scan(&backoffRows); err != nil || backoffRows == 0 {
		t.Fatalf("no failure causes in history (%v)", err)
	}
	t.Logf("%d machines heart-beat, %d AgentStart failures on %d machines, %d recoveries", healthy, agentFailures, backoffs, recoveries)
	// Every finished Recovery went through the machine's simulated Redfish
	// BMC and recorded what it saw, in the transaction that finished it.
	var finished, powerActions int
	if err := db.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM work_history WHERE process = 'ShepherdRecovery' AND event = 'Finished'),
		(SELECT count(*) FROM work_history WHERE event = 'PowerAction' AND cause LIKE 'redfish % at https://127.0.0.1:%: % after %')`).
		Scan(&finished, &powerActions); err != nil || finished != powerActions {
		t.Fatalf("%d finished recoveries, %d Redfish power actions (%v); want one each", finished, powerActions, err)
	}

	if err := demo.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("demo did not exit cleanly: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("demo did not stop within a minute of SIGINT")
	}
	var work, sessions, open int
	err = db.QueryRow(ctx, `SELECT (SELECT count(*) FROM work), (SELECT count(*) FROM sessions),
		(SELECT count(*) FILTER (WHERE event = 'Started') - count(*) FILTER (WHERE event IN ('Finished', 'Failed', 'Canceled', 'Lost')) FROM work_history)`).
		Scan(&work, &sessions, &open)
	if err != nil {
		t.Fatal(err)
	}
	if work != 0 || sessions != 0 || open != 0 {
		t.Fatalf("after shutdown: %d work items, %d sessions, %d Started without an end", work, sessions, open)
	}
}
