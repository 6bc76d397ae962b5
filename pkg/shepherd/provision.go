package shepherd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// ProvisioningConfig configures reconciliation of providers with BMDB.
type ProvisioningConfig struct {
	// Interval between reconciliations; default 1m.
	Interval time.Duration
	// MaxMachines is how many machines each provider may have: below it,
	// machines are created from free capacity. 0 never creates any.
	MaxMachines int
}

// ErrDisagreement means BMDB has machines their provider no longer lists.
// Provisioning then refuses to act until a person resolves it: creating
// machines or recording others while the two sides disagree could double a
// fleet or lose track of one.
var ErrDisagreement = errors.New("BMDB and provider disagree")

// ReconcileResult counts what a reconciliation did.
type ReconcileResult struct {
	Recorded  int // machines the provider had and BMDB did not
	Refreshed int // machines whose address, location or status changed
	Created   int // machines created from free capacity
	// Unreadable are machines the provider lists but cannot read (see
	// ProviderMachine.Problem): left as they are.
	Unreadable int
}

// Reconcile brings BMDB's provided machines of p in line with p: it records
// new machines, refreshes known ones and, below maxMachines, creates machines
// from free capacity. Only one shepherd reconciles a provider at a time; the
// others return at once with a zero result.
func Reconcile(ctx context.Context, conn *bmdb.Conn, p Provider, maxMachines int, log *slog.Logger, m *Metrics) (ReconcileResult, error) {
	var res ReconcileResult
	c, err := conn.Pool.Acquire(ctx)
	if err != nil {
		return res, err
	}
	defer c.Release()
	lockKey := "bmctl-provisioning:" + p.Type()
	var locked bool
	if err := c.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, lockKey).Scan(&locked); err != nil {
		return res, err
	}
	if !locked {
		return res, nil
	}
	defer func() {
		_, _ = c.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, lockKey)
	}()

	atProvider, err := p.ListMachines(ctx)
	if err != nil {
		return res, fmt.Errorf("listing machines at %s: %w", p.Type(), err)
	}
	known, err := bmdb.ListProvidedMachines(ctx, c, p.Type())
	if err != nil {
		return res, fmt.Errorf("listing %s machines in BMDB: %w", p.Type(), err)
	}
	listed := make(map[string]ProviderMachine, len(atProvider))
	for _, pm := range atProvider {
		listed[pm.ID] = pm
	}
	var missing []string
	for _, k := range known {
		if _, ok := listed[k.ProviderID]; !ok {
			missing = append(missing, k.ProviderID)
		}
	}
	if m != nil {
		m.Disagreements.WithLabelValues(p.Type()).Set(float64(len(missing)))
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		shown := missing[:min(len(missing), 5)]
		more := ""
		if len(missing) > len(shown) {
			more = fmt.Sprintf(" and %d more", len(missing)-len(shown))
		}
		return res, fmt.Errorf("%w: BMDB has %d %s machine(s) the provider no longer lists (%s%s); refusing to record or create machines until they are back at the provider or removed from BMDB",
			ErrDisagreement, len(missing), p.Type(), strings.Join(shown, ", "), more)
	}

	byID := make(map[string]bmdb.ProvidedMachine, len(known))
	for _, k := range known {
		byID[k.ProviderID] = k
	}
	count := func(action string) {
		if m != nil {
			m.Provisioned.WithLabelValues(p.Type(), action).Inc()
		}
	}
	for _, pm := range atProvider {
		if pm.Problem != "" {
			res.Unreadable++
			log.Warn("provider machine unreadable", "provider", p.Type(), "provider_id", pm.ID, "problem", pm.Problem)
			continue
		}
		k, ok := byID[pm.ID]
		if !ok {
			id, err := record(ctx, c, p, pm)
			if errors.Is(err, bmdb.ErrMachineExists) {
				continue // recorded by someone else meanwhile
			}
			if err != nil {
				return res, err
			}
			res.Recorded++
			count("recorded")
			log.Info("recorded provided machine", "machine", id, "provider", p.Type(), "provider_id", pm.ID, "address", pm.Address)
			continue
		}
		fresh := providedTag(p, pm)
		fresh.MachineID = k.MachineID
		if fresh != k {
			if err := bmdb.UpdateProvidedMachine(ctx, c, fresh); err != nil {
				return res, fmt.Errorf("refreshing machine %s: %w", k.MachineID, err)
			}
			res.Refreshed++
			count("refreshed")
			log.Info("refreshed provided machine", "machine", k.MachineID, "provider_id", pm.ID, "address", pm.Address, "status", pm.Status)
		}
	}

	want := maxMachines - len(atProvider)
	if want <= 0 {
		return res, nil
	}
	free, err := p.FreeCapacity(ctx)
	if err != nil {
		return res, fmt.Errorf("asking %s for free capacity: %w", p.Type(), err)
	}
	for range min(want, free) {
		pm, err := p.CreateMachine(ctx)
		if err != nil {
			return res, fmt.Errorf("creating a machine at %s: %w", p.Type(), err)
		}
		// A crash right here leaves the machine at the provider only; the
		// next reconciliation records it.
		id, err := record(ctx, c, p, pm)
		if errors.Is(err, bmdb.ErrMachineExists) {
			// Not a new machine: the provider answered the create with one
			// BMDB has. Creating more would only repeat it.
			return res, fmt.Errorf("creating a machine at %s: the provider answered with machine %s, which BMDB already has; not counted as created", p.Type(), pm.ID)
		}
		if err != nil {
			return res, err
		}
		res.Created++
		count("created")
		log.Info("created machine", "machine", id, "provider", p.Type(), "provider_id", pm.ID)
	}
	return res, nil
}

func providedTag(p Provider, pm ProviderMachine) bmdb.ProvidedMachine {
	status := pm.Status
	if status == "" {
		status = StatusUnknown
	}
	return bmdb.ProvidedMachine{Provider: p.Type(), ProviderID: pm.ID, Address: pm.Address, Location: pm.Location, Status: string(status)}
}

func record(ctx context.Context, db bmdb.DBTX, p Provider, pm ProviderMachine) (string, error) {
	id, err := bmdb.AddProvidedMachine(ctx, db, providedTag(p, pm))
	if err != nil {
		return "", fmt.Errorf("recording machine %s of %s: %w", pm.ID, p.Type(), err)
	}
	return id.String(), nil
}

// provisioner reconciles every provider on an interval.
func provision(ctx context.Context, conn *bmdb.Conn, providers []Provider, cfg ProvisioningConfig, log *slog.Logger, m *Metrics) {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	log = log.With("loop", "provisioning")
	for {
		for _, p := range providers {
			res, err := Reconcile(ctx, conn, p, cfg.MaxMachines, log, m)
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, ErrDisagreement):
				log.Error("provisioning refused", "provider", p.Type(), "err", err)
			case err != nil:
				log.Warn("provisioning failed", "provider", p.Type(), "err", err)
			case res != ReconcileResult{}:
				log.Info("provisioning reconciled", "provider", p.Type(), "recorded", res.Recorded, "refreshed", res.Refreshed, "created", res.Created, "unreadable", res.Unreadable)
			}
		}
		sleep(ctx, cfg.Interval, nil)
		if ctx.Err() != nil {
			return
		}
	}
}
