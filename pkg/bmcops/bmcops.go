// Package bmcops is what operators do with machines' BMCs by hand: read
// every BMC's state (bmctl bmc status), and power a machine on, off or
// through a verified cycle as an override recorded in its history with the
// operator and the reason (bmctl bmc power).
package bmcops

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/pkg/bmc"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// MachineStatus is one machine's BMC as seen now.
type MachineStatus struct {
	Machine string `json:"machine"`
	Type    string `json:"type,omitempty"`
	Address string `json:"address,omitempty"`
	// Answers is whether the BMC answered the status read.
	Answers bool     `json:"answers"`
	Power   string   `json:"power,omitempty"`
	Resets  []string `json:"resets,omitempty"`
	// Latency is how long the status read took.
	Latency time.Duration `json:"latency_ns"`
	// Problem says what is wrong, if anything.
	Problem string `json:"problem,omitempty"`
}

// StatusOptions bound a status sweep.
type StatusOptions struct {
	// Timeout bounds each machine's read. Default 30s.
	Timeout time.Duration
	// Parallel is how many BMCs are read at once. Default 16.
	Parallel int
}

// Status reads the BMC of each machine (inventory ids) and returns one
// entry per machine, in the order given. It only reads.
func Status(ctx context.Context, p *shepherd.StaticProvider, ids []string, o StatusOptions) []MachineStatus {
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.Parallel <= 0 {
		o.Parallel = 16
	}
	out := make([]MachineStatus, len(ids))
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				out[i] = MachineStatus{Machine: id, Problem: ctx.Err().Error()}
				return
			}
			defer func() { <-sem }()
			out[i] = status(ctx, p, id, o.Timeout)
		})
	}
	wg.Wait()
	return out
}

func status(ctx context.Context, p *shepherd.StaticProvider, id string, timeout time.Duration) MachineStatus {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s := MachineStatus{Machine: id}
	c, _, _, err := p.MachineBMC(ctx, id)
	if err != nil {
		s.Problem = err.Error()
		return s
	}
	s.Type, s.Address = c.Kind(), c.Address()
	start := time.Now()
	st, err := c.Status(ctx)
	s.Latency = time.Since(start)
	if err != nil {
		s.Problem = err.Error()
		return s
	}
	s.Answers, s.Power = true, string(st.Power)
	for _, r := range st.Resets {
		s.Resets = append(s.Resets, string(r))
	}
	if len(st.Resets) > 0 && !st.Allows(bmc.ResetForceRestart) && !st.Allows(bmc.ResetPowerCycle) &&
		!(st.Allows(bmc.ResetForceOff) && (st.Allows(bmc.ResetOn) || st.Allows(bmc.ResetForceOn))) {
		s.Problem = "allows no hard reboot (ForceRestart, PowerCycle, or ForceOff then On)"
	}
	return s
}

// Actions are the power actions an operator may take.
var Actions = []string{"on", "off", "cycle"}

// PowerRequest is an operator's power override of one machine.
type PowerRequest struct {
	Machine uuid.UUID
	Action  string // on, off, cycle
	Reason  string
	Actor   string
	// Force acts even while a shepherd holds work on the machine.
	Force bool
}

// ErrBusy means a shepherd is working on the machine.
var ErrBusy = errors.New("a shepherd is working on the machine")

// Power takes a verified power action through the machine's BMC and
// records it, done or failed, in the machine's history as a PowerAction
// event with the operator and the reason. The report says what happened.
func Power(ctx context.Context, pool *pgxpool.Pool, p *shepherd.StaticProvider, r PowerRequest) (string, error) {
	if !slices.Contains(Actions, r.Action) {
		return "", fmt.Errorf("power action %q: want on, off or cycle", r.Action)
	}
	if strings.TrimSpace(r.Reason) == "" {
		return "", errors.New("a power override needs a reason (--reason), for the machine's history")
	}
	m, err := bmdb.GetProvidedMachine(ctx, pool, r.Machine)
	if err != nil {
		return "", err
	}
	if m.Provider != p.Type() {
		return "", fmt.Errorf("machine %s is provided by %q, not by inventory %q; give the inventory it comes from", r.Machine, m.Provider, p.Type())
	}
	if !r.Force {
		var held []string
		rows, err := pool.Query(ctx, `SELECT process::text FROM work WHERE machine_id = $1 ORDER BY process`, r.Machine)
		if err == nil {
			held, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil {
			return "", err
		}
		if len(held) > 0 {
			return "", fmt.Errorf("%w (%s); wait for it to end, or give --force", ErrBusy, strings.Join(held, ", "))
		}
	}
	c, ssh, bounds, err := p.MachineBMC(ctx, m.ProviderID)
	if err != nil {
		return "", err
	}
	var rep bmc.Report
	switch r.Action {
	case "on":
		rep, err = bmc.SwitchOn(ctx, c, ssh, bounds)
	case "off":
		rep, err = bmc.SwitchOff(ctx, c, bounds)
	case "cycle":
		rep, err = bmc.Reboot(ctx, c, ssh, bounds)
	}
	outcome := rep.String()
	if err != nil {
		outcome = "failed: " + err.Error()
	}
	cause := fmt.Sprintf("power %s by %s (reason: %s): %s", r.Action, r.Actor, strings.TrimSpace(r.Reason), outcome)
	// Recorded even if the caller gave up meanwhile: the power changed.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if rerr := bmdb.RecordPowerAction(rctx, pool, r.Machine, cause, r.Actor); rerr != nil {
		return outcome, errors.Join(err, fmt.Errorf("recording the power action in history: %w", rerr))
	}
	if err != nil {
		return "", err
	}
	return outcome, nil
}
