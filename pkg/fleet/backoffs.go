package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
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

// ErrNoBackoff means there was no backoff to clear.
var ErrNoBackoff = errors.New("no backoff to clear")

// Operator names the person acting from this host, for the history of
// operator actions: "user@host".
func Operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// ClearBackoff deletes a machine's backoffs (only process's, unless empty),
// active or expired, so the next failure starts from the initial interval
// again, and records a BackoffCleared event per backoff in the machine's
// history, in the same transaction. operator ("user@host") goes in the cause
// and the event's session host. It returns what it cleared, or ErrNoBackoff.
func ClearBackoff(ctx context.Context, db DB, machine uuid.UUID, process bmdb.Process, operator string) ([]BackoffInfo, error) {
	var cleared []BackoffInfo
	err := inTx(ctx, db, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			WITH cleared AS (
				DELETE FROM work_backoff WHERE machine_id = $1 AND ($2 = '' OR process::text = $2)
				RETURNING machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds
			), logged AS (
				INSERT INTO work_history (machine_id, process, event, cause, session_component, session_host)
				SELECT machine_id, process, 'BackoffCleared',
				       'cleared by ' || $3 || ' (was until ' || to_char(backoff_until AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC: ' || backoff_cause || ')',
				       'bmctl', $4
				FROM cleared
			)
			SELECT c.machine_id, coalesce(p.provider, ''), coalesce(p.provider_id, ''), c.process, c.backoff_until,
			       c.backoff_cause, c.backoff_last_interval_seconds, c.backoff_until > now()
			FROM cleared c LEFT JOIN machine_provided p ON p.machine_id = c.machine_id
			ORDER BY c.process`, machine, string(process), operator, hostOf(operator))
		if err != nil {
			return err
		}
		cleared, err = pgx.CollectRows(rows, pgx.RowToStructByPos[BackoffInfo])
		if err == nil && len(cleared) == 0 {
			what := "any process"
			if process != "" {
				what = string(process)
			}
			return fmt.Errorf("%w: machine %s has no backoff for %s", ErrNoBackoff, machine, what)
		}
		return err
	})
	return cleared, err
}

func hostOf(operator string) string {
	for i := len(operator) - 1; i >= 0; i-- {
		if operator[i] == '@' {
			return operator[i+1:]
		}
	}
	return ""
}

// inTx runs fn in a transaction of db, or in db itself if it is one.
func inTx(ctx context.Context, db DB, fn func(tx pgx.Tx) error) error {
	if tx, ok := db.(pgx.Tx); ok {
		return fn(tx)
	}
	b, ok := db.(interface {
		Begin(context.Context) (pgx.Tx, error)
	})
	if !ok {
		return errors.New("fleet: database handle cannot begin a transaction")
	}
	return pgx.BeginFunc(ctx, b, fn)
}
