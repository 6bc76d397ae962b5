package shepherd_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/internal/brakestest"
	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// The test binary doubles as two helper programs: a BMC client the static
// provider's reboot command runs, and a shepherd process the crash test
// kills with SIGKILL.
func TestMain(m *testing.M) {
	switch os.Getenv("BMCTL_TEST_HELPER") {
	case "bmc":
		os.Exit(bmcClient(os.Args[len(os.Args)-1]))
	case "shepherd":
		os.Exit(shepherdChild())
	}
	pgtest.Main(m)
}

// bmcClient asks the test's BMC to power-cycle a machine, like ipmitool would.
func bmcClient(url string) int {
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	os.Stdout.Write(body)
	if resp.StatusCode != http.StatusOK {
		return 1
	}
	return 0
}

// shepherdChild runs an AgentStart shepherd configured by the environment
// until it is killed.
func shepherdChild() int {
	ctx := context.Background()
	conn, err := bmdb.Open(ctx, os.Getenv("BMCTL_TEST_DB"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	signer, _, err := shepherd.LoadOrCreateKey(os.Getenv("BMCTL_TEST_KEY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	err = shepherd.Run(ctx, shepherd.Config{
		Conn:            conn,
		SessionInterval: 2 * time.Second,
		AgentStart: &shepherd.AgentStartConfig{
			LoopConfig:  shepherd.LoopConfig{IdleWait: 50 * time.Millisecond},
			Signer:      signer,
			AgentBinary: os.Getenv("BMCTL_TEST_AGENT"),
			Endpoint:    "https://127.0.0.1:1",
			ExecTimeout: time.Hour,
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// testBackoff keeps failed machines out for seconds, not minutes.
var testBackoff = bmdb.Backoff{Initial: 2 * time.Second, Maximum: 10 * time.Second, Exponent: 2}

// env is one test's world: a fresh BMDB, the shepherd's key, an agent
// binary, and a fleet of simulated machines.
type env struct {
	t        testing.TB
	url      string
	conn     *bmdb.Conn
	keyPath  string
	signer   ssh.Signer
	agentBin string
	fleet    *sshsim.Fleet
	log      *slog.Logger
}

func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{t: t, url: pgtest.URL(t)}
	conn, err := bmdb.Open(context.Background(), e.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	e.conn = conn
	// No heartbeat endpoint runs here: stand in for one that always has.
	brakestest.Watched(t, conn.Pool)
	dir := t.TempDir()
	e.keyPath = filepath.Join(dir, "shepherd_ed25519")
	e.signer, _, err = shepherd.LoadOrCreateKey(e.keyPath)
	if err != nil {
		t.Fatal(err)
	}
	e.agentBin = filepath.Join(dir, "agent")
	bin := make([]byte, 256<<10)
	_, _ = rand.Read(bin)
	if err := os.WriteFile(e.agentBin, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	e.fleet = sshsim.NewFleet("sim", sshsim.Config{AuthorizedKeys: []ssh.PublicKey{e.signer.PublicKey()}})
	t.Cleanup(e.fleet.Close)
	e.log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return e
}

// testWriter sends log lines to t.Log, so they show with failing tests only.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// machine starts a simulated machine and records it in BMDB as provided.
func (e *env) machine() (*sshsim.Machine, uuid.UUID, string) {
	e.t.Helper()
	m, pid, err := e.fleet.Add()
	if err != nil {
		e.t.Fatal(err)
	}
	id, err := bmdb.AddProvidedMachine(context.Background(), e.conn.Pool, bmdb.ProvidedMachine{
		Provider: e.fleet.Type(), ProviderID: pid, Address: m.Addr(), Status: "active",
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return m, id, pid
}

func (e *env) agentStart() *shepherd.AgentStartConfig {
	return &shepherd.AgentStartConfig{
		LoopConfig:  shepherd.LoopConfig{Parallelism: 2, Backoff: testBackoff, IdleWait: 50 * time.Millisecond},
		Signer:      e.signer,
		AgentBinary: e.agentBin,
		Endpoint:    "https://127.0.0.1:8443",
		EndpointCA:  "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n",
		DialTimeout: 5 * time.Second,
		ExecTimeout: 5 * time.Second,
	}
}

func (e *env) recovery() *shepherd.RecoveryConfig {
	return &shepherd.RecoveryConfig{
		LoopConfig:    shepherd.LoopConfig{Parallelism: 2, Backoff: testBackoff, IdleWait: 50 * time.Millisecond},
		Thresholds:    bmdb.RecoveryThresholds{NoHeartbeatAfterStart: time.Second, StaleHeartbeat: time.Second},
		RebootTimeout: 10 * time.Second,
	}
}

// run starts a shepherd; the returned stop cancels it and waits until Run
// has returned.
func (e *env) run(cfg shepherd.Config) (stop func()) {
	e.t.Helper()
	if cfg.Conn == nil {
		cfg.Conn = e.conn
	}
	if cfg.Logger == nil {
		cfg.Logger = e.log
	}
	if cfg.SessionInterval == 0 {
		cfg.SessionInterval = 2 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- shepherd.Run(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("shepherd.Run: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return stop
}

type event struct {
	Process bmdb.Process
	Event   bmdb.Event
	Cause   string
	Session uuid.UUID
	At      time.Time
}

func (e *env) history(machine uuid.UUID) []event {
	e.t.Helper()
	rows, err := e.conn.Pool.Query(context.Background(), `
		SELECT process::text, event::text, cause, coalesce(session_id, '00000000-0000-0000-0000-000000000000'), event_at
		FROM work_history WHERE machine_id = $1 ORDER BY work_history_id`, machine)
	if err != nil {
		e.t.Fatal(err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (event, error) {
		var ev event
		err := r.Scan(&ev.Process, &ev.Event, &ev.Cause, &ev.Session, &ev.At)
		return ev, err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func (e *env) count(sql string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.conn.Pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func (e *env) agentStarted(machine uuid.UUID) bool {
	return e.count(`SELECT count(*) FROM machine_agent_started WHERE machine_id = $1`, machine) == 1
}

// events renders history compactly for failure messages.
func events(evs []event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %s %s %q", ev.Process, ev.Event, ev.Cause)
	}
	return b.String()
}

// hasEvent reports the first event of process with ev whose cause holds all
// of the given strings.
func hasEvent(evs []event, process bmdb.Process, ev bmdb.Event, cause ...string) (event, bool) {
next:
	for _, x := range evs {
		if x.Process != process || x.Event != ev {
			continue
		}
		for _, c := range cause {
			if !strings.Contains(x.Cause, c) {
				continue next
			}
		}
		return x, true
	}
	return event{}, false
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}
