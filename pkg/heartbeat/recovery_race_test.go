package heartbeat_test

import (
	"context"
	"crypto/ed25519"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// TestHeartbeatsRaceRecoveryWithoutDeadlock: heartbeats arriving while
// Recovery clears the machine's agent tags (an agent that comes back just as
// it is given up) must neither deadlock with it nor survive it.
func TestHeartbeatsRaceRecoveryWithoutDeadlock(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{})
	ctx := context.Background()
	id, key := e.machine(t)
	claim := []bmdb.AgentKey{{Machine: id, Key: key.Public().(ed25519.PublicKey)}}
	for round := range 100 {
		if err := bmdb.SetAgentStarted(ctx, e.conn.Pool, id, claim[0].Key); err != nil {
			t.Fatal(err)
		}
		if _, err := bmdb.RecordHeartbeats(ctx, e.conn.Pool, claim); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			if _, err := bmdb.RecordHeartbeats(ctx, e.conn.Pool, claim); err != nil {
				t.Errorf("round %d: heartbeat: %v", round, err)
			}
		})
		wg.Go(func() {
			err := pgx.BeginFunc(ctx, e.conn.Pool, func(tx pgx.Tx) error { return bmdb.ClearAgentTags(ctx, tx, id) })
			if err != nil {
				t.Errorf("round %d: clearing agent tags: %v", round, err)
			}
		})
		wg.Wait()
		if n := e.count(t, "machine_agent_heartbeat") + e.count(t, "machine_agent_started"); n != 0 {
			t.Fatalf("round %d: %d agent tags left after Recovery cleared them", round, n)
		}
	}
}
