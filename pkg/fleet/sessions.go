package fleet

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// SessionInfo is a session and the work it holds. An expired session is past
// its deadline but not yet swept; its work is about to be recorded as lost.
type SessionInfo struct {
	ID              uuid.UUID     `json:"session_id"`
	Component       string        `json:"component"`
	Host            string        `json:"host"`
	PID             int           `json:"pid"`
	Version         string        `json:"version"`
	CreatedAt       time.Time     `json:"created_at"`
	IntervalSeconds int           `json:"interval_seconds"`
	Deadline        time.Time     `json:"deadline"`
	Expired         bool          `json:"expired"`
	Work            []SessionWork `json:"work"`
}

// SessionWork is a work item held by a session.
type SessionWork struct {
	MachineID  uuid.UUID    `json:"machine_id"`
	ProviderID string       `json:"provider_id"`
	Process    bmdb.Process `json:"process"`
	Detail     string       `json:"detail"`
	StartedAt  time.Time    `json:"started_at"`
}

// ListSessions returns every session, live and expired, oldest first, each
// with the work it holds.
func ListSessions(ctx context.Context, db DB) ([]SessionInfo, error) {
	var out []SessionInfo
	err := snapshot(ctx, db, func(db DB) error {
		rows, err := db.Query(ctx, `
			SELECT session_id, session_component, session_host, session_pid, session_version, session_created_at,
			       session_interval_seconds, session_deadline, session_deadline <= now()
			FROM sessions ORDER BY session_created_at, session_id`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (SessionInfo, error) {
			var s SessionInfo
			err := row.Scan(&s.ID, &s.Component, &s.Host, &s.PID, &s.Version, &s.CreatedAt, &s.IntervalSeconds, &s.Deadline, &s.Expired)
			s.Work = []SessionWork{}
			return s, err
		})
		if err != nil {
			return err
		}
		index := make(map[uuid.UUID]int, len(out))
		for i, s := range out {
			index[s.ID] = i
		}
		rows, err = db.Query(ctx, `
			SELECT w.session_id, w.machine_id, coalesce(p.provider_id, ''), w.process, w.work_detail, w.work_started_at
			FROM work w LEFT JOIN machine_provided p ON p.machine_id = w.machine_id
			ORDER BY w.work_started_at, w.machine_id`)
		if err != nil {
			return err
		}
		var sid uuid.UUID
		var w SessionWork
		_, err = pgx.ForEachRow(rows, []any{&sid, &w.MachineID, &w.ProviderID, &w.Process, &w.Detail, &w.StartedAt}, func() error {
			if i, ok := index[sid]; ok {
				out[i].Work = append(out[i].Work, w)
			}
			return nil
		})
		return err
	})
	return out, err
}
