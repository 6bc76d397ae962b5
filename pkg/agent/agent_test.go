package agent_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/agent"
	"github.com/bmctl/bmctl/pkg/agentproto"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// The test binary doubles as `bmctl agent`: the detach test runs it as the
// process the shepherd starts, which re-executes it as the detached agent.
func TestMain(m *testing.M) {
	switch os.Getenv("BMCTL_AGENT_TEST_MODE") {
	case "takeover":
		env := append(os.Environ(), "BMCTL_AGENT_TEST_MODE=detached")
		err := agent.Detach(context.Background(), os.Stdin, os.Stdout, agent.Spawn{
			Path: os.Args[0], Env: env,
			LogFile: os.Getenv("BMCTL_AGENT_TEST_LOG"), PIDFile: os.Getenv("BMCTL_AGENT_TEST_PID"),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	case "detached":
		signal.Ignore(syscall.SIGHUP)
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		err := agent.RunDetached(ctx, agent.Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)), HardwareRoot: os.Getenv("BMCTL_AGENT_TEST_HW")})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	pgtest.Main(m)
}

// endpoint is a real heartbeat server on 127.0.0.1 that can be stopped and
// started again on the same address.
type endpoint struct {
	addr string
	ca   *devca.CA
	conn *bmdb.Conn
	srv  *heartbeat.Server
	stop func()
}

func startEndpoint(t *testing.T) *endpoint {
	t.Helper()
	conn, err := bmdb.Open(context.Background(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	ca, err := devca.Ensure(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoint{addr: "127.0.0.1:0", ca: ca, conn: conn}
	e.start(t)
	return e
}

func (e *endpoint) start(t *testing.T) {
	t.Helper()
	cert, err := e.ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// Restarted, the endpoint listens on the address the agent knows. Another
	// process on this machine may have been handed that port meanwhile (the
	// kernel gives out freed ports to listeners asking for any): wait for it.
	var ln net.Listener
	testwait.For(t, "the endpoint's address "+e.addr, func() bool {
		var err error
		ln, err = net.Listen("tcp", e.addr)
		if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
		return err == nil
	})
	e.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	srv := heartbeat.New(heartbeat.Config{Pool: e.conn.Pool, Interval: 200 * time.Millisecond})
	e.srv = srv
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ctx, ln, cert); err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	var once sync.Once
	e.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(e.stop)
}

func (e *endpoint) init(machine uuid.UUID) agentproto.Init {
	return agentproto.Init{MachineID: machine.String(), Endpoint: "https://" + e.addr, EndpointCA: string(e.ca.CertPEM)}
}

func (e *endpoint) machine(t *testing.T) uuid.UUID {
	t.Helper()
	id, err := bmdb.AddProvidedMachine(context.Background(), e.conn.Pool, bmdb.ProvidedMachine{Provider: "test", ProviderID: uuid.NewString()})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// lastHeartbeat is the machine's heartbeat time, zero when it has none.
func (e *endpoint) lastHeartbeat(t *testing.T, machine uuid.UUID) time.Time {
	t.Helper()
	var at *time.Time
	err := e.conn.Pool.QueryRow(context.Background(),
		`SELECT max(agent_heartbeat_at) FROM machine_agent_heartbeat WHERE machine_id = $1`, machine).Scan(&at)
	if err != nil {
		t.Fatal(err)
	}
	if at == nil {
		return time.Time{}
	}
	return *at
}

// takeover plays the shepherd: send init, read the reply, record the key.
func takeover(t *testing.T, e *endpoint, machine uuid.UUID, opts agent.Options) *agent.Agent {
	t.Helper()
	init := e.init(machine)
	in, _ := json.Marshal(init)
	var out bytes.Buffer
	a, err := agent.Takeover(context.Background(), bytes.NewReader(in), &out, opts)
	if err != nil {
		t.Fatal(err)
	}
	key, err := agentproto.ReadReply(&out, init)
	if err != nil {
		t.Fatalf("shepherd rejects the reply: %v", err)
	}
	if !key.Equal(a.PublicKey()) {
		t.Fatal("reply carries a key other than the agent's")
	}
	if err := bmdb.SetAgentStarted(context.Background(), e.conn.Pool, machine, key); err != nil {
		t.Fatal(err)
	}
	return a
}

// fakeRoot writes a machine's /proc and /sys files: what the agent parses
// on a real server, which this test host (a container) does not show.
func fakeRoot(t *testing.T) string {
	root := t.TempDir()
	files := map[string]string{
		"proc/cpuinfo":                          "processor\t: 0\nmodel name\t: Test EPYC 9654\n\nprocessor\t: 1\nmodel name\t: Test EPYC 9654\n",
		"proc/meminfo":                          "MemTotal:       16384000 kB\nMemFree:         1000 kB\n",
		"sys/block/nvme0n1/size":                "1953525168\n",
		"sys/block/nvme0n1/device/model":        "Test NVMe 1TB   \n",
		"sys/block/loop0/size":                  "2048\n",
		"sys/class/net/lo/address":              "00:00:00:00:00:00\n",
		"sys/class/net/docker0/address":         "02:42:ac:11:00:01\n", // a bridge: no device
		"sys/class/net/eno1/address":            "0c:c4:7a:00:00:01\n",
		"sys/class/net/eno1/device/vendor":      "0x8086\n",
		"sys/class/net/enp65s0f0/address":       "b8:59:9f:00:00:02\n",
		"sys/class/net/enp65s0f0/device/vendor": "0x15b3\n",
		"sys/block/dm-0/size":                   "1000000\n",
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestCollectHardware(t *testing.T) {
	hw := agent.CollectHardware(fakeRoot(t))
	want := heartbeat.HardwareReport{
		CPUModel: "Test EPYC 9654", CPUCount: 2, MemoryBytes: 16384000 * 1024,
		Disks: []heartbeat.Disk{{Name: "nvme0n1", SizeBytes: 1953525168 * 512, Model: "Test NVMe 1TB"}},
		NICs:  []heartbeat.NIC{{Name: "eno1", MAC: "0c:c4:7a:00:00:01"}, {Name: "enp65s0f0", MAC: "b8:59:9f:00:00:02"}},
	}
	g, _ := json.Marshal(hw)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("report\n got %s\nwant %s", g, w)
	}
}

// syncBuffer is a log sink agents write to from their goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestAgentHeartbeatsReportsHardwareAndSurvivesOutage(t *testing.T) {
	e := startEndpoint(t)
	machine := e.machine(t)
	var logs syncBuffer
	a := takeover(t, e, machine, agent.Options{
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
		HardwareRoot: fakeRoot(t),
	})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	testwait.For(t, "the first heartbeat", func() bool { return !e.lastHeartbeat(t, machine).IsZero() })
	var report heartbeat.HardwareReport
	var raw []byte
	if err := e.conn.Pool.QueryRow(ctx, `SELECT hardware_report FROM machine_hardware_report WHERE machine_id = $1`, machine).Scan(&raw); err != nil {
		t.Fatalf("hardware report: %v", err)
	}
	if err := json.Unmarshal(raw, &report); err != nil {
		t.Fatal(err)
	}
	if report.CPUModel != "Test EPYC 9654" || len(report.NICs) != 2 || report.NICs[0].MAC != "0c:c4:7a:00:00:01" {
		t.Errorf("stored hardware report %+v is not the machine's", report)
	}
	first := e.lastHeartbeat(t, machine)
	testwait.For(t, "later heartbeats", func() bool { return e.lastHeartbeat(t, machine).After(first) })

	// Outage: the endpoint goes away; the agent keeps trying and says why.
	e.stop()
	testwait.For(t, "the agent to log failed heartbeats", func() bool {
		return strings.Count(logs.String(), "heartbeat failed") >= 3
	})
	down := e.lastHeartbeat(t, machine)
	e.start(t)
	testwait.For(t, "heartbeats after the endpoint is back", func() bool { return e.lastHeartbeat(t, machine).After(down) })
	if !strings.Contains(logs.String(), "connection refused") {
		t.Errorf("the agent's log does not say why heartbeats failed:\n%s", logs.String())
	}
	// The endpoint stores the heartbeat before it answers, so the database can
	// show it a moment before the agent has read the answer and logged it.
	testwait.For(t, "the agent to log that it recovered", func() bool {
		return strings.Contains(logs.String(), "heartbeat accepted again")
	})
	var reports int
	if err := e.conn.Pool.QueryRow(ctx, `SELECT count(*) FROM machine_hardware_report`).Scan(&reports); err != nil || reports != 1 {
		t.Errorf("hardware reports: %d (%v), want the one from first contact", reports, err)
	}
}

func TestSupersededAgentGivesUp(t *testing.T) {
	e := startEndpoint(t)
	machine := e.machine(t)
	a := takeover(t, e, machine, agent.Options{GiveUpAfter: 500 * time.Millisecond, HardwareRoot: t.TempDir()})
	// Another takeover replaces the key, as AgentStart after Recovery does.
	takeover(t, e, machine, agent.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.Run(ctx); !errors.Is(err, agent.ErrSuperseded) {
		t.Fatalf("Run of a superseded agent: %v, want ErrSuperseded", err)
	}
	if !e.lastHeartbeat(t, machine).IsZero() {
		t.Error("a superseded agent's heartbeat was recorded")
	}
}

func TestTakeoverAnswersBadInitWithError(t *testing.T) {
	for name, in := range map[string]string{
		"not JSON":   "hello\n",
		"no machine": `{"endpoint": "https://127.0.0.1:1", "endpoint_ca": "x"}`,
		"no CA":      `{"machine_id": "` + uuid.NewString() + `", "endpoint": "https://127.0.0.1:1", "endpoint_ca": ""}`,
		"plain http": `{"machine_id": "` + uuid.NewString() + `", "endpoint": "http://127.0.0.1:1", "endpoint_ca": ""}`,
	} {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := agent.Takeover(context.Background(), strings.NewReader(in), &out, agent.Options{})
			if err == nil {
				t.Fatal("Takeover accepted a bad init message")
			}
			var rep agentproto.Reply
			if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil || rep.Error == "" || rep.PublicKey != nil {
				t.Errorf("reply %q (%v): want an error and no key", out.String(), jerr)
			}
		})
	}
}

// TestDetachLeavesNoSessionOpen runs the agent as the shepherd does: a
// process whose stdin and stdout are the SSH session's. Its stdout must reach
// EOF once it answered (no process of the agent holds it), while the
// detached agent, in a session of its own, heart-beats on.
func TestDetachLeavesNoSessionOpen(t *testing.T) {
	e := startEndpoint(t)
	machine := e.machine(t)
	dir := t.TempDir()
	pidFile, logFile := filepath.Join(dir, "agent.pid"), filepath.Join(dir, "agent.log")
	init := e.init(machine)
	in, _ := json.Marshal(init)

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "BMCTL_AGENT_TEST_MODE=takeover",
		"BMCTL_AGENT_TEST_LOG="+logFile, "BMCTL_AGENT_TEST_PID="+pidFile, "BMCTL_AGENT_TEST_HW="+fakeRoot(t))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	key, err := agentproto.ReadReply(stdout, init) // reads to EOF
	if werr := cmd.Wait(); werr != nil {
		t.Fatalf("takeover process: %v: %s", werr, stderr.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	pidText, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	if sid := sessionOf(t, pid); sid != pid {
		t.Errorf("detached agent %d is in session %d, want its own", pid, sid)
	}

	if err := bmdb.SetAgentStarted(context.Background(), e.conn.Pool, machine, ed25519.PublicKey(key)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the detached agent's heartbeat", func() bool { return !e.lastHeartbeat(t, machine).IsZero() })
	var n int
	if err := e.conn.Pool.QueryRow(context.Background(), `SELECT count(*) FROM machine_hardware_report WHERE machine_id = $1`, machine).Scan(&n); err != nil || n != 1 {
		t.Errorf("hardware report rows: %d (%v), want 1", n, err)
	}
	logText, _ := os.ReadFile(logFile)
	if !strings.Contains(string(logText), "agent running") {
		t.Errorf("agent log lacks its start line:\n%s", logText)
	}

	// A second takeover (AgentStart again, after Recovery cleared the tag)
	// replaces the running agent instead of leaving it beside the new one.
	second := exec.Command(os.Args[0])
	second.Env = cmd.Env
	second.Stdin = bytes.NewReader(in)
	out, err := second.Output()
	if err != nil {
		t.Fatalf("second takeover: %v", err)
	}
	if _, err := agentproto.ReadReply(bytes.NewReader(out), init); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the first agent to stop when replaced", func() bool { return !alive(pid) })
	pidText, err = os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	newPID, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	t.Cleanup(func() { _ = syscall.Kill(newPID, syscall.SIGKILL) })
	if newPID == pid || !alive(newPID) {
		t.Fatalf("pid file names %d (first agent %d); want the running new agent", newPID, pid)
	}
	if err := syscall.Kill(newPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the detached agent to stop on SIGTERM", func() bool { return !alive(newPID) })
	logText, _ = os.ReadFile(logFile)
	if !strings.Contains(string(logText), "agent stopping") {
		t.Errorf("agent log does not say it stopped:\n%s", logText)
	}
}

// sessionOf reads a process's session id from /proc/<pid>/stat.
func sessionOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// pid (comm) state ppid pgrp session ...; comm may hold spaces.
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	sid, _ := strconv.Atoi(fields[3])
	return sid
}

// alive says whether pid runs: gone or a zombie counts as stopped.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return fields[0] != "Z"
}

func TestTakeoverGivesUpWithItsContext(t *testing.T) {
	stdin, shepherd := io.Pipe() // a shepherd that never sends the init message
	defer shepherd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var out bytes.Buffer
	if _, err := agent.Takeover(ctx, stdin, &out, agent.Options{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Takeover without an init message: %v, want the context's end", err)
	}
}
