// Package shepherd runs the control loops that bring machines into service
// (AgentStart) and keep them there (Recovery), and reconciles providers'
// machines with BMDB (provisioning).
package shepherd

import (
	"context"
	"errors"
)

// ProviderStatus is a provider's view of a machine, normalised across
// providers and stored in BMDB as machine_provided.provider_status.
type ProviderStatus string

const (
	StatusUnknown      ProviderStatus = "unknown"
	StatusProvisioning ProviderStatus = "provisioning"
	StatusActive       ProviderStatus = "active"
	StatusRebooting    ProviderStatus = "rebooting"
	StatusFailed       ProviderStatus = "failed"
	StatusInactive     ProviderStatus = "inactive"
)

// ProviderMachine is a machine as its provider sees it.
type ProviderMachine struct {
	// ID is the provider's id of the machine, unique within the provider.
	ID string
	// Address is where the machine's SSH server listens, host:port.
	Address  string
	Location string
	Status   ProviderStatus
	// Problem, if set, says why the provider cannot read this machine (a
	// field of its answer it cannot use): the machine exists, but nothing
	// else about it is known, so it is neither recorded nor refreshed.
	Problem string
}

// ErrNotFound means the provider has no machine with that id.
var ErrNotFound = errors.New("machine not found at provider")

// Provider is where machines come from and how they are power-cycled: a cloud
// API (Equinix Metal), or an inventory and the machines' BMCs.
type Provider interface {
	// Type names the provider; it is stored in BMDB with each machine.
	Type() string
	// ListMachines returns every machine of this provider that bmctl manages.
	ListMachines(ctx context.Context) ([]ProviderMachine, error)
	// GetMachine returns one machine, or ErrNotFound.
	GetMachine(ctx context.Context, id string) (ProviderMachine, error)
	// FreeCapacity is how many more machines CreateMachine can create now
	// (0 for providers that cannot create machines).
	FreeCapacity(ctx context.Context) (int, error)
	// CreateMachine creates a machine from free capacity.
	CreateMachine(ctx context.Context) (ProviderMachine, error)
	// Reboot power-cycles a machine and returns once the reboot has taken
	// effect, or fails with a cause after a provider-specific bound.
	Reboot(ctx context.Context, id string) error
}

// RebootReporter is a provider whose reboots say what they did (a BMC's
// verified reset and how long each step took); Recovery records it in the
// machine's history as a PowerAction event. progress, if not nil, hears
// each step as it happens (Recovery shows it as the work's detail).
type RebootReporter interface {
	RebootReport(ctx context.Context, id string, progress func(string)) (report string, err error)
}
