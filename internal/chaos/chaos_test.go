// Package chaos tests that work locks stay safe when the database misbehaves:
// real `bmctl shepherd run` processes work the demo's simulated fleet while
// shepherds are killed and PostgreSQL restarts, drops off the network and
// freezes under them. The test keeps its own record of every work insert and
// delete (a trigger of its own) and of every action a machine saw, and checks
// them against the invariants of DESIGN.md's "Leases and side effects".
package chaos

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/faultproxy"
	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/demo"
)

var (
	exe   string // the bmctl binary the shepherd processes run
	agent string // what they upload as the agent: the demo's machines run the real agent in process whatever the bytes, so a small file keeps uploads from starving the machine under -race
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bmctl-chaos-")
	if err != nil {
		panic(err)
	}
	exe = filepath.Join(dir, "bmctl")
	if out, err := exec.Command("go", "build", "-o", exe, "github.com/bmctl/bmctl/cmd/bmctl").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building bmctl: %v\n%s", err, out)
		os.Exit(1)
	}
	agent = filepath.Join(dir, "agent")
	if err := os.WriteFile(agent, make([]byte, 256<<10), 0o755); err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	pgtest.Main(m)
}

const sessionInterval = 4 * time.Second

// workLog is the test's own record of work rows, kept by a trigger.
const workLog = `
CREATE TABLE chaos_work_log (machine_id uuid, process process, session_id uuid, op text, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION chaos_work_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		INSERT INTO chaos_work_log (machine_id, process, session_id, op) VALUES (NEW.machine_id, NEW.process, NEW.session_id, 'insert');
	ELSE
		INSERT INTO chaos_work_log (machine_id, process, session_id, op) VALUES (OLD.machine_id, OLD.process, OLD.session_id, 'delete');
	END IF;
	RETURN NULL;
END $$;
CREATE TRIGGER chaos_work_log AFTER INSERT OR DELETE ON work FOR EACH ROW EXECUTE FUNCTION chaos_work_log();`

// shepherdProc is one `bmctl shepherd run` process behind a fault proxy.
type shepherdProc struct {
	name  string
	proxy *faultproxy.Proxy
	env   []string
	log   *os.File
	cmd   *exec.Cmd
	done  chan error
}

func (s *shepherdProc) start(t *testing.T) {
	t.Helper()
	s.cmd = exec.Command(exe, "shepherd", "run")
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	s.done = done
	go func() { done <- s.cmd.Wait() }()
}

func (s *shepherdProc) pid() int { return s.cmd.Process.Pid }

func (s *shepherdProc) kill9(t *testing.T) {
	t.Helper()
	_ = s.cmd.Process.Kill()
	<-s.done
}

// joinEnv reads the demo's join file and points its database at dbURL.
func joinEnv(t *testing.T, stateDir, dbURL string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(stateDir, demo.JoinFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	env := append(os.Environ(), "BMCTL_STATE_DIR="+stateDir)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		switch k {
		case "BMCTL_DATABASE_URL":
			v = dbURL
		case "BMCTL_SESSION_INTERVAL":
			v = sessionInterval.String()
		}
		env = append(env, k+"="+v)
	}
	return env
}

// postgresPIDs are the cluster's postmaster and its children.
func postgresPIDs(t *testing.T, dataDir string) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	master, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	pids := []int{master}
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		st, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		rest := string(st[strings.LastIndexByte(string(st), ')')+2:])
		fields := strings.Fields(rest)
		if len(fields) > 1 && fields[1] == strconv.Itoa(master) {
			pid, _ := strconv.Atoi(strings.Fields(string(st))[0])
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestLocksSurviveDatabaseFaults(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dbURL := pgtest.URL(t)
	cluster := pgtest.Cluster(t)
	if cluster == nil {
		t.Fatal("this test restarts and freezes PostgreSQL: it needs the throwaway cluster, not BMCTL_TEST_DATABASE_URL")
	}
	conn, err := bmdb.Open(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Pool.Exec(ctx, workLog); err != nil {
		t.Fatal(err)
	}

	// The simulated fleet, with no shepherd of its own.
	stateDir := t.TempDir()
	var effMu sync.Mutex
	var effects []demo.Effect
	fleetCtx, stopFleet := context.WithCancel(ctx)
	fleetDone := make(chan struct{})
	go func() {
		defer close(fleetDone)
		_ = demo.Run(fleetCtx, demo.Config{
			Conn: conn, Machines: 32, FailureRate: 0.4, Seed: 11, StateDir: stateDir, Self: agent, NoShepherd: true,
			OnEffect: func(e demo.Effect) { effMu.Lock(); effects = append(effects, e); effMu.Unlock() },
		})
	}()
	defer func() { stopFleet(); <-fleetDone }()
	testwait.Within(t, "the demo's join file", time.Minute, func() bool {
		_, err := os.Stat(filepath.Join(stateDir, demo.JoinFile))
		return err == nil
	})

	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		logs, _ := filepath.Glob(filepath.Join(stateDir, "*.log"))
		kept, _ := os.MkdirTemp("", "bmctl-chaos-logs-")
		for _, l := range logs {
			if b, err := os.ReadFile(l); err == nil {
				_ = os.WriteFile(filepath.Join(kept, filepath.Base(l)), b, 0o644)
			}
		}
		t.Logf("shepherd logs kept in %s", kept)
		for _, l := range logs {
			b, _ := os.ReadFile(l)
			lines := strings.Split(string(b), "\n")
			t.Logf("--- last lines of %s:\n%s", filepath.Base(l), strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})

	// Three shepherds, each behind its own proxy to the database socket.
	var shepherds []*shepherdProc
	for i := range 3 {
		p, viaURL, err := faultproxy.ForPostgres(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		logf, err := os.Create(filepath.Join(stateDir, fmt.Sprintf("shepherd-%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		defer logf.Close()
		s := &shepherdProc{name: fmt.Sprintf("shepherd-%d", i), proxy: p, env: joinEnv(t, stateDir, viaURL), log: logf}
		s.start(t)
		shepherds = append(shepherds, s)
	}
	defer func() {
		for _, s := range shepherds {
			if s.cmd.ProcessState == nil {
				_ = s.cmd.Process.Kill()
			}
		}
	}()
	count := func(sql string, args ...any) int {
		var n int
		if !testwait.Until(5*time.Second, func() bool { return conn.Pool.QueryRow(ctx, sql, args...).Scan(&n) == nil }) {
			t.Fatalf("query failed repeatedly: %s", sql)
		}
		return n
	}
	finished := func() int { return count(`SELECT count(*) FROM work_history WHERE event = 'Finished'`) }
	testwait.Within(t, "the shepherds to finish some work", 3*time.Minute, func() bool { return finished() >= 3 })

	// The live shepherds' sessions, for checking that an outage cost none.
	sessionsOf := func() map[string]time.Time {
		var pids []int
		for _, s := range shepherds {
			pids = append(pids, s.pid())
		}
		rows, err := conn.Pool.Query(ctx, `SELECT session_id::text, session_deadline FROM sessions WHERE session_pid = ANY($1) AND session_deadline > now()`, pids)
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]time.Time{}
		for rows.Next() {
			var id string
			var dl time.Time
			_ = rows.Scan(&id, &dl)
			ids[id] = dl
		}
		return ids
	}
	// owned are the sessions a live worker renews: a session whose INSERT
	// committed while its answer was lost in an earlier outage has no owner
	// (it holds no work and expires by itself), and does not count.
	owned := func() map[string]bool {
		first := sessionsOf()
		ids := map[string]bool{}
		// Until every session has renewed, or one renewal period (with
		// its jitter) has passed: those that did not are nobody's.
		testwait.Until(sessionInterval/3+sessionInterval/5, func() bool {
			for id, dl := range sessionsOf() {
				if d0, ok := first[id]; ok && dl.After(d0) {
					ids[id] = true
				}
			}
			return len(ids) == len(first)
		})
		return ids
	}

	// 1. kill -9 one shepherd and start it again.
	shepherds[0].kill9(t)
	shepherds[0].start(t)

	// 2. Several ~1 s outages between every shepherd and the database: no
	// session may be lost to them.
	for round := range 3 {
		before := owned()
		for _, s := range shepherds {
			s.proxy.Down()
		}
		time.Sleep(time.Second) // the outage itself
		for _, s := range shepherds {
			s.proxy.Pass()
		}
		back := time.Now()
		// Every session renews after the outage, or was lost.
		testwait.Within(t, "sessions to renew after the outage", 30*time.Second, func() bool {
			var stale int
			err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM sessions WHERE session_id::text = ANY($1) AND session_deadline < $2`,
				keys(before), back.Add(sessionInterval/2)).Scan(&stale)
			return err == nil && stale == 0
		})
		after := sessionsOf()
		for id := range before {
			if _, ok := after[id]; !ok {
				t.Errorf("outage %d (1 s, margin %s): session %s was lost", round, sessionInterval-sessionInterval/3-bmdb.FenceMargin(sessionInterval), id)
			}
		}
	}

	// 3. A PostgreSQL restart.
	if err := cluster.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Start(ctx); err != nil {
		t.Fatal(err)
	}
	progress := finished()
	testwait.Within(t, "work after the restart", 2*time.Minute, func() bool { return finished() > progress })

	// 4. A freeze longer than the session interval.
	pids := postgresPIDs(t, cluster.DataDir())
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	time.Sleep(sessionInterval + 2*time.Second) // the freeze itself
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGCONT)
	}
	thawed := time.Now()

	// 5. kill -9 another shepherd while it works, and start it again.
	shepherds[1].kill9(t)
	shepherds[1].start(t)

	// Every process is back without help: each holds a live session started
	// or renewed after the last fault, and the fleet makes progress.
	back := func() bool {
		for _, s := range shepherds {
			if count(`SELECT count(*) FROM sessions WHERE session_pid = $1 AND session_deadline > $2`, s.pid(), thawed.Add(sessionInterval/2)) == 0 {
				return false
			}
		}
		return true
	}
	if !testwait.Until(2*time.Minute, back) {
		rows, _ := conn.Pool.Query(ctx, `SELECT session_pid, session_component, session_deadline FROM sessions ORDER BY 1`)
		for rows.Next() {
			var pid int
			var comp string
			var dl time.Time
			_ = rows.Scan(&pid, &comp, &dl)
			t.Logf("session pid %d %s deadline %s", pid, comp, dl.Format(time.StampMilli))
		}
		for _, s := range shepherds {
			t.Logf("%s pid %d", s.name, s.pid())
		}
		t.Fatalf("not every shepherd is back with live sessions 2 minutes after the thaw at %s", thawed.Format(time.StampMilli))
	}
	progress = finished()
	testwait.Within(t, "work after the freeze", 2*time.Minute, func() bool { return finished() > progress })

	// Shut the shepherds down; the killed ones' sessions expire.
	for _, s := range shepherds {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		if err := <-s.done; err != nil {
			t.Errorf("%s after SIGTERM: %v (log %s)", s.name, err, s.log.Name())
		}
	}
	stopFleet()
	<-fleetDone
	testwait.Within(t, "every session to end or be swept", time.Minute, func() bool {
		_, _ = conn.Sweep(ctx)
		return count(`SELECT count(*) FROM sessions`) == 0
	})

	checkWorkLog(t, ctx, conn, 20)
	checkHistory(t, ctx, conn)
	effMu.Lock()
	checkEffects(t, effects)
	effMu.Unlock()
}

func keys(m map[string]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// maxHold bounds how long one work item may be held: the longest work the
// join file allows (SSH dial 5 s + agent exec 10 s, or a 20 s reboot), plus
// the freeze, plus the session interval and the sweep's grace after it.
const maxHold = 20*time.Second + sessionInterval + 2*time.Second + sessionInterval + bmdb.SweepGrace + 5*time.Second

// checkWorkLog: work of conflicting processes never overlaps on a machine,
// every work row was deleted, and none was held longer than maxHold.
func checkWorkLog(t *testing.T, ctx context.Context, conn *bmdb.Conn, atLeast int) {
	t.Helper()
	rows, err := conn.Pool.Query(ctx, `SELECT machine_id::text, process::text, session_id::text, op, at FROM chaos_work_log ORDER BY at`)
	if err != nil {
		t.Fatal(err)
	}
	type span struct {
		session, process string
		start, end       time.Time
	}
	open := map[string]*span{} // machine/process/session -> span
	var spans = map[string][]*span{}
	n := 0
	for rows.Next() {
		var m, p, s, op string
		var at time.Time
		if err := rows.Scan(&m, &p, &s, &op, &at); err != nil {
			t.Fatal(err)
		}
		key := m + "/" + p + "/" + s
		switch op {
		case "insert":
			sp := &span{session: s, process: p, start: at}
			open[key] = sp
			spans[m] = append(spans[m], sp)
			n++
		case "delete":
			if sp := open[key]; sp != nil {
				sp.end = at
				delete(open, key)
			}
		}
	}
	if n < atLeast {
		t.Errorf("only %d work items in the whole run: too little happened to prove anything", n)
	}
	for key := range open {
		t.Errorf("work %s was never deleted", key)
	}
	longest := time.Duration(0)
	for m, ss := range spans {
		sort.Slice(ss, func(i, j int) bool { return ss[i].start.Before(ss[j].start) })
		for i, a := range ss {
			longest = max(longest, a.end.Sub(a.start))
			if d := a.end.Sub(a.start); d > maxHold {
				t.Errorf("machine %s: %s work of session %s held %s (bound %s)", m, a.process, a.session, d, maxHold)
			}
			for _, b := range ss[i+1:] {
				if b.start.Before(a.end) {
					t.Errorf("machine %s: %s work of session %s overlaps %s work of session %s", m, a.process, a.session, b.process, b.session)
				}
			}
		}
	}
	t.Logf("%d work items; longest held %s (bound %s)", n, longest.Round(time.Millisecond), maxHold)
}

// checkHistory: every Started has exactly one end, by the same session.
func checkHistory(t *testing.T, ctx context.Context, conn *bmdb.Conn) {
	t.Helper()
	rows, err := conn.Pool.Query(ctx, `SELECT machine_id::text, process::text, event::text, coalesce(session_id::text, '') FROM work_history
		WHERE event IN ('Started', 'Finished', 'Failed', 'Canceled', 'Lost') ORDER BY work_history_id`)
	if err != nil {
		t.Fatal(err)
	}
	startedBy := map[string]string{}
	ends := map[string]int{}
	for rows.Next() {
		var m, p, ev, s string
		if err := rows.Scan(&m, &p, &ev, &s); err != nil {
			t.Fatal(err)
		}
		key := m + "/" + p
		if ev == "Started" {
			if by, ok := startedBy[key]; ok {
				t.Errorf("%s: Started by %s while the Started by %s had no end", key, s, by)
			}
			startedBy[key] = s
			continue
		}
		ends[ev]++
		if by, ok := startedBy[key]; !ok || by != s {
			t.Errorf("%s: %s by session %s without a Started of that session", key, ev, s)
		}
		delete(startedBy, key)
	}
	for key, by := range startedBy {
		t.Errorf("%s: Started by %s never ended", key, by)
	}
	t.Logf("ends: %v", ends)
}

// checkEffects: no two actions on one machine overlap in time.
func checkEffects(t *testing.T, effects []demo.Effect) {
	t.Helper()
	byMachine := map[string][]demo.Effect{}
	for _, e := range effects {
		byMachine[e.Machine] = append(byMachine[e.Machine], e)
	}
	for m, es := range byMachine {
		sort.Slice(es, func(i, j int) bool { return es[i].Start.Before(es[j].Start) })
		for i := 1; i < len(es); i++ {
			if es[i].Start.Before(es[i-1].End) {
				t.Errorf("machine %s: %s at %s overlaps %s until %s", m, es[i].Kind, es[i].Start.Format(time.StampMilli), es[i-1].Kind, es[i-1].End.Format(time.StampMilli))
			}
		}
	}
	t.Logf("%d actions on %d machines, none overlapping", len(effects), len(byMachine))
}
