package fleet_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

// FuzzResolve resolves whatever an operator (or a script) puts where a
// machine goes on the command line, against a real database, as the
// viewer's role: never a panic, never a database error (a reference is not
// SQL), and a machine only when it is the one the reference names.
func FuzzResolve(f *testing.F) {
	ctx := context.Background()
	owner, err := bmdb.Open(ctx, pgtest.URL(f))
	if err != nil {
		f.Fatal(err)
	}
	defer owner.Close()
	for i, pid := range []string{"srv-1234", "3f2a", "m 1", "ünï"} {
		id := uuid.MustParse([]string{"3f2a9c10-0000-4000-8000-000000000001", "3f2a9c10-0000-4000-8000-000000000002",
			"0b000000-0000-4000-8000-000000000003", "c0ffee00-0000-4000-8000-000000000004"}[i])
		if _, err := owner.Pool.Exec(ctx, `INSERT INTO machines (machine_id) VALUES ($1)`, id); err != nil {
			f.Fatal(err)
		}
		if _, err := owner.Pool.Exec(ctx, `INSERT INTO machine_provided (machine_id, provider, provider_id) VALUES ($1, 'test', $2)`, id, pid); err != nil {
			f.Fatal(err)
		}
	}
	viewer, err := bmdb.Open(ctx, pgtest.LoginURL(f, owner.URL(), bmdb.RoleViewer))
	if err != nil {
		f.Fatal(err)
	}
	defer viewer.Close()
	for _, s := range []string{"3f2a9c10-0000-4000-8000-000000000001", "{3f2a9c10-0000-4000-8000-000000000001}",
		"urn:uuid:3f2a9c10-0000-4000-8000-000000000001", "3f2a", "3f2a9c10-0000", "srv-1234", "c0ffee", "ünï",
		"", " ", "\x00", "\xff", "'; DROP TABLE machines; --", "3f2a9c10-0000-4000-8000-00000000000g", "%", "_"} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, ref string, withHistory bool) {
		id, err := fleet.Resolve(ctx, viewer.Pool, ref, fleet.ResolveOptions{WithHistory: withHistory})
		if err != nil {
			var amb *fleet.AmbiguousError
			if !errors.Is(err, fleet.ErrUnknownMachine) && !errors.Is(err, fleet.ErrInvalidMachineRef) && !errors.As(err, &amb) {
				t.Fatalf("ref %q: %v; want unknown, invalid or ambiguous", ref, err)
			}
			return
		}
		r := strings.TrimSpace(ref)
		var pid string
		_ = owner.Pool.QueryRow(ctx, `SELECT provider_id FROM machine_provided WHERE machine_id = $1`, id).Scan(&pid)
		parsed, perr := uuid.Parse(r)
		hex := strings.ReplaceAll(id.String(), "-", "")
		if !(perr == nil && parsed == id) && pid != r && !strings.HasPrefix(hex, strings.ToLower(strings.ReplaceAll(r, "-", ""))) {
			t.Fatalf("ref %q resolved to %s (provider id %q)", ref, id, pid)
		}
	})
}
