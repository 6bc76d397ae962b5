// Package bmc drives machines' power through their baseboard management
// controllers, Redfish (pkg/bmc/redfish) or IPMI (pkg/bmc/ipmi), and verifies
// that what it asked for happened: a reset is done when the power state or the
// machine's SSH server showed it going down and then up again, each within a
// bound.
package bmc

import (
	"context"
	"errors"
	"slices"
	"time"
)

// PowerState is a system's power as its BMC reports it (Redfish's names).
type PowerState string

const (
	PowerOn          PowerState = "On"
	PowerOff         PowerState = "Off"
	PowerPoweringOn  PowerState = "PoweringOn"
	PowerPoweringOff PowerState = "PoweringOff"
	PowerUnknown     PowerState = ""
)

// ResetType is a kind of reset (Redfish's ResetType names; IPMI's chassis
// power commands map onto them).
type ResetType string

const (
	ResetOn           ResetType = "On"
	ResetForceOff     ResetType = "ForceOff"
	ResetForceRestart ResetType = "ForceRestart"
	ResetPowerCycle   ResetType = "PowerCycle"
	ResetForceOn      ResetType = "ForceOn"
)

// Status is what a BMC says about its system.
type Status struct {
	Power PowerState
	// Resets are the reset types the BMC allows, in its order.
	Resets []ResetType
}

// Allows reports whether the BMC allows t.
func (s Status) Allows(t ResetType) bool { return slices.Contains(s.Resets, t) }

// Controller is one BMC, for one system. Every call honours ctx; a call that
// fails says why in words an operator can act on, the BMC's own message
// included, and never the password.
type Controller interface {
	// Kind is "redfish" or "ipmi".
	Kind() string
	// Address is the BMC's address as configured (for causes and logs).
	Address() string
	// Status reads the power state and the allowed reset types.
	Status(ctx context.Context) (Status, error)
	// Reset asks for one reset; it returns when the BMC accepted it.
	Reset(ctx context.Context, t ResetType) error
	// Close ends what the controller holds at the BMC (Redfish sessions).
	Close(ctx context.Context) error
}

// ErrNotAllowed means the BMC does not allow the reset type asked for.
var ErrNotAllowed = errors.New("reset type not allowed by the BMC")

// Bounds are how long each step of a verified power action may take.
type Bounds struct {
	// Down bounds seeing the machine go down after a reset: the power state
	// leaving On, or its SSH server no longer answering. Default 2m.
	Down time.Duration
	// On bounds the power state becoming On again. Default 5m.
	On time.Duration
	// SSH bounds the machine's SSH server answering once power is On.
	// Default 10m.
	SSH time.Duration
	// Poll is how often the state and SSH are looked at. Default 2s.
	Poll time.Duration
	// Progress, if set, hears what has been seen so far and what is awaited
	// ("redfish ForceRestart at https://10.1.0.11: Off after 4s; waiting for
	// On"), for operators watching.
	Progress func(string)
}

// DefaultBounds are the bounds of a real server: firmware POST takes minutes.
var DefaultBounds = Bounds{Down: 2 * time.Minute, On: 5 * time.Minute, SSH: 10 * time.Minute, Poll: 2 * time.Second}

// WithDefaults fills unset bounds from DefaultBounds.
func (b Bounds) WithDefaults() Bounds {
	if b.Down <= 0 {
		b.Down = DefaultBounds.Down
	}
	if b.On <= 0 {
		b.On = DefaultBounds.On
	}
	if b.SSH <= 0 {
		b.SSH = DefaultBounds.SSH
	}
	if b.Poll <= 0 {
		b.Poll = DefaultBounds.Poll
	}
	return b
}
