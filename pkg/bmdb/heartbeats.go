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
	// At most one key per machine matches its started tag, so s has one row
	// per machine and the upsert touches each row once. Rows are locked in
	// machine order, so concurrent batches do not deadlock each other.
	rows, err := db.Query(ctx, `
		WITH s AS MATERIALIZED (
			SELECT s.machine_id, s.agent_public_key
			FROM machine_agent_started s
			WHERE (s.machine_id, s.agent_public_key) IN (SELECT * FROM unnest($1::uuid[], $2::bytea[]))
			ORDER BY s.machine_id
			FOR KEY SHARE OF s
		), u AS (
			INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at, agent_heartbeat_coarse_at)
			SELECT machine_id, now(), now() FROM s
			ORDER BY machine_id
			ON CONFLICT (machine_id) DO UPDATE SET agent_heartbeat_at = excluded.agent_heartbeat_at
			RETURNING machine_id
		)
		SELECT s.machine_id, s.agent_public_key FROM s JOIN u USING (machine_id)`, ids, keys)
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

// agentKeyID is an AgentKey usable as a map key.
type agentKeyID struct {
	Machine uuid.UUID
	Key     string
}
