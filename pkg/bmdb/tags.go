package bmdb

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DBTX is what tag operations run on: a pool, a connection or a transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ProvidedMachine is a machine's provided tag.
type ProvidedMachine struct {
	MachineID  uuid.UUID `db:"machine_id"`
	Provider   string    `db:"provider"`
	ProviderID string    `db:"provider_id"`
	Address    string    `db:"provider_address"`
	Location   string    `db:"provider_location"`
	Status     string    `db:"provider_status"`
}

// ErrMachineExists means a provider already has a machine with that id.
var ErrMachineExists = errors.New("machine already registered")

// AddProvidedMachine creates a machine with its provided tag and returns it.
func AddProvidedMachine(ctx context.Context, db DBTX, m ProvidedMachine) (uuid.UUID, error) {
	var id uuid.UUID
	err := db.QueryRow(ctx, `
		WITH m AS (INSERT INTO machines DEFAULT VALUES RETURNING machine_id)
		INSERT INTO machine_provided (machine_id, provider, provider_id, provider_address, provider_location, provider_status)
		SELECT machine_id, $1, $2, $3, $4, $5 FROM m
		RETURNING machine_id`,
		m.Provider, m.ProviderID, m.Address, m.Location, statusOrUnknown(m.Status)).Scan(&id)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return uuid.Nil, fmt.Errorf("%w: provider %s id %s", ErrMachineExists, m.Provider, m.ProviderID)
	}
	return id, err
}

func statusOrUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// GetProvidedMachine returns a machine's provided tag.
func GetProvidedMachine(ctx context.Context, db DBTX, id uuid.UUID) (ProvidedMachine, error) {
	rows, _ := db.Query(ctx, `
		SELECT machine_id, provider, provider_id, coalesce(provider_address, '') AS provider_address,
		       coalesce(provider_location, '') AS provider_location, provider_status
		FROM machine_provided WHERE machine_id = $1`, id)
	return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[ProvidedMachine])
}

// ListProvidedMachines returns the provided tags of one provider's machines.
func ListProvidedMachines(ctx context.Context, db DBTX, provider string) ([]ProvidedMachine, error) {
	rows, _ := db.Query(ctx, `
		SELECT machine_id, provider, provider_id, coalesce(provider_address, '') AS provider_address,
		       coalesce(provider_location, '') AS provider_location, provider_status
		FROM machine_provided WHERE provider = $1 ORDER BY provider_id`, provider)
	return pgx.CollectRows(rows, pgx.RowToStructByName[ProvidedMachine])
}

// UpdateProvidedMachine refreshes address, location and status of a machine.
func UpdateProvidedMachine(ctx context.Context, db DBTX, m ProvidedMachine) error {
	_, err := db.Exec(ctx, `
		UPDATE machine_provided SET provider_address = $2, provider_location = $3, provider_status = $4
		WHERE machine_id = $1
		  AND (provider_address, provider_location, provider_status) IS DISTINCT FROM ($2, $3, $4)`,
		m.MachineID, m.Address, m.Location, statusOrUnknown(m.Status))
	return err
}

// SetAgentStarted records that the agent runs with the given public key.
func SetAgentStarted(ctx context.Context, db DBTX, machine uuid.UUID, key ed25519.PublicKey) error {
	_, err := db.Exec(ctx, `
		INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key)
		VALUES ($1, now(), $2)
		ON CONFLICT (machine_id) DO UPDATE SET agent_started_at = excluded.agent_started_at,
			agent_public_key = excluded.agent_public_key`, machine, []byte(key))
	return err
}

// ClearAgentTags removes the agent-started and heartbeat tags, so that
// AgentStart picks the machine up again. The started tag goes first: a
// heartbeat locks it before the heartbeat row, and taking the two in the
// other order here deadlocked with heartbeats arriving meanwhile.
func ClearAgentTags(ctx context.Context, db DBTX, machine uuid.UUID) error {
	if _, err := db.Exec(ctx, `DELETE FROM machine_agent_started WHERE machine_id = $1`, machine); err != nil {
		return err
	}
	_, err := db.Exec(ctx, `DELETE FROM machine_agent_heartbeat WHERE machine_id = $1`, machine)
	return err
}

// RecordHeartbeat upserts the heartbeat tag of a machine whose started agent
// holds key. It reports false, writing nothing, when the machine has no
// started agent or a different key. The started tag is key-share locked so a
// concurrent Recovery cannot clear it between the check and the write.
func RecordHeartbeat(ctx context.Context, db DBTX, machine uuid.UUID, key ed25519.PublicKey) (bool, error) {
	tag, err := db.Exec(ctx, `
		WITH s AS (
			SELECT machine_id FROM machine_agent_started
			WHERE machine_id = $1 AND agent_public_key = $2
			FOR KEY SHARE
		)
		INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at, agent_heartbeat_coarse_at)
		SELECT machine_id, now(), now() FROM s
		ON CONFLICT (machine_id) DO UPDATE SET agent_heartbeat_at = excluded.agent_heartbeat_at`,
		machine, []byte(key))
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}
