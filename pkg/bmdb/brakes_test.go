package bmdb_test

import (
	"context"
	"testing"
	"time"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// An endpoint's beats keep one watch going; a silence longer than the gap
// starts a new watch and records the gap.
func TestObserverBeatGaps(t *testing.T) {
	ctx := context.Background()
	conn := open(t)
	first, err := bmdb.ObserverBeat(ctx, conn.Pool, time.Hour, "ep-1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := bmdb.ObserverBeat(ctx, conn.Pool, time.Hour, "ep-2")
	if err != nil || !again.Equal(first) {
		t.Fatalf("second beat: watch since %s (%v), want the first's %s", again, err, first)
	}
	if _, err := conn.Pool.Exec(ctx, `UPDATE heartbeat_observer SET observer_alive_at = now() - interval '2 hours'`); err != nil {
		t.Fatal(err)
	}
	after, err := bmdb.ObserverBeat(ctx, conn.Pool, time.Hour, "ep-1")
	if err != nil || !after.After(first) {
		t.Fatalf("beat after a silence: watch since %s (%v), want a new watch after %s", after, err, first)
	}
	var gaps int
	var to time.Time
	if err := conn.Pool.QueryRow(ctx, `SELECT count(*), max(gap_to) FROM heartbeat_observer_gaps`).Scan(&gaps, &to); err != nil || gaps != 1 || !to.Equal(after) {
		t.Errorf("%d gaps ending %s (%v), want one ending at the new watch %s", gaps, to, err, after)
	}
}
