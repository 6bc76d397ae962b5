package heartbeat_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// TestRecordHeartbeatsMixedBatch: one statement decides each claim on its
// own, whatever else shares its batch.
func TestRecordHeartbeatsMixedBatch(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{})
	ctx := context.Background()
	a, aKey := e.machine(t)
	b, _ := e.machine(t)
	d, dOld := e.machine(t)
	dNew, _, _ := ed25519.GenerateKey(rand.Reader)
	if err := bmdb.SetAgentStarted(ctx, e.conn.Pool, d, dNew); err != nil { // a new agent replaced d's
		t.Fatal(err)
	}
	pub := func(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }
	claims := []bmdb.AgentKey{
		{Machine: a, Key: pub(aKey)},
		{Machine: a, Key: pub(aKey)}, // the same heartbeat twice
		{Machine: b, Key: pub(newKey())},
		{Machine: uuid.New(), Key: pub(aKey)},
		{Machine: d, Key: pub(dOld)},
		{Machine: d, Key: dNew},
	}
	got, err := bmdb.RecordHeartbeats(ctx, e.conn.Pool, claims)
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, true, false, false, false, true}
	if !slices.Equal(got, want) {
		t.Errorf("accepted %v, want %v", got, want)
	}
	rows, _ := e.conn.Pool.Query(ctx, `SELECT machine_id FROM machine_agent_heartbeat ORDER BY machine_id`)
	var beat []uuid.UUID
	for rows.Next() {
		var id uuid.UUID
		_ = rows.Scan(&id)
		beat = append(beat, id)
	}
	wantBeat := []uuid.UUID{a, d}
	slices.SortFunc(wantBeat, func(x, y uuid.UUID) int { return slices.Compare(x[:], y[:]) })
	if !slices.Equal(beat, wantBeat) {
		t.Errorf("machines with a heartbeat %v, want %v", beat, wantBeat)
	}
}

// TestConcurrentHeartbeatsThroughBatches sends many agents' heartbeats at
// once, so they share batches, and checks each got its own answer.
func TestConcurrentHeartbeatsThroughBatches(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{})
	ctx := context.Background()
	const n = 40
	var wg sync.WaitGroup
	for i := range n {
		id, key := e.machine(t)
		good := e.client(t, key)
		bad := e.client(t, newKey())
		wg.Go(func() {
			for range 5 {
				if _, err := good.Send(ctx, heartbeat.Request{MachineID: id.String()}); err != nil {
					t.Errorf("agent %d: %v", i, err)
				}
				if _, err := bad.Send(ctx, heartbeat.Request{MachineID: id.String()}); err == nil {
					t.Errorf("agent %d: wrong key accepted", i)
				}
			}
		})
	}
	wg.Wait()
	if got := e.count(t, "machine_agent_heartbeat"); got != n {
		t.Errorf("%d machines with heartbeats, want %d", got, n)
	}
}
