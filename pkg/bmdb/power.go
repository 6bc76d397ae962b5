package bmdb

import (
	"context"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// EventPowerAction records a power action taken through a machine's BMC:
// by Recovery (in the transaction that finishes its work) or by an
// operator (bmctl bmc power). Its cause says what was done and what was
// seen ("redfish ForceRestart at https://10.1.0.11: Off after 4s, On after
// 31s, SSH after 52s").
const EventPowerAction Event = "PowerAction"

// RecordEvent appends an event of the work's process to the machine's
// history in tx, as the work's session: for what happened during the work,
// committed together with its end.
func (w *Work) RecordEvent(ctx context.Context, tx pgx.Tx, ev Event, cause string) error {
	_, err := tx.Exec(ctx, `
		INSERT INTO work_history (machine_id, process, event, cause, session_id, session_component, session_host)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		w.Machine, w.Process, ev, cause, w.s.id, w.s.component, w.s.host)
	return err
}

// Execer is a pool, a connection or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// RecordPowerAction records an operator's power action on a machine
// ("alice@jump1"), under Recovery's process, whose history it belongs to.
func RecordPowerAction(ctx context.Context, db Execer, machine uuid.UUID, cause, actor string) error {
	host := ""
	if i := strings.LastIndexByte(actor, '@'); i >= 0 {
		host = actor[i+1:]
	}
	_, err := db.Exec(ctx, `
		INSERT INTO work_history (machine_id, process, event, cause, actor, session_component, session_host)
		VALUES ($1, 'ShepherdRecovery', $2, $3, $4, 'bmctl', $5)`,
		machine, EventPowerAction, cause, actor, host)
	return err
}
