package fleet

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// BackoffInfo is a machine's backoff for one process. An expired backoff no
// longer keeps the machine out, but its interval still grows the next one.
type BackoffInfo struct {
	MachineID           uuid.UUID    `json:"machine_id"`
	Provider            string       `json:"provider"`
	ProviderID          string       `json:"provider_id"`
	Process             bmdb.Process `json:"process"`
	Until               time.Time    `json:"until"`
	Cause               string       `json:"cause"`
	LastIntervalSeconds int64        `json:"last_interval_seconds"`
	Active              bool         `json:"active"`
}

// BackoffFilter narrows a backoff list; zero values keep everything.
type BackoffFilter struct {
	Machine    uuid.UUID
	Process    bmdb.Process
	ActiveOnly bool
}

// ListBackoffs returns backoffs, the ones ending soonest first.
func ListBackoffs(ctx context.Context, db DB, f BackoffFilter) ([]BackoffInfo, error) {
	rows, err := db.Query(ctx, `
		SELECT b.machine_id, coalesce(p.provider, ''), coalesce(p.provider_id, ''), b.process, b.backoff_until,
		       b.backoff_cause, b.backoff_last_interval_seconds, b.backoff_until > now()
		FROM work_backoff b LEFT JOIN machine_provided p ON p.machine_id = b.machine_id
		WHERE ($1::uuid IS NULL OR b.machine_id = $1)
		  AND ($2 = '' OR b.process::text = $2)
		  AND (NOT $3 OR b.backoff_until > now())
		ORDER BY b.backoff_until, b.machine_id, b.process`,
		nullUUID(f.Machine), string(f.Process), f.ActiveOnly)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[BackoffInfo])
}

func nullUUID(id uuid.UUID) *uuid.UUID {
	if id == uuid.Nil {
		return nil
	}
	return &id
}
