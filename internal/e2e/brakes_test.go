package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// freezeDB stops every process of the test cluster (SIGSTOP), as a hung
// database host would, and returns the function that thaws it. The test's
// cleanup thaws it too, should the test stop early.
func freezeDB(t *testing.T) (thaw func()) {
	t.Helper()
	c := pgtest.Cluster(t)
	if c == nil {
		t.Fatal("freezing the database needs the tests' own cluster: unset BMCTL_TEST_DATABASE_URL")
	}
	b, err := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	postmaster, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	// The postmaster first, so it forks no new backend, then its children.
	pids := []int{postmaster}
	if err := syscall.Kill(postmaster, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		stat, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(postmaster) {
			pid, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(filepath.Dir(p), "/proc/"), "/"))
			if syscall.Kill(pid, syscall.SIGSTOP) == nil {
				pids = append(pids, pid)
			}
		}
	}
	thawed := false
	thaw = func() {
		if thawed {
			return
		}
		thawed = true
		for i := len(pids) - 1; i >= 0; i-- {
			_ = syscall.Kill(pids[i], syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	return thaw
}

// TestObserverOutageIsNotDeath runs a fleet with the real endpoint, agents
// and shepherd, and takes the observer away for several stale thresholds,
// once by freezing the database and once by stopping the endpoint, at two
// thresholds: no machine that heart-beat before and after is rebooted, and
// a machine whose agent really died just before the outage is recovered,
// but only once the full threshold has passed after the observation
// started again.
func TestObserverOutageIsNotDeath(t *testing.T) {
	for _, c := range []struct {
		name   string
		stale  time.Duration
		outage func(t *testing.T, w *world) (resume func())
	}{
		{"database frozen, 2s threshold", 2 * time.Second, func(t *testing.T, w *world) func() { return freezeDB(t) }},
		{"endpoint stopped, 2s threshold", 2 * time.Second, stopEndpoint},
		{"database frozen, 3s threshold", 3 * time.Second, func(t *testing.T, w *world) func() { return freezeDB(t) }},
		{"endpoint stopped, 3s threshold", 3 * time.Second, stopEndpoint},
	} {
		t.Run(c.name, func(t *testing.T) { observerOutage(t, c.stale, c.outage) })
	}
}

func stopEndpoint(t *testing.T, w *world) func() {
	addr := w.endpoint.addr
	w.stopEndpoint()
	return func() { w.startEndpoint(addr) }
}

func observerOutage(t *testing.T, stale time.Duration, outage func(t *testing.T, w *world) func()) {
	w := newWorld(t)
	var live []uuid.UUID
	var livePIDs []string
	for range 5 {
		id, pid := w.machine()
		live, livePIDs = append(live, id), append(livePIDs, pid)
	}
	dead, deadPID := w.machine()
	w.runShepherdWith(func(rc *shepherd.RecoveryConfig) {
		rc.Thresholds = bmdb.RecoveryThresholds{NoHeartbeatAfterStart: 2 * stale, StaleHeartbeat: stale}
	}, nil)
	all := append([]uuid.UUID{dead}, live...)
	testwait.For(t, "every agent's first heartbeat", func() bool {
		for _, id := range all {
			if w.lastHeartbeat(id).IsZero() {
				return false
			}
		}
		return true
	})
	w.killAgent(deadPID)

	outageFor := 4 * stale
	resume := outage(t, w)
	time.Sleep(outageFor) // the outage itself: the time under test, not a wait for a condition
	resume()
	resumedAt := time.Now()

	// The live machines heart-beat again.
	before := map[uuid.UUID]time.Time{}
	for _, id := range live {
		before[id] = w.lastHeartbeat(id)
	}
	testwait.For(t, "heartbeats after the outage", func() bool {
		for _, id := range live {
			if !w.lastHeartbeat(id).After(before[id]) {
				return false
			}
		}
		return true
	})
	// The dead machine is recovered, after the full threshold from the
	// new watch's start (the database's clock on both).
	testwait.For(t, "Recovery of the machine that really died", func() bool { return len(w.recoveryStarts(dead)) > 0 })
	var since time.Time
	if err := w.conn.Pool.QueryRow(context.Background(), `SELECT observer_since FROM heartbeat_observer`).Scan(&since); err != nil {
		t.Fatal(err)
	}
	start := w.recoveryStarts(dead)[0]
	if start.Sub(since) < stale {
		t.Errorf("Recovery started %s after the watch resumed (%s), before the full %s threshold", start.Sub(since), since.Format(time.StampMilli), stale)
	}
	if n := w.count(`SELECT count(*) FROM heartbeat_observer_gaps WHERE gap_to >= $1`, since); n != 1 {
		t.Errorf("%d gaps recorded ending at the watch's start, want 1", n)
	}
	// Another threshold and more after the outage: the live machines were
	// never touched.
	for time.Since(resumedAt) < 2*stale+time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	for i, id := range live {
		if n := len(w.recoveryStarts(id)); n != 0 || w.fleet.Reboots(livePIDs[i]) != 0 {
			t.Errorf("live machine %s: %d Recovery starts, %d reboots; want none", livePIDs[i], n, w.fleet.Reboots(livePIDs[i]))
		}
	}
}

// TestBreaker is the fleet circuit breaker end to end: 50 machines in 5
// locations with the real endpoint, agents and shepherd. With the endpoint
// stopped past the stale threshold nothing is rebooted and the open
// breaker shows in stats' JSON, the shepherd's metrics and explain; with
// it back, the machines heart-beat again and nothing was rebooted. Then one
// location's machines go silent: that location's breaker opens and its
// machines are left alone, while a dead machine elsewhere is recovered.
func TestBreaker(t *testing.T) {
	const stale = 4 * time.Second
	w := newWorld(t)
	ctx := context.Background()
	type machine struct {
		id       uuid.UUID
		pid, loc string
	}
	var ms []machine
	for i := range 50 {
		loc := fmt.Sprintf("rack-%d", i%5)
		id, pid := w.machineAt(loc)
		ms = append(ms, machine{id, pid, loc})
	}
	reg := prometheus.NewRegistry()
	metrics := shepherd.NewMetrics(reg)
	w.runShepherdWith(func(rc *shepherd.RecoveryConfig) {
		rc.Thresholds = bmdb.RecoveryThresholds{NoHeartbeatAfterStart: 2 * stale, StaleHeartbeat: stale}
		// Fleet: more than 12 silent (a quarter) opens it; a location of 10:
		// more than 5. Silent after a quarter of the threshold, so a breaker
		// opens well before Recovery would act.
		rc.Breaker = bmdb.BreakerPolicy{MaxSilent: 10, MaxSilentFraction: 0.25, LocationMaxSilent: 2, LocationMaxSilentFraction: 0.5, Silence: stale / 4}
		rc.LoopConfig.Parallelism = 2
	}, metrics)
	testwait.For(t, "every agent's first heartbeat", func() bool {
		return w.count(`SELECT count(*) FROM machine_agent_heartbeat`) == len(ms)
	})
	reboots := func() int {
		n := 0
		for _, m := range ms {
			n += w.fleet.Reboots(m.pid)
		}
		return n
	}
	fleetOpen := func() bool {
		var open bool
		_ = w.conn.Pool.QueryRow(ctx, `SELECT breaker_open FROM breaker_states WHERE breaker_scope = 'fleet'`).Scan(&open)
		return open
	}

	// The endpoint stops for twice the stale threshold.
	addr := w.endpoint.addr
	w.stopEndpoint()
	stoppedAt := time.Now()
	testwait.For(t, "the fleet breaker to open", fleetOpen)
	for time.Since(stoppedAt) < 2*stale {
		time.Sleep(100 * time.Millisecond)
	}
	st, err := fleet.GetStats(ctx, w.conn.Pool, bmdb.RecoveryThresholds{})
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(st) // what `bmctl stats -o json` prints
	var stats struct {
		Brakes struct {
			Breakers []struct {
				Scope    string `json:"scope"`
				Open     bool   `json:"open"`
				Silent   int    `json:"silent"`
				Machines int    `json:"machines"`
			} `json:"breakers"`
			Stopped []string `json:"stopped"`
		} `json:"brakes"`
	}
	if err := json.Unmarshal(js, &stats); err != nil {
		t.Fatal(err)
	}
	if b := stats.Brakes.Breakers; len(b) == 0 || b[0].Scope != "fleet" || !b[0].Open || b[0].Silent != 50 || b[0].Machines != 50 {
		t.Errorf("stats JSON breakers %+v, want the fleet's open with 50 of 50 silent", b)
	}
	if got := gauge(metrics.BreakerOpen.WithLabelValues("fleet")); got != 1 {
		t.Errorf("metric bmctl_shepherd_breaker_open{scope=fleet} = %v, want 1", got)
	}
	ex, err := bmdb.Explain(ctx, w.conn.Pool, ms[0].id)
	if err != nil {
		t.Fatal(err)
	}
	rec := ex.Processes[1]
	var breaker bmdb.ConditionResult
	for _, c := range rec.Conditions {
		if c.Name == "breaker_closed" {
			breaker = c
		}
	}
	if rec.Candidate || breaker.Holds || !strings.Contains(breaker.Detail, "fleet breaker open: 50 of 50 silent, max 12") {
		t.Errorf("explain: Recovery %+v; want it stopped by the open fleet breaker", rec)
	}
	if n := reboots(); n != 0 {
		t.Fatalf("%d reboots while the endpoint was down", n)
	}

	// The endpoint is back: heartbeats again, breakers close, nothing was
	// rebooted.
	w.startEndpoint(addr)
	restartedAt := time.Now()
	testwait.For(t, "the fleet breaker to close", func() bool { return !fleetOpen() })
	testwait.For(t, "every machine to heart-beat again", func() bool {
		return w.count(`SELECT count(*) FROM machine_agent_heartbeat WHERE agent_heartbeat_at > now() - interval '1 second'`) == len(ms)
	})
	for time.Since(restartedAt) < 2*stale {
		time.Sleep(100 * time.Millisecond)
	}
	if n := reboots(); n != 0 {
		t.Fatalf("%d reboots after the endpoint came back", n)
	}
	if n := w.count(`SELECT count(*) FROM work_history WHERE process = 'ShepherdRecovery'`); n != 0 {
		t.Fatalf("Recovery acted %d times", n)
	}

	// rack-0 goes silent (its switch died); one machine of rack-1 dies.
	for _, m := range ms {
		if m.loc == "rack-0" {
			w.killAgent(m.pid)
		}
	}
	deadElsewhere := ms[1] // rack-1
	w.killAgent(deadElsewhere.pid)
	testwait.For(t, "rack-0's breaker to open", func() bool {
		var open bool
		_ = w.conn.Pool.QueryRow(ctx, `SELECT breaker_open FROM breaker_states WHERE breaker_scope = 'location:rack-0'`).Scan(&open)
		return open
	})
	testwait.For(t, "Recovery of the dead machine in rack-1", func() bool { return len(w.recoveryStarts(deadElsewhere.id)) > 0 })
	// rack-0's machines have been silent longer than the threshold by now.
	for _, m := range ms {
		if m.loc == "rack-0" {
			if n := len(w.recoveryStarts(m.id)); n != 0 {
				t.Errorf("rack-0 machine %s recovered %d times behind its open breaker", m.pid, n)
			}
		}
	}
	if fleetOpen() {
		t.Error("the fleet breaker opened for one rack")
	}
	if got := gauge(metrics.BreakerOpen.WithLabelValues("location:rack-0")); got != 1 {
		t.Errorf("metric for rack-0 = %v, want 1", got)
	}
	// The breaker is explain's answer once the machine itself counts as
	// silent, which may be a moment after the breaker opened.
	testwait.For(t, "explain to name rack-0's open breaker", func() bool {
		ex, err := bmdb.Explain(ctx, w.conn.Pool, ms[0].id) // rack-0
		if err != nil {
			t.Fatal(err)
		}
		v := ex.Processes[1]
		if v.Candidate {
			t.Fatalf("explain calls a rack-0 machine a Recovery candidate behind its open breaker: %+v", v)
		}
		return strings.Contains(v.Reason, `location "rack-0" breaker open: 10 of 10 silent`)
	})
}

func gauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}
