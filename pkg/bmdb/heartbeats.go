package bmdb

import (
	"context"
	"crypto/ed25519"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// AgentKey is a heartbeat's claim: key is the agent key of machine.
type AgentKey struct {
	Machine uuid.UUID
	Key     ed25519.PublicKey
}

// RecordHeartbeats is RecordHeartbeat for many heartbeats in one statement,
// so an endpoint under load pays one round trip and one commit for a batch.
// It reports, index by index, which claims held and were recorded; the
// others wrote nothing. Claims may repeat and may name one machine with
// several keys (an old agent still running beside a new one).
func RecordHeartbeats(ctx context.Context, db DBTX, claims []AgentKey) ([]bool, error) {
	ids := make([]uuid.UUID, len(claims))
	keys := make([][]byte, len(claims))
	for i, c := range claims {
		ids[i], keys[i] = c.Machine, c.Key
	}
	// bmdb_record_heartbeats (migration 0013) writes only claims whose key
	// is the machine's started agent's key: the endpoint's role may write
	// heartbeats through it and not otherwise.
	rows, err := db.Query(ctx, `SELECT machine_id, agent_public_key FROM bmdb_record_heartbeats($1::uuid[], $2::bytea[])`, ids, keys)
	if err != nil {
		return nil, err
	}
	recorded := map[agentKeyID]bool{}
	var m uuid.UUID
	var k []byte
	_, err = pgx.ForEachRow(rows, []any{&m, &k}, func() error {
		recorded[agentKeyID{m, string(k)}] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	ok := make([]bool, len(claims))
	for i, c := range claims {
		ok[i] = recorded[agentKeyID{c.Machine, string(c.Key)}]
	}
	return ok, nil
}

// RecordHardwareReport records a heartbeat and the hardware report it
// carries, both or neither: only when key is machine's started agent's key.
func RecordHardwareReport(ctx context.Context, db DBTX, machine uuid.UUID, key ed25519.PublicKey, report []byte) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `SELECT bmdb_record_hardware_report($1, $2, $3)`, machine, []byte(key), report).Scan(&ok)
	return ok, err
}

// agentKeyID is an AgentKey usable as a map key.
type agentKeyID struct {
	Machine uuid.UUID
	Key     string
}
