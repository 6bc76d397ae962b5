package bench

import (
	"context"
	"slices"
	"time"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
)

// HistoryLatency is `bmctl history --all --since 1h` over a large history:
// the fleet-wide query and the decoding of its rows.
type HistoryLatency struct {
	Events, InWindow int
	P50, P99         time.Duration
}

// fleetHistory replaces the history with n events over the last week of the
// fleet's machines, appended in time order as a running fleet appends them
// (the seed's history, written at once with past times, is not), and times
// fleet.FleetHistory for the last hour.
func fleetHistory(ctx context.Context, conn *bmdb.Conn, n, samples int) (HistoryLatency, error) {
	if _, err := conn.Pool.Exec(ctx, `TRUNCATE work_history`); err != nil {
		return HistoryLatency{}, err
	}
	_, err := conn.Pool.Exec(ctx, `
		WITH ids AS (SELECT array_agg(machine_id) AS a FROM machines)
		INSERT INTO work_history (machine_id, process, event, event_at, cause, session_component, session_host, actor)
		SELECT ids.a[1 + g * 7919 % cardinality(ids.a)],
		       (ARRAY['ShepherdAgentStart', 'ShepherdRecovery']::process[])[1 + g % 2],
		       (ARRAY['Started', 'Finished', 'Started', 'Failed', 'HoldPlaced']::work_event[])[1 + g % 5],
		       now() - interval '7 days' * ($1 - g) / $1,
		       CASE WHEN g % 5 = 3 THEN 'ssh: connection refused' ELSE '' END,
		       'shepherd', 'host-' || g % 4,
		       CASE WHEN g % 5 = 4 THEN 'alice@jump1' END
		FROM ids, generate_series(1::bigint, $1) g
		ORDER BY g`, int64(n))
	if err == nil {
		_, err = conn.Pool.Exec(ctx, `VACUUM ANALYZE work_history`)
	}
	if err != nil {
		return HistoryLatency{}, err
	}
	h := HistoryLatency{Events: n}
	var took []time.Duration
	for range samples {
		start := time.Now()
		evs, err := fleet.FleetHistory(ctx, conn.Pool, fleet.HistoryOptions{Since: time.Now().Add(-time.Hour)})
		if err != nil {
			return h, err
		}
		took = append(took, time.Since(start))
		h.InWindow = len(evs)
	}
	slices.Sort(took)
	h.P50, h.P99 = took[len(took)/2], took[len(took)*99/100]
	return h, nil
}
