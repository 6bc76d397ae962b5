package ops

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

// Selector names the machines an action applies to: machines by reference
// (UUID, unique UUID prefix or provider id), or every machine that passes
// all of the filters, or, with All, the whole fleet.
type Selector struct {
	Refs     []string
	States   []fleet.State
	Location string
	Provider string
	All      bool
}

// ErrBadSelector means a selector names no machines the way it was given
// (none at all, or machines and filters mixed).
var ErrBadSelector = errors.New("invalid machine selection")

// ErrNoMatch means a selector's filters match no machine.
var ErrNoMatch = errors.New("no machine matches")

func (s Selector) filtered() bool {
	return len(s.States) > 0 || s.Location != "" || s.Provider != ""
}

// Check says whether the selector is well formed, without a database.
func (s Selector) Check() error {
	switch {
	case len(s.Refs) > 0 && (s.filtered() || s.All):
		return fmt.Errorf("%w: name machines or select them (--state, --location, --provider, --all), not both", ErrBadSelector)
	case s.All && s.filtered():
		return fmt.Errorf("%w: --all selects every machine; drop it to filter with --state, --location or --provider", ErrBadSelector)
	case len(s.Refs) == 0 && !s.filtered() && !s.All:
		return fmt.Errorf("%w: name machines (UUID, prefix or provider id) or select them with --state, --location, --provider or --all", ErrBadSelector)
	}
	return nil
}

// String says what the selector selects, for messages.
func (s Selector) String() string {
	if len(s.Refs) > 0 {
		return strings.Join(s.Refs, " ")
	}
	if s.All {
		return "--all"
	}
	var parts []string
	for _, st := range s.States {
		parts = append(parts, "--state "+string(st))
	}
	if s.Location != "" {
		parts = append(parts, "--location "+s.Location)
	}
	if s.Provider != "" {
		parts = append(parts, "--provider "+s.Provider)
	}
	return strings.Join(parts, " ")
}

// Select resolves the selector to machine ids, each once, in the order
// given (references) or by id (filters). A reference that names no machine,
// or more than one, fails with fleet's errors; filters that match nothing
// fail with ErrNoMatch. States are derived with th's thresholds, as the
// views derive them.
func Select(ctx context.Context, db fleet.DB, s Selector, th bmdb.RecoveryThresholds) ([]uuid.UUID, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	var ids []uuid.UUID
	if len(s.Refs) > 0 {
		seen := map[uuid.UUID]bool{}
		for _, ref := range s.Refs {
			id, err := fleet.Resolve(ctx, db, ref, fleet.ResolveOptions{})
			if err != nil {
				return nil, err
			}
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		return ids, nil
	}
	o := fleet.ListOptions{States: s.States, Location: s.Location, Provider: s.Provider, Thresholds: th, Sort: fleet.SortID}
	err := fleet.EachMachine(ctx, db, o, func(m *fleet.MachineSummary) error {
		ids = append(ids, m.ID)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%w %s", ErrNoMatch, s)
	}
	return ids, nil
}
