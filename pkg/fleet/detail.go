package fleet

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// MachineDetail is everything BMDB knows about one machine.
type MachineDetail struct {
	MachineSummary
	Tags     Tags           `json:"tags"`
	Work     []WorkHeld     `json:"work_items"`
	Backoffs []BackoffInfo  `json:"backoffs"`
	History  []HistoryEvent `json:"history"`
}

// Tags are a machine's tags; a missing tag is nil.
type Tags struct {
	Provided       *bmdb.ProvidedMachine `json:"provided"`
	AgentStarted   *AgentStartedTag      `json:"agent_started"`
	Heartbeat      *HeartbeatTag         `json:"agent_heartbeat"`
	HardwareReport *HardwareReportTag    `json:"hardware_report"`
}

type AgentStartedTag struct {
	At        time.Time `json:"at"`
	PublicKey string    `json:"public_key"` // hex of the ed25519 key
}

type HeartbeatTag struct {
	At time.Time `json:"at"`
}

type HardwareReportTag struct {
	At     time.Time       `json:"at"`
	Report json.RawMessage `json:"report"`
}

// DetailOptions tune GetMachineDetail.
type DetailOptions struct {
	// HistoryLimit is how many of the newest history events to include
	// (default 20).
	HistoryLimit int
	Thresholds   bmdb.RecoveryThresholds
}

// GetMachineDetail returns a machine's summary, tags, every work item with its
// session, backoffs (active and expired) and newest history events, read in
// one snapshot. Fails with ErrUnknownMachine for a machine that does not exist.
func GetMachineDetail(ctx context.Context, db DB, id uuid.UUID, o DetailOptions) (MachineDetail, error) {
	var d MachineDetail
	if o.HistoryLimit <= 0 {
		o.HistoryLimit = 20
	}
	err := snapshot(ctx, db, func(tx DB) error {
		var err error
		if d.MachineSummary, err = GetMachine(ctx, tx, id, o.Thresholds); err != nil {
			return err
		}
		if d.Tags, err = getTags(ctx, tx, id); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `
			SELECT w.process, w.work_detail, w.work_started_at, w.session_id, s.session_component, s.session_host
			FROM work w JOIN sessions s ON s.session_id = w.session_id
			WHERE w.machine_id = $1 ORDER BY w.work_started_at`, id)
		if err != nil {
			return err
		}
		if d.Work, err = pgx.CollectRows(rows, pgx.RowToStructByPos[WorkHeld]); err != nil {
			return err
		}
		if d.Backoffs, err = ListBackoffs(ctx, tx, BackoffFilter{Machine: id}); err != nil {
			return err
		}
		d.History, err = History(ctx, tx, id, HistoryOptions{Limit: o.HistoryLimit})
		return err
	})
	return d, err
}

func getTags(ctx context.Context, db DB, id uuid.UUID) (Tags, error) {
	var t Tags
	p, err := bmdb.GetProvidedMachine(ctx, db, id)
	switch {
	case err == nil:
		t.Provided = &p
	case !errors.Is(err, pgx.ErrNoRows):
		return t, err
	}
	var (
		startedAt               *time.Time
		key                     []byte
		heartbeatAt, reportedAt *time.Time
		report                  []byte
	)
	err = db.QueryRow(ctx, `
		SELECT s.agent_started_at, s.agent_public_key, h.agent_heartbeat_at, r.hardware_reported_at, r.hardware_report
		FROM machines m
		LEFT JOIN machine_agent_started s ON s.machine_id = m.machine_id
		LEFT JOIN machine_agent_heartbeat h ON h.machine_id = m.machine_id
		LEFT JOIN machine_hardware_report r ON r.machine_id = m.machine_id
		WHERE m.machine_id = $1`, id).Scan(&startedAt, &key, &heartbeatAt, &reportedAt, &report)
	if err != nil {
		return t, err
	}
	if startedAt != nil {
		t.AgentStarted = &AgentStartedTag{At: *startedAt, PublicKey: hex.EncodeToString(key)}
	}
	if heartbeatAt != nil {
		t.Heartbeat = &HeartbeatTag{At: *heartbeatAt}
	}
	if reportedAt != nil {
		t.HardwareReport = &HardwareReportTag{At: *reportedAt, Report: report}
	}
	return t, nil
}

// snapshot runs fn in a read-only repeatable-read transaction, so views that
// read several tables see them at one moment. Given a transaction (or
// anything that cannot begin one), fn runs on it as it is.
func snapshot(ctx context.Context, db DB, fn func(db DB) error) error {
	b, ok := db.(interface {
		BeginTx(context.Context, pgx.TxOptions) (pgx.Tx, error)
	})
	if _, isTx := db.(pgx.Tx); isTx || !ok {
		return fn(db)
	}
	return pgx.BeginTxFunc(ctx, b, pgx.TxOptions{BeginQuery: snapshotBegin},
		func(tx pgx.Tx) error { return fn(tx) })
}

// snapshotBegin begins a view's transaction. JIT is off in it: the views'
// joins over every rule's tables are estimated at millions of rows (on
// small or unanalyzed tables too), which is past jit_above_cost, and then
// compiling them took 1.2 s per query where running them takes a
// millisecond (a 9-machine fleet's page: 1.9 s with JIT, the TUI's tests
// timing out on it). JIT pays off for long analytic scans, never for these.
const snapshotBegin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL jit = off"
