package fleet

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Stats is the fleet at a glance.
type Stats struct {
	Machines int `json:"machines"`
	// ByState counts machines per state; every state is present.
	ByState map[State]int `json:"by_state"`
	// Processes counts active work and unexpired backoffs per process; every
	// process is present.
	Processes []ProcessStats `json:"processes"`
	Sessions  SessionStats   `json:"sessions"`
	// OldestWork is the work item held longest, nil when nothing is held.
	OldestWork *OldestWork `json:"oldest_work"`
	// Policy is what the states were judged by: the running shepherd's.
	Policy bmdb.RecordedPolicy `json:"policy"`
	// Brakes: breakers (Recovery stops where one is open), the heartbeat
	// observer, holds and needs-attention marks.
	Brakes bmdb.BrakesStatus `json:"brakes"`
}

type ProcessStats struct {
	Process  bmdb.Process `json:"process"`
	Work     int          `json:"work"`
	Backoffs int          `json:"backoffs"`
}

type SessionStats struct {
	Live    int `json:"live"`
	Expired int `json:"expired"`
}

type OldestWork struct {
	MachineID        uuid.UUID    `json:"machine_id"`
	ProviderID       string       `json:"provider_id"`
	Process          bmdb.Process `json:"process"`
	Detail           string       `json:"detail"`
	StartedAt        time.Time    `json:"started_at"`
	SessionComponent string       `json:"session_component"`
	SessionHost      string       `json:"session_host"`
}

// GetStats counts the fleet in one snapshot.
func GetStats(ctx context.Context, db DB, th bmdb.RecoveryThresholds) (Stats, error) {
	st := Stats{ByState: map[State]int{}}
	for _, s := range States {
		st.ByState[s] = 0
	}
	err := snapshot(ctx, db, func(db DB) error {
		rp, err := bmdb.CurrentPolicy(ctx, db)
		if err != nil {
			return err
		}
		st.Policy = rp
		pol, err := resolvePolicy(ctx, db, &rp.Policy, th)
		if err != nil {
			return err
		}
		if st.Brakes, err = bmdb.Brakes(ctx, db, pol); err != nil {
			return err
		}
		rows, err := db.Query(ctx, "SELECT state, count(*) FROM ("+machineRowsSQL(pol)+") x GROUP BY state", thresholdArgs(pol)...)
		if err != nil {
			return err
		}
		var state State
		var n int
		if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error {
			st.ByState[state] = n
			st.Machines += n
			return nil
		}); err != nil {
			return err
		}
		rows, err = db.Query(ctx, `
			SELECT p.process,
			       (SELECT count(*) FROM work w WHERE w.process = p.process),
			       (SELECT count(*) FROM work_backoff b WHERE b.process = p.process AND b.backoff_until > now())
			FROM unnest(enum_range(NULL::process)) AS p(process) ORDER BY p.process`)
		if err != nil {
			return err
		}
		if st.Processes, err = pgx.CollectRows(rows, pgx.RowToStructByPos[ProcessStats]); err != nil {
			return err
		}
		if err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE session_deadline > now()), count(*) FILTER (WHERE session_deadline <= now()) FROM sessions`).
			Scan(&st.Sessions.Live, &st.Sessions.Expired); err != nil {
			return err
		}
		rows, err = db.Query(ctx, `
			SELECT w.machine_id, coalesce(p.provider_id, ''), w.process, w.work_detail, w.work_started_at, s.session_component, s.session_host
			FROM work w JOIN sessions s ON s.session_id = w.session_id
			LEFT JOIN machine_provided p ON p.machine_id = w.machine_id
			ORDER BY w.work_started_at, w.machine_id LIMIT 1`)
		if err != nil {
			return err
		}
		ow, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByPos[OldestWork])
		switch {
		case err == nil:
			st.OldestWork = &ow
		case !errors.Is(err, pgx.ErrNoRows):
			return err
		}
		return nil
	})
	return st, err
}
