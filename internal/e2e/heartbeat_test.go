package e2e_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/agent"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The liveness rules, in seconds rather than DESIGN's minutes.
const (
	heartbeatInterval = 200 * time.Millisecond
	staleHeartbeat    = 2 * time.Second
	noHeartbeatStart  = 5 * time.Second
	// recoveryPeriod is Recovery's loop period: how long an idle worker
	// waits before it asks for candidates again.
	recoveryPeriod = time.Second
	// claimAllowance is the rest of a loop period: the empty claim between
	// two idle waits, a few milliseconds unless the machine is overloaded.
	claimAllowance = 500 * time.Millisecond
	// recoveryLatePeriods is how many loop periods past the stale threshold
	// Recovery may start on a loaded machine; it usually takes one.
	recoveryLatePeriods = 10
)

// world is the whole system on 127.0.0.1: BMDB, the heartbeat endpoint, a
// fleet of simulated machines that run the real agent, and a shepherd.
type world struct {
	t *testing.T
	// Each part runs under its own database role, as a site runs them:
	// conn is the shepherd's (bmctl_shepherd), view is what the test reads
	// through (bmctl_viewer) and the endpoint's pool is bmctl_endpoint's.
	conn   *bmdb.Conn
	view   *bmdb.Conn
	fleet  *sshsim.Fleet
	log    *slog.Logger
	caPEM  string
	url    string
	signer ssh.Signer

	mu     sync.Mutex
	agents map[string]*runningAgent // by provider id
	wg     sync.WaitGroup

	// The endpoint, which a test may stop and start again on its address.
	endpointURL string // the endpoint's login (bmctl_endpoint)
	cert        tls.Certificate
	interval    time.Duration // the agents' heartbeat interval
	endpoint    struct {
		addr   string
		stop   context.CancelFunc
		served chan error
		pool   *pgxpool.Pool
	}
}

// startEndpoint serves the heartbeat endpoint on addr, as `bmctl server`
// does, recording its liveness every 200ms (a gap is a silence of 600ms,
// well under the stale thresholds).
func (w *world) startEndpoint(addr string) {
	w.t.Helper()
	ctx := context.Background()
	pool, err := heartbeat.OpenPool(ctx, w.endpointURL, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	if err := bmdb.CheckGrants(ctx, pool, bmdb.RoleEndpoint); err != nil {
		w.t.Fatal(err)
	}
	var ln net.Listener
	// The address of a stopped endpoint is free again at once, unless the
	// kernel still holds it briefly.
	testwait.Until(10*time.Second, func() bool {
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	if err != nil {
		w.t.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	interval := w.interval
	if interval == 0 {
		interval = heartbeatInterval
	}
	go func() {
		served <- heartbeat.New(heartbeat.Config{Pool: pool, Logger: w.log.With("component", "server"), Interval: interval,
			ObserverInterval: 200 * time.Millisecond}).Serve(sctx, ln, w.cert)
	}()
	w.endpoint.addr, w.endpoint.stop, w.endpoint.served, w.endpoint.pool = ln.Addr().String(), stop, served, pool
	w.url = "https://" + w.endpoint.addr
}

// stopEndpoint stops the endpoint (if running) and waits until it has.
func (w *world) stopEndpoint() {
	if w.endpoint.stop == nil {
		return
	}
	w.endpoint.stop()
	if err := <-w.endpoint.served; err != nil {
		w.t.Errorf("heartbeat server: %v", err)
	}
	w.endpoint.pool.Close()
	w.endpoint.stop = nil
}

// runningAgent is an agent detached from the SSH session that started it:
// it runs until killed or until its machine loses power.
type runningAgent struct {
	agent *agent.Agent
	kill  context.CancelFunc
	done  chan struct{}
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dbURL := pgtest.URL(t)
	conn := openAs(t, dbURL, bmdb.RoleShepherd)
	w := &world{t: t, conn: conn, view: openAs(t, dbURL, bmdb.RoleViewer), agents: map[string]*runningAgent{},
		log: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))}

	// The heartbeat endpoint, as `bmctl server --dev-ca-dir` runs it.
	dir := t.TempDir()
	ca, err := devca.Ensure(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	w.cert, err = ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	w.endpointURL = pgtest.LoginURL(t, dbURL, bmdb.RoleEndpoint)
	w.startEndpoint("127.0.0.1:0")
	t.Cleanup(w.stopEndpoint)
	w.caPEM = string(ca.CertPEM)

	w.signer, _, err = shepherd.LoadOrCreateKey(filepath.Join(dir, "shepherd_ed25519"))
	if err != nil {
		t.Fatal(err)
	}
	w.fleet = sshsim.NewFleet("sim", sshsim.Config{AuthorizedKeys: []ssh.PublicKey{w.signer.PublicKey()}})
	t.Cleanup(func() {
		w.fleet.Close()
		w.killAll()
	})
	return w
}

// openAs connects to dbURL as a new login holding only role, checked as the
// component's start-up check does.
func openAs(t *testing.T, dbURL string, role bmdb.Role) *bmdb.Conn {
	t.Helper()
	conn, err := bmdb.Open(context.Background(), pgtest.LoginURL(t, dbURL, role))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if err := conn.CheckGrants(context.Background(), role); err != nil {
		t.Fatal(err)
	}
	return conn
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// machine adds a simulated machine that runs the real agent when the
// shepherd executes "<path> agent", and records it as provided.
func (w *world) machine() (uuid.UUID, string) { return w.machineAt("") }

// machineAt is machine in a location.
func (w *world) machineAt(location string) (uuid.UUID, string) {
	w.t.Helper()
	m, pid, err := w.fleet.Add()
	if err != nil {
		w.t.Fatal(err)
	}
	m.SetOnExec(w.agentExec(pid))
	id, err := bmdb.AddProvidedMachine(context.Background(), w.conn.Pool, bmdb.ProvidedMachine{
		Provider: w.fleet.Type(), ProviderID: pid, Address: m.Addr(), Status: "active", Location: location,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	return id, pid
}

// agentExec is `bmctl agent` in process: the real takeover (init on stdin,
// reply on stdout), then the real heartbeat loop, detached from the SSH
// session, which ends when this returns.
func (w *world) agentExec(pid string) sshsim.ExecFunc {
	return func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) int {
		if !strings.HasSuffix(cmd, " agent") {
			_, _ = io.WriteString(stderr, "want \"<path> agent\"\n")
			return 2
		}
		// Interval is the agent's pace until the endpoint names one, which
		// caps its retries while the shepherd has yet to record the key: at
		// the default 30s they would back off past noHeartbeatStart whenever
		// the shepherd took a second or two to record it, and Recovery
		// would reboot a machine whose agent is fine.
		interval := w.interval
		if interval == 0 {
			interval = heartbeatInterval
		}
		a, err := agent.Takeover(ctx, stdin, stdout, agent.Options{Logger: w.log.With("component", "agent", "machine_pid", pid), Interval: interval})
		if err != nil {
			return 1
		}
		actx, kill := context.WithCancel(context.Background())
		ra := &runningAgent{agent: a, kill: kill, done: make(chan struct{})}
		w.mu.Lock()
		w.agents[pid] = ra
		w.mu.Unlock()
		w.wg.Go(func() {
			defer close(ra.done)
			_ = a.Run(actx)
		})
		return 0
	}
}

// killAgent kills a machine's running agent, as `kill -9` would, and
// returns it.
func (w *world) killAgent(pid string) *runningAgent {
	w.mu.Lock()
	ra := w.agents[pid]
	delete(w.agents, pid)
	w.mu.Unlock()
	if ra != nil {
		ra.kill()
		<-ra.done
	}
	return ra
}

func (w *world) killAll() {
	w.mu.Lock()
	for _, ra := range w.agents {
		ra.kill()
	}
	w.agents = map[string]*runningAgent{}
	w.mu.Unlock()
	w.wg.Wait()
}

// poweredFleet is the fleet as the shepherd's provider: a power cycle kills
// whatever agent the machine was running, as it would on real hardware.
type poweredFleet struct {
	*sshsim.Fleet
	w *world
}

func (f poweredFleet) Reboot(ctx context.Context, id string) error {
	f.w.killAgent(id)
	return f.Fleet.Reboot(ctx, id)
}

func (w *world) runShepherd() { w.runShepherdWith(nil, nil) }

// runShepherdWith runs the shepherd with Recovery's config changed by
// change (if set) and metrics into m (if set).
func (w *world) runShepherdWith(change func(*shepherd.RecoveryConfig), m *shepherd.Metrics) {
	w.t.Helper()
	agentBin := filepath.Join(w.t.TempDir(), "bmctl")
	bin := make([]byte, 64<<10) // the bytes uploaded; the machine runs agentExec
	_, _ = rand.Read(bin)
	if err := os.WriteFile(agentBin, bin, 0o755); err != nil {
		w.t.Fatal(err)
	}
	backoff := bmdb.Backoff{Initial: time.Second, Maximum: 2 * time.Second, Exponent: 2}
	rec := &shepherd.RecoveryConfig{
		LoopConfig:    shepherd.LoopConfig{Parallelism: 1, Backoff: backoff, IdleWait: recoveryPeriod},
		Thresholds:    bmdb.RecoveryThresholds{NoHeartbeatAfterStart: noHeartbeatStart, StaleHeartbeat: staleHeartbeat},
		RebootTimeout: 10 * time.Second,
	}
	if change != nil {
		change(rec)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- shepherd.Run(ctx, shepherd.Config{
			Conn: w.conn, Providers: []shepherd.Provider{poweredFleet{w.fleet, w}}, Logger: w.log.With("component", "shepherd"),
			SessionInterval: 2 * time.Second, Metrics: m,
			AgentStart: &shepherd.AgentStartConfig{
				LoopConfig: shepherd.LoopConfig{Parallelism: 2, Backoff: backoff, IdleWait: 100 * time.Millisecond},
				Signer:     w.signer, AgentBinary: agentBin,
				Endpoint: w.url, EndpointCA: w.caPEM,
				DialTimeout: 5 * time.Second, ExecTimeout: 10 * time.Second,
			},
			Recovery: rec,
		})
	}()
	w.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("shepherd: %v", err)
		}
	})
}

func (w *world) agentKey(machine uuid.UUID) ed25519.PublicKey {
	var key []byte
	err := w.view.Pool.QueryRow(context.Background(), `SELECT agent_public_key FROM machine_agent_started WHERE machine_id = $1`, machine).Scan(&key)
	if err != nil {
		return nil
	}
	return key
}

func (w *world) lastHeartbeat(machine uuid.UUID) time.Time {
	var at *time.Time
	err := w.view.Pool.QueryRow(context.Background(), `SELECT max(agent_heartbeat_at) FROM machine_agent_heartbeat WHERE machine_id = $1`, machine).Scan(&at)
	if err != nil {
		w.t.Fatal(err)
	}
	if at == nil {
		return time.Time{}
	}
	return *at
}

func (w *world) count(sql string, args ...any) int {
	w.t.Helper()
	var n int
	if err := w.view.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		w.t.Fatal(err)
	}
	return n
}

// recoveryStarts are the times Recovery started work on the machine.
func (w *world) recoveryStarts(machine uuid.UUID) []time.Time {
	rows, err := w.view.Pool.Query(context.Background(), `
		SELECT event_at FROM work_history
		WHERE machine_id = $1 AND process = 'ShepherdRecovery' AND event = 'Started' ORDER BY work_history_id`, machine)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rows.Close()
	var out []time.Time
	for rows.Next() {
		var at time.Time
		if err := rows.Scan(&at); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, at)
	}
	return out
}

// TestAgentLifecycle is the loop closed: the shepherd starts the agent over
// SSH, its heartbeats through the endpoint keep the machine out of Recovery
// across several stale thresholds; once the agent is killed, Recovery
// reboots the machine after the threshold and within a few loop periods of
// it (usually one), AgentStart starts a new agent with a new key, and the
// old key is refused.
func TestAgentLifecycle(t *testing.T) {
	w := newWorld(t)
	machine, pid := w.machine()
	other, otherPID := w.machine() // a bystander that must stay untouched
	w.runShepherd()
	ctx := context.Background()

	testwait.For(t, "the agents' first heartbeats", func() bool {
		return !w.lastHeartbeat(machine).IsZero() && !w.lastHeartbeat(other).IsZero()
	})
	firstKey := w.agentKey(machine)
	if n := w.count(`SELECT count(*) FROM machine_hardware_report WHERE machine_id = ANY($1)`, []uuid.UUID{machine, other}); n != 2 {
		t.Errorf("%d hardware reports, want one per machine", n)
	}

	// Healthy across several stale thresholds: heartbeats keep coming and
	// Recovery never touches the machines. Each window is a whole stale
	// threshold (ten heartbeat intervals): a window without a heartbeat is
	// what would make the machine stale, so each heartbeat must follow the
	// last within one.
	healthyUntil := time.Now().Add(4 * staleHeartbeat)
	for before := w.lastHeartbeat(machine); time.Now().Before(healthyUntil); before = w.lastHeartbeat(machine) {
		testwait.Within(t, "a heartbeat within a stale threshold of the one at "+before.Format(time.StampMilli), staleHeartbeat,
			func() bool { return w.lastHeartbeat(machine).After(before) })
	}
	if n := w.count(`SELECT count(*) FROM work_history WHERE process = 'ShepherdRecovery'`); n != 0 {
		t.Fatalf("Recovery acted on healthy machines: %d history events", n)
	}
	if r := w.fleet.Reboots(pid) + w.fleet.Reboots(otherPID); r != 0 {
		t.Fatalf("%d reboots of healthy machines", r)
	}

	// Kill the agent.
	old := w.killAgent(pid)
	if old == nil {
		t.Fatal("no agent running on the machine")
	}
	lastBeat := w.lastHeartbeat(machine)
	testwait.For(t, "Recovery to reboot the machine and AgentStart to start a new agent", func() bool {
		k := w.agentKey(machine)
		return k != nil && !k.Equal(firstKey) && w.fleet.Reboots(pid) == 1
	})
	starts := w.recoveryStarts(machine)
	if len(starts) != 1 {
		t.Fatalf("Recovery started %d times on the machine, want 1", len(starts))
	}
	// Both times are the database's clock.
	delay := starts[0].Sub(lastBeat)
	t.Logf("Recovery started %s after the last heartbeat (threshold %s, loop period %s)", delay.Round(time.Millisecond), staleHeartbeat, recoveryPeriod)
	if delay < staleHeartbeat {
		t.Errorf("Recovery started %s after the last heartbeat, before the %s threshold", delay, staleHeartbeat)
	}
	// Prompt: seconds after the threshold, where a Recovery that waited for
	// a coarser clock (the minute of the coarse heartbeat time, the default
	// thresholds) would be a minute late or more. One period plus a claim is
	// the usual delay (logged above); the bound leaves a loaded machine room
	// for late wakeups.
	if limit := staleHeartbeat + recoveryLatePeriods*recoveryPeriod + claimAllowance; delay > limit {
		t.Errorf("Recovery started %s after the last heartbeat, later than threshold %s plus %d loop periods (%s idle wait) and a claim (%s)",
			delay, staleHeartbeat, recoveryLatePeriods, recoveryPeriod, claimAllowance)
	}

	// The new agent heart-beats with its new key.
	restarted := w.lastHeartbeat(machine)
	testwait.For(t, "the new agent's heartbeats", func() bool { return w.lastHeartbeat(machine).After(restarted) })
	w.mu.Lock()
	current := w.agents[pid]
	w.mu.Unlock()
	if current == nil || !current.agent.PublicKey().Equal(w.agentKey(machine)) {
		t.Fatal("the started tag does not hold the running agent's key")
	}

	// The old key is refused, and its refusal writes nothing.
	beat := w.lastHeartbeat(machine)
	err := old.agent.HeartbeatOnce(ctx)
	var se *heartbeat.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("heartbeat with the old key: %v, want 403", err)
	}
	if got := w.agentKey(machine); !got.Equal(current.agent.PublicKey()) {
		t.Error("the old key's heartbeat changed the started tag")
	}
	if at := w.lastHeartbeat(machine); at.Before(beat) {
		t.Error("heartbeat time went backwards")
	}

	// The bystander was never recovered.
	if n := len(w.recoveryStarts(other)); n != 0 || w.fleet.Reboots(otherPID) != 0 {
		t.Errorf("bystander recovered %d times, rebooted %d times", n, w.fleet.Reboots(otherPID))
	}
}
