package fleet

import (
	"context"
	"sync"
	"time"

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
	fleetUpDesc    = prometheus.NewDesc("bmctl_fleet_up", "1 if the last read of the fleet from BMDB succeeded.", nil, nil)
)

func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{machinesDesc, workDesc, backoffsDesc, sessionsDesc, oldestWorkDesc, fleetUpDesc} {
		ch <- d
	}
}

func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.read()
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
}

// read is the fleet's stats, read again once the last read is cacheFor old.
func (c *Collector) read() (Stats, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < c.cacheFor {
		return c.stats, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c.stats, c.err = GetStats(ctx, c.db, c.thresholds)
	c.at = time.Now()
	return c.stats, c.err
}
