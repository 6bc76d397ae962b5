package fleet

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Collector exports the fleet as BMDB sees it (GetStats) as Prometheus
// metrics: machines per state, work and backoffs per process, sessions, the
// age of the oldest work. Every shepherd exports the same numbers, so rules
// aggregate them with max. One snapshot serves scrapes for CacheFor, so
// several scrapers cost BMDB one query set.
type Collector struct {
	db         DB
	thresholds bmdb.RecoveryThresholds
	cacheFor   time.Duration

	mu    sync.Mutex
	at    time.Time
	stats Stats
	ages  map[State]float64
	err   error
}

// NewCollector collects the fleet of db, with the Recovery thresholds the
// states depend on.
func NewCollector(db DB, th bmdb.RecoveryThresholds) *Collector {
	return &Collector{db: db, thresholds: th, cacheFor: 10 * time.Second}
}

var (
	machinesDesc   = prometheus.NewDesc("bmctl_fleet_machines", "Machines in BMDB by state (see bmctl stats).", []string{"state"}, nil)
	workDesc       = prometheus.NewDesc("bmctl_fleet_work", "Work items held in BMDB by process.", []string{"process"}, nil)
	backoffsDesc   = prometheus.NewDesc("bmctl_fleet_backoffs", "Unexpired backoffs in BMDB by process.", []string{"process"}, nil)
	sessionsDesc   = prometheus.NewDesc("bmctl_fleet_sessions", "BMDB sessions of every component, live or expired (not yet swept).", []string{"state"}, nil)
	oldestWorkDesc = prometheus.NewDesc("bmctl_fleet_oldest_work_seconds", "Age of the work item held longest; 0 when none is held.", nil, nil)
	inStateDesc    = prometheus.NewDesc("bmctl_fleet_oldest_in_state_seconds", "How long the machine longest in the state has been in it; 0 when none is. Only for the states whose start BMDB records.", []string{"state"}, nil)
	fleetUpDesc    = prometheus.NewDesc("bmctl_fleet_up", "1 if the last read of the fleet from BMDB succeeded.", nil, nil)
)

func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{machinesDesc, workDesc, backoffsDesc, sessionsDesc, oldestWorkDesc, inStateDesc, fleetUpDesc} {
		ch <- d
	}
}

func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st, ages, err := c.read()
	if err != nil {
		ch <- prometheus.MustNewConstMetric(fleetUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(fleetUpDesc, prometheus.GaugeValue, 1)
	for _, s := range States {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(st.ByState[s]), string(s))
	}
	for _, p := range st.Processes {
		ch <- prometheus.MustNewConstMetric(workDesc, prometheus.GaugeValue, float64(p.Work), string(p.Process))
		ch <- prometheus.MustNewConstMetric(backoffsDesc, prometheus.GaugeValue, float64(p.Backoffs), string(p.Process))
	}
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(st.Sessions.Live), "live")
	ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(st.Sessions.Expired), "expired")
	age := 0.0
	if st.OldestWork != nil {
		age = max(0, time.Since(st.OldestWork.StartedAt).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(oldestWorkDesc, prometheus.GaugeValue, age)
	for _, s := range timedStates {
		ch <- prometheus.MustNewConstMetric(inStateDesc, prometheus.GaugeValue, ages[s], string(s))
	}
}

// read is the fleet's stats and state ages, read again once the last read
// is cacheFor old.
func (c *Collector) read() (Stats, map[State]float64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < c.cacheFor {
		return c.stats, c.ages, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.stats, c.err = GetStats(ctx, c.db, c.thresholds)
	if c.err == nil {
		c.ages, c.err = StateAges(ctx, c.db, c.thresholds)
	}
	c.at = time.Now()
	return c.stats, c.ages, c.err
}

// timedStates are the states whose start a machine's row records: a claim
// (work_started_at) or a threshold passed since the agent started or last
// heart-beat. For new and backed_off it does not (a Recovery makes a
// machine new again long after it was created), nor is healthy trouble.
var timedStates = []State{StateAgentStarting, StateRecovering, StateAccessing, StateAwaitingHeartbeat, StateNoHeartbeat, StateHeartbeatStale}

// stateAgesSQL is, per timed state, how long its oldest machine has been in it.
func stateAgesSQL(pol bmdb.Policy) string {
	return `SELECT state, extract(epoch FROM now() - min(CASE state
		WHEN 'agent_starting' THEN work_started_at
		WHEN 'recovering' THEN work_started_at
		WHEN 'accessing' THEN work_started_at
		WHEN 'awaiting_heartbeat' THEN agent_started_at
		WHEN 'no_heartbeat' THEN agent_started_at + make_interval(secs => $1)
		WHEN 'heartbeat_stale' THEN agent_heartbeat_at + make_interval(secs => $2)
	END))::float8
	FROM (` + machineRowsSQL(pol) + `) x GROUP BY state`
}

// StateAges says, for each timed state, how long the machine longest in it
// has been there, in seconds (0 when no machine is).
func StateAges(ctx context.Context, db DB, th bmdb.RecoveryThresholds) (map[State]float64, error) {
	pol, err := resolvePolicy(ctx, db, nil, th)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(ctx, stateAgesSQL(pol), thresholdArgs(pol)...)
	if err != nil {
		return nil, err
	}
	ages := map[State]float64{}
	for _, s := range timedStates {
		ages[s] = 0
	}
	var state State
	var age *float64
	_, err = pgx.ForEachRow(rows, []any{&state, &age}, func() error {
		if age != nil {
			ages[state] = max(0, *age)
		}
		return nil
	})
	return ages, err
}
