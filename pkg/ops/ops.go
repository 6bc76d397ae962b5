// Package ops is the operator's side of BMDB: the actions an operator takes
// on machines (clear a backoff, request a recovery, cancel work, hold,
// release, clear an attention mark, override a breaker), each written once
// as a plan (what would change, read only) and an apply (make exactly those
// changes and record each in work history with its actor). Run ties them
// together with dry runs and confirmation; Select turns what an operator
// typed into machines. The read side (pkg/fleet) never writes.
package ops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// DB is what actions run on: a pool (Run begins its own transactions).
type DB interface {
	bmdb.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
	BeginTx(ctx context.Context, o pgx.TxOptions) (pgx.Tx, error)
}

// Events operator actions record (their enum values come from migrations
// 0001, 0007 and 0010).
const (
	EventBackoffCleared    = bmdb.EventBackoffCleared
	EventRecoveryRequested = bmdb.Event("RecoveryRequested")
	EventCancelRequested   = bmdb.Event("CancelRequested")
	EventLockBroken        = bmdb.Event("LockBroken")
	EventHoldPlaced        = bmdb.Event("HoldPlaced")
	EventHoldReleased      = bmdb.Event("HoldReleased")
	EventAttentionCleared  = bmdb.Event("AttentionCleared")
	EventBreakerOverridden = bmdb.Event("BreakerOverridden")
)

// FleetMachine is the machine id history records fleet-wide actions under
// (a breaker override), since every history row names a machine.
var FleetMachine = uuid.Nil

// Actor names the person acting from this host: "user@host".
func Actor() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}

// CheckActor rejects an actor no one could read back (--as "").
func CheckActor(actor string) error {
	if strings.TrimSpace(actor) == "" {
		return errors.New("the actor (--as) must not be empty; give a name such as alice@jump1")
	}
	if strings.ContainsAny(actor, "\n\r\t") {
		return fmt.Errorf("the actor (--as) %q must be one line without tabs", actor)
	}
	return nil
}

// hostOf is the host part of "user@host", recorded as the event's session
// host for readers that predate the actor column.
func hostOf(actor string) string {
	if i := strings.LastIndexByte(actor, '@'); i >= 0 {
		return actor[i+1:]
	}
	return ""
}

// Change is one thing an action changes, and the history event recording it.
type Change struct {
	MachineID  uuid.UUID    `json:"machine_id"` // FleetMachine for fleet-wide changes
	Provider   string       `json:"provider"`
	ProviderID string       `json:"provider_id"`
	Process    bmdb.Process `json:"process"`
	Event      bmdb.Event   `json:"event"`
	// What says the change for people ("place a hold until ...").
	What string `json:"change"`
	// Cause is the history event's cause.
	Cause string `json:"cause"`

	// key identifies the change between the plan an operator confirmed and
	// the one applied; data is what apply needs.
	key  string
	data any
}

// Skip is a selected machine the action leaves as it is, and why.
type Skip struct {
	MachineID  uuid.UUID `json:"machine_id"`
	Provider   string    `json:"provider"`
	ProviderID string    `json:"provider_id"`
	Why        string    `json:"why"`
}

// Plan is what an action would do.
type Plan struct {
	Changes []Change `json:"changes"`
	Skipped []Skip   `json:"skipped"`
}

// Action is one operator action on resolved targets.
type Action interface {
	// Name says what the action does, for messages ("clear backoffs").
	Name() string
	// Plan returns what the action would change now. It only reads; with
	// lock it locks the rows it would change, for Apply in the same
	// transaction.
	Plan(ctx context.Context, tx pgx.Tx, lock bool) (Plan, error)
	// Apply makes the changes (a subset of a Plan made with lock in tx);
	// Run records them in history.
	Apply(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error
}

var (
	// ErrNothingToChange means the selected machines are all as the action
	// would leave them.
	ErrNothingToChange = errors.New("nothing to change")
	// ErrCanceled means the operator did not confirm.
	ErrCanceled = errors.New("canceled; nothing changed")
)

// Options say how Run acts.
type Options struct {
	// Actor is recorded in history with every change ("alice@jump1").
	Actor string
	// DryRun plans and changes nothing.
	DryRun bool
	// Confirm, if set, is shown the plan before anything changes; false or
	// an error changes nothing.
	Confirm func(Plan) (bool, error)
}

// Result is what Run did (or, in a dry run, would do).
type Result struct {
	Plan
	DryRun bool `json:"dry_run"`
	// Gone counts confirmed changes that no longer applied when they were
	// made (someone else made or undid them meanwhile).
	Gone int `json:"gone"`
}

// Run plans a, and unless it is a dry run or the operator declines, applies
// it: in one transaction it plans again with the rows locked, applies the
// changes that were confirmed and still apply, and records each in history
// with the actor. A dry run reads in a read-only transaction: it changes
// nothing, not even a sequence.
func Run(ctx context.Context, db DB, a Action, o Options) (Result, error) {
	if err := CheckActor(o.Actor); err != nil {
		return Result{}, err
	}
	var plan Plan
	err := pgx.BeginTxFunc(ctx, db, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		plan, err = a.Plan(ctx, tx, false)
		if err == nil {
			err = describe(ctx, tx, &plan)
		}
		return err
	})
	if err != nil {
		return Result{}, err
	}
	res := Result{Plan: plan, DryRun: o.DryRun}
	if len(plan.Changes) == 0 {
		return res, nothingError(a, plan)
	}
	if o.DryRun {
		return res, nil
	}
	if o.Confirm != nil {
		ok, err := o.Confirm(plan)
		if err != nil {
			return res, err
		}
		if !ok {
			return res, ErrCanceled
		}
	}
	confirmed := make(map[string]bool, len(plan.Changes))
	for _, c := range plan.Changes {
		confirmed[c.key] = true
	}
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		now, err := a.Plan(ctx, tx, true)
		if err != nil {
			return err
		}
		var apply []Change
		for _, c := range now.Changes {
			if confirmed[c.key] {
				apply = append(apply, c)
			}
		}
		if err := describe(ctx, tx, &Plan{Changes: apply}); err != nil {
			return err
		}
		if len(apply) > 0 {
			if err := a.Apply(ctx, tx, apply, o.Actor); err != nil {
				return err
			}
			if err := record(ctx, tx, apply, o.Actor); err != nil {
				return err
			}
		}
		res.Changes, res.Gone = apply, len(plan.Changes)-len(apply)
		return nil
	})
	if err != nil {
		return Result{Plan: plan}, err
	}
	if len(res.Changes) == 0 {
		return res, fmt.Errorf("%w: the %d planned change(s) no longer apply (changed meanwhile)", ErrNothingToChange, res.Gone)
	}
	return res, nil
}

func nothingError(a Action, p Plan) error {
	switch len(p.Skipped) {
	case 0:
		return fmt.Errorf("%w: %s found nothing to act on", ErrNothingToChange, a.Name())
	case 1:
		return fmt.Errorf("%w: machine %s: %s", ErrNothingToChange, p.Skipped[0].MachineID, p.Skipped[0].Why)
	}
	return fmt.Errorf("%w: none of the %d selected machines needs it (first: %s: %s)", ErrNothingToChange,
		len(p.Skipped), p.Skipped[0].MachineID, p.Skipped[0].Why)
}

// describe fills in the provider names of the plan's machines.
func describe(ctx context.Context, tx pgx.Tx, p *Plan) error {
	ids := make([]uuid.UUID, 0, len(p.Changes)+len(p.Skipped))
	for _, c := range p.Changes {
		ids = append(ids, c.MachineID)
	}
	for _, s := range p.Skipped {
		ids = append(ids, s.MachineID)
	}
	if len(ids) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT machine_id, provider, provider_id FROM machine_provided WHERE machine_id = ANY($1)`, ids)
	if err != nil {
		return err
	}
	names := map[uuid.UUID][2]string{}
	var id uuid.UUID
	var prov, pid string
	if _, err := pgx.ForEachRow(rows, []any{&id, &prov, &pid}, func() error {
		names[id] = [2]string{prov, pid}
		return nil
	}); err != nil {
		return err
	}
	for i := range p.Changes {
		n := names[p.Changes[i].MachineID]
		p.Changes[i].Provider, p.Changes[i].ProviderID = n[0], n[1]
	}
	for i := range p.Skipped {
		n := names[p.Skipped[i].MachineID]
		p.Skipped[i].Provider, p.Skipped[i].ProviderID = n[0], n[1]
	}
	return nil
}

// record writes one history event per change, naming the actor.
func record(ctx context.Context, tx pgx.Tx, changes []Change, actor string) error {
	ids := make([]uuid.UUID, len(changes))
	procs := make([]string, len(changes))
	events := make([]string, len(changes))
	causes := make([]string, len(changes))
	for i, c := range changes {
		ids[i], procs[i], events[i], causes[i] = c.MachineID, string(c.Process), string(c.Event), c.Cause
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO work_history (machine_id, process, event, event_at, cause, actor, session_component, session_host)
		SELECT m, p::process, e::work_event, now(), c, $5, 'bmctl', $6
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(m, p, e, c)`,
		ids, procs, events, causes, actor, hostOf(actor))
	return err
}

// checkFuture fails unless t is in the future by the database's clock, the
// one every rule reads holds and overrides with.
func checkFuture(ctx context.Context, tx pgx.Tx, what string, t time.Time) error {
	var future bool
	if err := tx.QueryRow(ctx, `SELECT $1::timestamptz > now()`, t).Scan(&future); err != nil {
		return err
	}
	if !future {
		return fmt.Errorf("%s would end at %s, which has passed", what, utc(t))
	}
	return nil
}

// skipUntouched adds a Skip, why, for each machine the plan does not change.
func (p *Plan) skipUntouched(machines []uuid.UUID, touched map[uuid.UUID]bool, why string) {
	for _, m := range machines {
		if !touched[m] {
			p.Skipped = append(p.Skipped, Skip{MachineID: m, Why: why})
		}
	}
}

// anyProcess names what an action with process p looks at, for messages.
func anyProcess(p bmdb.Process) string {
	if p == "" {
		return "any process"
	}
	return string(p)
}
