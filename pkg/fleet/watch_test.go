package fleet

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/seed"
)

// The watch view pages an unfiltered list through key queries that join only
// what the sort needs; they must order machines exactly as the full rows do.
func TestWatchKeyedOrderMatchesFullRows(t *testing.T) {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := seed.Seed(ctx, pool, seed.Options{Machines: 1500, Profile: seed.Steady, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	// Edge cases: unprovided machines (one held by work), and ties.
	if _, err := pool.Exec(ctx, `INSERT INTO machines SELECT gen_random_uuid(), now() - interval '1 day' FROM generate_series(1, 5)`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `
		INSERT INTO work (machine_id, session_id, process, work_started_at)
		SELECT m.machine_id, (SELECT session_id FROM sessions LIMIT 1), 'ShepherdRecovery', now()
		FROM machines m WHERE NOT EXISTS (SELECT 1 FROM machine_provided p WHERE p.machine_id = m.machine_id) LIMIT 1`); err != nil {
		t.Fatal(err)
	}
	ids := func(list []MachineSummary) []string {
		out := make([]string, len(list))
		for i, m := range list {
			out[i] = m.ID.String()
		}
		return out
	}
	for _, s := range []Sort{SortProvider, SortLocation, SortAddress, SortCreated, SortHeartbeat, SortWork, SortSince, SortBackoff, SortState} {
		for _, desc := range []bool{false, true} {
			o := ListOptions{Sort: s, Descending: desc, Limit: 5000}
			keys, args, ok := keyQuery(s, o)
			if !ok {
				t.Fatalf("sort %s has no key query", s)
			}
			var keyed, full []MachineSummary
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				var err error
				if keyed, err = keyedWindow(ctx, tx, o, keys, args); err != nil {
					return err
				}
				order, err := watchOrder(s, desc)
				if err != nil {
					return err
				}
				from, fargs := o.query()
				rows, err := tx.Query(ctx, "SELECT "+summaryColumns+" FROM "+from+" ORDER BY "+order, fargs...)
				if err != nil {
					return err
				}
				full, err = pgx.CollectRows(rows, scanSummary)
				return err
			})
			if err != nil {
				t.Fatalf("sort %s desc %v: %v", s, desc, err)
			}
			if len(full) != 1505 || !slices.Equal(ids(keyed), ids(full)) {
				t.Errorf("sort %s desc %v: keyed order differs from the full rows' (%d and %d rows)", s, desc, len(keyed), len(full))
			}
		}
	}
	// Pages from the middle are slices of the full order, in both
	// directions (the state order takes the healthy block from an index).
	for _, s := range []Sort{SortState, SortProvider, SortHeartbeat} {
		for _, desc := range []bool{false, true} {
			for _, off := range []int{0, 40, 700, 1490} {
				o := ListOptions{Sort: s, Descending: desc, Limit: 40, Offset: off}
				keys, args, _ := keyQuery(s, o)
				var keyed, full []MachineSummary
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					var err error
					if keyed, err = keyedWindow(ctx, tx, o, keys, args); err != nil {
						return err
					}
					order, _ := watchOrder(s, desc)
					from, fargs := ListOptions{}.query()
					rows, err := tx.Query(ctx, "SELECT "+summaryColumns+" FROM "+from+" ORDER BY "+order+fmt.Sprintf(" LIMIT 40 OFFSET %d", off), fargs...)
					if err != nil {
						return err
					}
					full, err = pgx.CollectRows(rows, scanSummary)
					return err
				})
				if err != nil || !slices.Equal(ids(keyed), ids(full)) {
					t.Errorf("sort %s desc %v offset %d: keyed page differs from the full rows' (%v)", s, desc, off, err)
				}
			}
		}
	}
	// A page from the middle is that slice of the order.
	w, err := WatchWindow(ctx, pool, ListOptions{Sort: SortState, Offset: 700, Limit: 40})
	if err != nil || len(w.Machines) != 40 || w.Total != 1505 || w.Offset != 700 {
		t.Fatalf("middle page: %d rows, total %d, offset %d, %v", len(w.Machines), w.Total, w.Offset, err)
	}
}
