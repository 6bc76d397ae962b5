package sshsim

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/bmctl/bmctl/pkg/shepherd"
)

// Fleet is a shepherd.Provider whose machines are simulated: it lists them,
// creates new ones from a capacity, and reboots one by power-cycling it. Tests
// and the demo use it where a cloud or a BMC would be.
type Fleet struct {
	name     string
	template Config

	mu        sync.Mutex
	machines  map[string]*Machine
	capacity  int
	next      int
	rebootOff time.Duration
	rebootErr error
	reboots   map[string]int
}

var _ shepherd.Provider = (*Fleet)(nil)

// NewFleet returns an empty fleet whose provider type is name; machines it
// creates use template.
func NewFleet(name string, template Config) *Fleet {
	return &Fleet{name: name, template: template, machines: map[string]*Machine{}, reboots: map[string]int{}, rebootOff: 50 * time.Millisecond}
}

// SetCapacity sets how many more machines CreateMachine may create.
func (f *Fleet) SetCapacity(n int) {
	f.mu.Lock()
	f.capacity = n
	f.mu.Unlock()
}

// SetRebootError makes every Reboot fail with err (nil: reboots work again).
func (f *Fleet) SetRebootError(err error) {
	f.mu.Lock()
	f.rebootErr = err
	f.mu.Unlock()
}

// SetRebootOff sets how long a reboot keeps a machine powered off.
func (f *Fleet) SetRebootOff(d time.Duration) {
	f.mu.Lock()
	f.rebootOff = d
	f.mu.Unlock()
}

// Add starts a machine outside the capacity and returns it with its
// provider id.
func (f *Fleet) Add() (*Machine, string, error) {
	m, err := New(f.template)
	if err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	id := fmt.Sprintf("%s-%04d", f.name, f.next)
	f.machines[id] = m
	return m, id, nil
}

// Machine returns a machine by provider id, or nil.
func (f *Fleet) Machine(id string) *Machine {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.machines[id]
}

// Reboots counts the reboots of a machine.
func (f *Fleet) Reboots(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reboots[id]
}

// Remove takes a machine out of the fleet (and powers it off).
func (f *Fleet) Remove(id string) {
	f.mu.Lock()
	m := f.machines[id]
	delete(f.machines, id)
	f.mu.Unlock()
	if m != nil {
		m.Close()
	}
}

// Close powers every machine off.
func (f *Fleet) Close() {
	f.mu.Lock()
	ms := f.machines
	f.machines = map[string]*Machine{}
	f.mu.Unlock()
	for _, m := range ms {
		m.Close()
	}
}

func (f *Fleet) Type() string { return f.name }

func (f *Fleet) describe(id string, m *Machine) shepherd.ProviderMachine {
	status := shepherd.StatusActive
	if !m.PoweredOn() {
		status = shepherd.StatusInactive
	}
	return shepherd.ProviderMachine{ID: id, Address: m.Addr(), Location: "sim", Status: status}
}

func (f *Fleet) ListMachines(ctx context.Context) ([]shepherd.ProviderMachine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]shepherd.ProviderMachine, 0, len(f.machines))
	for id, m := range f.machines {
		out = append(out, f.describe(id, m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *Fleet) GetMachine(ctx context.Context, id string) (shepherd.ProviderMachine, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.machines[id]
	if !ok {
		return shepherd.ProviderMachine{}, fmt.Errorf("%w: %s", shepherd.ErrNotFound, id)
	}
	return f.describe(id, m), nil
}

func (f *Fleet) FreeCapacity(ctx context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.capacity, nil
}

func (f *Fleet) CreateMachine(ctx context.Context) (shepherd.ProviderMachine, error) {
	f.mu.Lock()
	if f.capacity <= 0 {
		f.mu.Unlock()
		return shepherd.ProviderMachine{}, fmt.Errorf("fleet %s has no free capacity", f.name)
	}
	f.capacity--
	f.mu.Unlock()
	m, id, err := f.Add()
	if err != nil {
		return shepherd.ProviderMachine{}, err
	}
	return f.describe(id, m), nil
}

// Reboot power-cycles the machine and returns once it listens again.
func (f *Fleet) Reboot(ctx context.Context, id string) error {
	f.mu.Lock()
	m, ok := f.machines[id]
	err, off := f.rebootErr, f.rebootOff
	if ok {
		f.reboots[id]++
	}
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", shepherd.ErrNotFound, id)
	}
	if err != nil {
		return err
	}
	return m.PowerCycle(ctx, off)
}
