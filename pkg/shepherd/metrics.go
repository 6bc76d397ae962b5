package shepherd

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the shepherd's Prometheus metrics.
type Metrics struct {
	Claims        *prometheus.CounterVec
	Finishes      *prometheus.CounterVec
	Failures      *prometheus.CounterVec
	Cancels       *prometheus.CounterVec
	WorkDuration  *prometheus.HistogramVec
	Sessions      *prometheus.GaugeVec
	SessionStarts *prometheus.CounterVec
	Provisioned   *prometheus.CounterVec
	Disagreements *prometheus.GaugeVec
	// BreakerOpen is 1 while a circuit breaker is open (Recovery stopped
	// there), by scope: "fleet" or "location:<name>".
	BreakerOpen    *prometheus.GaugeVec
	BreakerSilent  *prometheus.GaugeVec
	AttentionMarks prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bmctl_shepherd_claims_total", Help: "Work items claimed, by process.",
		}, []string{"process"}),
		Finishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bmctl_shepherd_finishes_total", Help: "Work items finished successfully, by process.",
		}, []string{"process"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bmctl_shepherd_failures_total", Help: "Work items failed, by process and cause class.",
		}, []string{"process", "cause"}),
		Cancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bmctl_shepherd_cancels_total", Help: "Work items canceled (shutdown), by process.",
		}, []string{"process"}),
		WorkDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bmctl_shepherd_work_duration_seconds",
			Help:    "Time from claim to finish, fail or cancel, by process and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12),
		}, []string{"process", "outcome"}),
		Sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bmctl_shepherd_sessions", Help: "BMDB sessions held by loop workers, by process.",
		}, []string{"process"}),
		SessionStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bmctl_shepherd_session_starts_total", Help: "BMDB sessions started by loop workers (a restart follows an expiry), by process.",
		}, []string{"process"}),
		Provisioned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bmctl_shepherd_provisioned_total", Help: "Machines recorded or created by provisioning, by provider and action.",
		}, []string{"provider", "action"}),
		Disagreements: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bmctl_shepherd_provider_disagreements", Help: "Machines in BMDB that their provider no longer lists, at the last reconciliation.",
		}, []string{"provider"}),
		BreakerOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bmctl_shepherd_breaker_open", Help: "1 while the circuit breaker of a scope (fleet, location:<name>) is open and Recovery stopped there.",
		}, []string{"scope"}),
		BreakerSilent: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bmctl_shepherd_breaker_silent_machines", Help: "Machines the circuit breaker of a scope counts as silent, at its last evaluation.",
		}, []string{"scope"}),
		AttentionMarks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bmctl_shepherd_attention_marks_total", Help: "Machines given a needs-attention mark because their remediation budget was exhausted.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Claims, m.Finishes, m.Failures, m.Cancels, m.WorkDuration, m.Sessions, m.SessionStarts, m.Provisioned, m.Disagreements,
			m.BreakerOpen, m.BreakerSilent, m.AttentionMarks)
	}
	return m
}
