package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// Metrics every bmctl daemon exports beside its own (docs/metrics.md): what
// it is, and how its schema compares with the database's, so that an alert
// sees a binary waiting for `bmctl migrate up`.
func registerBuildMetrics(reg prometheus.Registerer, db bmdb.DBTX) {
	v := buildInfo()
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "bmctl_build_info",
			Help:        "Always 1; the labels say which bmctl this is.",
			ConstLabels: prometheus.Labels{"version": v.Version, "commit": v.Commit, "go_version": v.GoVersion},
		}, func() float64 { return 1 }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bmctl_schema_version_needed",
			Help: "The BMDB schema version this binary needs.",
		}, func() float64 { return float64(v.SchemaVersion) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bmctl_bmdb_schema_version",
			Help: "The schema version of the BMDB this process uses, read at each scrape; -1 if it cannot be read.",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			st, err := bmdb.ReadSchemaStatus(ctx, db)
			if err != nil {
				return -1
			}
			return float64(st.Version)
		}),
	)
}

// waitForSchema returns once db's schema is the one this binary needs. A
// schema that is only behind (bmctl migrate up fixes it) is waited for,
// logged every minute, so that a daemon upgraded before its database
// keeps serving metrics and is restarted by nobody; any other problem is
// returned. It returns nil when ctx ends.
func waitForSchema(ctx context.Context, db bmdb.DBTX, log *slog.Logger, poll time.Duration) error {
	var logged time.Time
	for {
		st, err := bmdb.ReadSchemaStatus(ctx, db)
		if err != nil {
			return err
		}
		if err := st.Err(); err == nil || !st.Behind() {
			return err
		}
		if time.Since(logged) >= time.Minute {
			log.Error("waiting for the schema: run bmctl migrate up", "cause", st.Err().Error(), "schema", st.Version, "needed", st.Latest)
			logged = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(poll):
		}
	}
}

// zeroSeries creates the shepherd's per-process series of the loops it runs
// at 0, so that rate() and the alert rules see a shepherd that has done
// nothing yet rather than no series at all.
func zeroSeries(m *shepherd.Metrics, cfg shepherd.Config) {
	var ps []bmdb.Process
	if cfg.AgentStart != nil {
		ps = append(ps, bmdb.ProcessShepherdAgentStart)
	}
	if cfg.Recovery != nil {
		ps = append(ps, bmdb.ProcessShepherdRecovery)
	}
	for _, p := range ps {
		l := string(p)
		m.Claims.WithLabelValues(l)
		m.Finishes.WithLabelValues(l)
		m.Cancels.WithLabelValues(l)
		m.Sessions.WithLabelValues(l)
		m.SessionStarts.WithLabelValues(l)
	}
}
