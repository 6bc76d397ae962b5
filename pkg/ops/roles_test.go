package ops_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/ops"
)

// TestOperatorRoleDoesOperatorActionsOnly: a login holding only
// bmctl_operator can do every operator action and none of the components'
// writes: it cannot take a work lock, start a session, edit tags or history.
func TestOperatorRoleDoesOperatorActionsOnly(t *testing.T) {
	ctx := context.Background()
	owner, ids := fleet(t, 3)
	pub, _, _ := ed25519.GenerateKey(nil)
	for _, id := range ids {
		if err := bmdb.SetAgentStarted(ctx, owner, id, pub); err != nil {
			t.Fatal(err)
		}
	}
	backoff(t, owner, ids[0])
	if _, err := owner.Exec(ctx, `INSERT INTO machine_attention (machine_id, process, attention_reason) VALUES ($1, 'ShepherdRecovery', 'budget')`, ids[1]); err != nil {
		t.Fatal(err)
	}
	var sid string
	if err := owner.QueryRow(ctx, `INSERT INTO sessions (session_component, session_interval_seconds, session_deadline)
		VALUES ('shepherd', 60, now() + interval '1 hour') RETURNING session_id`).Scan(&sid); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Exec(ctx, `INSERT INTO work (machine_id, session_id, process) VALUES ($1, $2, 'ShepherdRecovery')`, ids[2], sid); err != nil {
		t.Fatal(err)
	}

	op, err := pgxpool.New(ctx, pgtest.LoginURL(t, owner.Config().ConnString(), bmdb.RoleOperator))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(op.Close)
	if err := bmdb.CheckGrants(ctx, op, bmdb.RoleOperator); err != nil {
		t.Fatal(err)
	}
	until := time.Now().Add(time.Hour)
	yes := ops.Options{Actor: "alice@jump1", Confirm: func(ops.Plan) (bool, error) { return true, nil }}
	for _, a := range []ops.Action{
		ops.ClearBackoff{Machines: ids[:1]},
		ops.ClearAttention{Machines: ids[1:2], Process: bmdb.ProcessShepherdRecovery, Reason: "fixed"},
		ops.Hold{Machines: ids, Reason: "maintenance", Until: &until},
		ops.Release{Machines: ids},
		ops.RequestRecovery{Machines: ids[:2]},
		ops.CancelWork{Machines: ids[2:], Process: bmdb.ProcessShepherdRecovery, Reason: "wrong machine"},
		ops.OverrideBreaker{Location: "fra1", Until: until, Reason: "known outage"},
	} {
		if _, err := ops.Run(ctx, op, a, yes); err != nil {
			t.Errorf("operator: %s: %v", a.Name(), err)
		}
	}
	var events int
	if err := op.QueryRow(ctx, `SELECT count(*) FROM work_history WHERE actor = 'alice@jump1'`).Scan(&events); err != nil || events < 7 {
		t.Errorf("operator's actions recorded %d events (%v)", events, err)
	}

	for what, sql := range map[string]string{
		"take a work lock":     `INSERT INTO work (machine_id, session_id, process) VALUES ('` + ids[0].String() + `', '` + sid + `', 'ShepherdAgentStart')`,
		"start a session":      `INSERT INTO sessions (session_component, session_interval_seconds, session_deadline) VALUES ('x', 1, now())`,
		"delete history":       `DELETE FROM work_history`,
		"rewrite history":      `UPDATE work_history SET cause = 'x'`,
		"edit a tag":           `UPDATE machine_provided SET provider_status = 'active'`,
		"delete a machine":     `DELETE FROM machines`,
		"write a backoff":      `INSERT INTO work_backoff (machine_id, process, backoff_until, backoff_cause, backoff_last_interval_seconds) VALUES ('` + ids[1].String() + `', 'ShepherdRecovery', now(), 'x', 1)`,
		"rewrite an agent key": `UPDATE machine_agent_started SET agent_public_key = '\x00'`,
	} {
		_, err := op.Exec(ctx, sql)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("operator could %s: %v", what, err)
		}
	}
}
