package shepherd

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// brakesEvery is how often the shepherd evaluates the breakers, expires
// holds and marks machines over budget; the breakers' MaxAge must be a few
// times longer.
const brakesEvery = time.Second

// budgetEvery is how often machines over their budget are marked: the rule
// itself stops their Recovery at once; the mark only records it, and
// finding them reads the budget of every stale machine.
const budgetEvery = 10

// brakes is the shepherd's side of the candidate rules' brakes (pkg/bmdb
// brakes.go), run beside the loops: it records the policy the shepherd runs
// with, and every second evaluates the circuit breakers (which every claim
// reads), records expired holds and gives machines over their remediation
// budget a needs-attention mark. pol is nil when Recovery is off: then only
// holds expire.
type brakes struct {
	conn    *bmdb.Conn
	pol     *bmdb.Policy
	log     *slog.Logger
	m       *Metrics
	version string
	open    map[string]bool // breaker scopes last seen open
}

func (b *brakes) run(ctx context.Context) {
	for ctx.Err() == nil {
		sess, err := b.conn.StartSession(ctx, bmdb.SessionConfig{Component: "shepherd-brakes", Version: b.version, Logger: b.log})
		if err != nil {
			if ctx.Err() == nil {
				b.log.Warn("brakes: starting a BMDB session", "err", err)
			}
			sleep(ctx, brakesEvery, nil)
			continue
		}
		b.inSession(ctx, sess)
		_ = sess.Close(context.WithoutCancel(ctx))
	}
}

func (b *brakes) inSession(ctx context.Context, sess *bmdb.Session) {
	by := bmdb.Recorder{Session: sess.ID(), Component: sess.Component(), Host: hostname()}
	if b.pol != nil {
		if err := bmdb.RecordPolicy(ctx, b.conn.Pool, sess.ID(), *b.pol); err != nil {
			b.log.Warn("brakes: recording the policy", "err", err)
		}
	}
	t := time.NewTicker(brakesEvery)
	defer t.Stop()
	for tick := 0; ; tick++ {
		b.once(ctx, by, tick%budgetEvery == 0)
		select {
		case <-ctx.Done():
			return
		case <-sess.Expired():
			return
		case <-t.C:
		}
	}
}

func (b *brakes) once(ctx context.Context, by bmdb.Recorder, budget bool) {
	if n, err := bmdb.ExpireHolds(ctx, b.conn.Pool, by); err != nil {
		b.warn(ctx, "brakes: expiring holds", err)
	} else if n > 0 {
		b.log.Info("holds expired", "holds", n)
	}
	if b.pol == nil {
		return
	}
	states, err := bmdb.EvaluateBreakers(ctx, b.conn.Pool, *b.pol)
	if err != nil {
		b.warn(ctx, "brakes: evaluating breakers", err)
	} else {
		b.report(states)
	}
	if !budget {
		return
	}
	marked, err := bmdb.MarkOverBudget(ctx, b.conn.Pool, *b.pol, by)
	if err != nil {
		b.warn(ctx, "brakes: marking machines over budget", err)
	}
	for _, id := range marked {
		b.m.AttentionMarks.Inc()
		b.log.Warn("needs attention: remediation budget exhausted", "machine", id, "process", bmdb.ProcessShepherdRecovery,
			"attempts", b.pol.Budget.Attempts, "window", b.pol.Budget.Window)
	}
}

func (b *brakes) warn(ctx context.Context, msg string, err error) {
	if ctx.Err() == nil {
		b.log.Warn(msg, "err", err)
	}
}

// report logs breakers opening and closing and sets their gauge.
func (b *brakes) report(states []bmdb.BreakerState) {
	seen := map[string]bool{}
	for _, s := range states {
		seen[s.Scope] = true
		b.m.BreakerOpen.WithLabelValues(s.Scope).Set(boolGauge(s.Open))
		b.m.BreakerSilent.WithLabelValues(s.Scope).Set(float64(s.Silent))
		switch {
		case s.Open && !b.open[s.Scope]:
			b.log.Warn("circuit breaker open: Recovery stops", "scope", s.Scope, "silent", s.Silent, "machines", s.Machines, "limit", s.Limit)
		case !s.Open && b.open[s.Scope] && s.Tripped && s.Override != nil:
			b.log.Warn("circuit breaker overridden: Recovery goes on", "scope", s.Scope, "silent", s.Silent, "limit", s.Limit,
				"until", s.Override.Until, "by", s.Override.Actor, "reason", s.Override.Reason)
		case !s.Open && b.open[s.Scope]:
			b.log.Info("circuit breaker closed", "scope", s.Scope, "silent", s.Silent, "machines", s.Machines, "limit", s.Limit)
		}
	}
	for scope, wasOpen := range b.open {
		if !seen[scope] {
			if wasOpen {
				b.log.Info("circuit breaker closed", "scope", scope, "silent", 0)
			}
			b.m.BreakerOpen.DeleteLabelValues(scope)
			b.m.BreakerSilent.DeleteLabelValues(scope)
		}
	}
	b.open = map[string]bool{}
	for _, s := range states {
		b.open[s.Scope] = s.Open
	}
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

func boolGauge(v bool) float64 {
	if v {
		return 1
	}
	return 0
}
