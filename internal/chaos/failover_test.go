package chaos

import (
	"context"
	"log/slog"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/demo"
	"github.com/bmctl/bmctl/pkg/fleet"
	"github.com/bmctl/bmctl/pkg/localpg"
	"github.com/bmctl/bmctl/pkg/tui"
)

// TestFailoverToStandby: the demo's fleet, its shepherd and endpoint, a live
// view's listener and a history follower all run on a multi-host URL over a
// primary and its synchronous streaming standby. The primary stops and the
// standby is promoted: everything carries on against the new primary, no
// machine is ever locked twice, and nothing committed is lost.
func TestFailoverToStandby(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base := t.TempDir()
	primary := &localpg.Cluster{Dir: filepath.Join(base, "primary"), Settings: []string{"fsync=off"}}
	standby := &localpg.Cluster{Dir: filepath.Join(base, "standby"), Settings: []string{"fsync=off"}}
	if err := primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = primary.Stop(context.Background()) }()
	if err := primary.CreateDatabase(ctx, "bmdb"); err != nil {
		t.Fatal(err)
	}
	if err := bmdb.MigrateUp(primary.URL("bmdb")); err != nil {
		t.Fatal(err)
	}
	direct, err := bmdb.Open(ctx, primary.URL("bmdb"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Pool.Exec(ctx, workLog); err != nil {
		t.Fatal(err)
	}
	if err := standby.InitStandby(ctx, primary); err != nil {
		t.Fatal(err)
	}
	if err := standby.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = standby.Stop(context.Background()) }()
	// Synchronous once the standby streams (before, every commit would wait).
	if _, err := direct.Pool.Exec(ctx, `ALTER SYSTEM SET synchronous_standby_names = '*'`); err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Pool.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
		t.Fatal(err)
	}
	testwait.Within(t, "the standby to replicate synchronously", time.Minute, func() bool {
		var n int
		_ = direct.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' AND state = 'streaming'`).Scan(&n)
		return n == 1
	})

	// One URL naming both servers; only the one that takes writes is used.
	u, _ := url.Parse(primary.URL("bmdb"))
	q := u.Query()
	q.Set("host", primary.SocketDir()+","+standby.SocketDir())
	q.Set("target_session_attrs", "read-write")
	q.Set("connect_timeout", "3")
	u.RawQuery = q.Encode()
	multi := u.String()
	conn, err := bmdb.Open(ctx, multi)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	log := slog.New(slog.DiscardHandler)
	fleetCtx, stopFleet := context.WithCancel(ctx)
	fleetDone := make(chan struct{})
	go func() {
		defer close(fleetDone)
		_ = demo.Run(fleetCtx, demo.Config{Conn: conn, Machines: 8, FailureRate: 0.2, Seed: 5, StateDir: t.TempDir(), Self: agent, Logger: log})
	}()
	defer func() { stopFleet(); <-fleetDone }()

	// A live view's listener and a history follower, on the same URL.
	var mu sync.Mutex
	var connects, losses int
	var followed []int64
	go func() {
		for ev := range tui.Listen(fleetCtx, multi, log) {
			mu.Lock()
			if ev.Connected {
				connects++
			}
			if ev.Lost != nil {
				losses++
			}
			mu.Unlock()
		}
	}()
	go func() {
		_ = fleet.FollowFleetHistory(fleetCtx, conn.Pool, fleet.HistoryOptions{}, func(evs []fleet.HistoryEvent) error {
			mu.Lock()
			defer mu.Unlock()
			for _, e := range evs {
				followed = append(followed, e.ID)
			}
			return nil
		})
	}()
	count := func(sql string, args ...any) int {
		var n int
		if err := conn.Pool.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
			return -1
		}
		return n
	}
	testwait.Within(t, "the fleet to be at work", 3*time.Minute, func() bool {
		mu.Lock()
		listening := connects > 0
		mu.Unlock()
		return listening && count(`SELECT count(*) FROM work_history WHERE event = 'Finished'`) >= 5
	})

	// What the primary has committed when it stops must all be on the standby.
	var committed []int64
	rows, err := direct.Pool.Query(ctx, `SELECT work_history_id FROM work_history`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		_ = rows.Scan(&id)
		committed = append(committed, id)
	}
	direct.Close()
	if err := primary.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	promoted := time.Now()
	newPrimary, err := bmdb.Open(ctx, standby.URL("bmdb"))
	if err != nil {
		t.Fatal(err)
	}
	defer newPrimary.Close()
	var missing int
	if err := newPrimary.Pool.QueryRow(ctx, `SELECT count(*) FROM unnest($1::bigint[]) id WHERE id NOT IN (SELECT work_history_id FROM work_history)`, committed).Scan(&missing); err != nil {
		t.Fatal(err)
	}
	if missing > 0 {
		t.Errorf("%d of %d history events committed on the primary are missing on the promoted standby", missing, len(committed))
	}

	// Everything carries on: the shepherd works, the endpoint records
	// heartbeats, the listener is back, the follower shows new events.
	var lastSeen int64
	for _, id := range committed {
		lastSeen = max(lastSeen, id)
	}
	testwait.Within(t, "work, heartbeats, the listener and the follower after the failover", 3*time.Minute, func() bool {
		var work, beats int
		err := newPrimary.Pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM work_history WHERE event = 'Finished' AND event_at > $1),
			(SELECT count(*) FROM machine_agent_heartbeat WHERE agent_heartbeat_at > $1)`, promoted).Scan(&work, &beats)
		mu.Lock()
		relistened := losses > 0 && connects > 1
		var followedNew bool
		for _, id := range followed {
			followedNew = followedNew || id > lastSeen
		}
		mu.Unlock()
		return err == nil && work > 0 && beats > 0 && relistened && followedNew
	})

	stopFleet()
	<-fleetDone
	testwait.Within(t, "every session to end or be swept", time.Minute, func() bool {
		_, _ = newPrimary.Sweep(ctx)
		var n int
		_ = newPrimary.Pool.QueryRow(ctx, `SELECT count(*) FROM sessions`).Scan(&n)
		return n == 0
	})
	checkWorkLog(t, ctx, newPrimary, 5)
	checkHistory(t, ctx, newPrimary)
}
