package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

func TestShepherdRunRejectsBadConfiguration(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(bin, []byte("agent"), 0o755)
	base := []string{"shepherd", "run", "--db", "postgres://unused/", "--agent-binary", bin, "--ssh-key", filepath.Join(t.TempDir(), "k")}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--loops", "agentstart,sleep"}, want: `unknown loop "sleep"`},
		{args: []string{"--loops", "recovery"}, want: "recovery and provisioning need --provider"},
		{args: []string{"--provider", "cloud9"}, want: `--provider "cloud9": want static or equinix`},
		{args: []string{"--provider", "static"}, want: "--provider static needs --inventory"},
		{args: []string{"--agentstart-backoff", "5m,1m,1.2"}, want: "maximum is not a duration at least the initial one"},
		{args: []string{"--agent-endpoint", ""}, want: "agentstart needs --agent-endpoint"},
		{args: []string{"--agent-endpoint", "https://a:1,http://b:1"}, want: `--agent-endpoint "http://b:1" is not an https://host:port URL`},
		{args: []string{"--agent-endpoint", "https://a:1", "--agent-endpoint", "b:1"}, want: `--agent-endpoint "b:1" is not an https://host:port URL`},
		{args: []string{"--agentstart-parallelism", "many"}, want: "invalid argument"},
		{env: map[string]string{"BMCTL_AGENTSTART_PARALLELISM": "many"}, want: `BMCTL_AGENTSTART_PARALLELISM="many"`},
		{env: map[string]string{"BMCTL_LOOPS": "nap"}, want: `unknown loop "nap"`},
	} {
		t.Run(strings.Join(tc.args, " ")+tc.want, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			args := append([]string{}, base...)
			if !slices.Contains(tc.args, "--agent-endpoint") { // repeated, it would add one
				args = append(args, "--agent-endpoint", "https://x:1")
			}
			r := bmctl(t, "", append(args, tc.args...)...)
			if r.code != 2 || !strings.Contains(r.err, tc.want) || strings.Count(strings.TrimSpace(r.err), "\n") != 0 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line containing %q", r.code, r.err, tc.want)
			}
		})
	}
}

// shepherdLog collects the shepherd's log while the test reads it.
type shepherdLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *shepherdLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *shepherdLog) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestShepherdRunStartsAgentsServesMetricsAndStopsCleanly runs `bmctl
// shepherd run` in process from the environment against a simulated
// machine, reads /metrics, then stops it as a signal would.
func TestShepherdRunStartsAgentsServesMetricsAndStopsCleanly(t *testing.T) {
	url := pgtest.URL(t)
	ctx := context.Background()
	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "shepherd_ed25519")
	signer, _, err := shepherd.LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	m, err := sshsim.New(sshsim.Config{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	id, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{Provider: "sim", ProviderID: "m1", Address: m.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	metrics := freeAddr(t)
	t.Setenv("BMCTL_DATABASE_URL", url)
	t.Setenv("BMCTL_SSH_KEY", keyPath)
	t.Setenv("BMCTL_AGENT_ENDPOINT", "https://127.0.0.1:8443")
	t.Setenv("BMCTL_METRICS_ADDR", metrics)

	runCtx, stop := context.WithCancel(ctx)
	var stderr shepherdLog
	code := make(chan int, 1)
	go func() {
		code <- run(runCtx, []string{"shepherd", "run", "--agentstart-parallelism", "2"}, streams{In: strings.NewReader(""), Out: io.Discard, Err: &stderr})
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		var n int
		_ = conn.Pool.QueryRow(ctx, `SELECT count(*) FROM machine_agent_started WHERE machine_id = $1`, id).Scan(&n)
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agent started; shepherd said:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The uploaded agent is this very executable, run as "<path> agent".
	self, _ := os.Executable()
	st, _ := os.Stat(self)
	if u, ok := m.Uploaded(shepherd.DefaultRemotePath); !ok || u.Size != st.Size() {
		t.Errorf("uploaded %+v, want this executable (%d bytes)", u, st.Size())
	}

	// The shepherd counts the finish after BMDB recorded it, so the
	// counters may lag the tag by a moment: read /metrics until they
	// show it.
	wantMetrics := []string{
		`bmctl_shepherd_claims_total{process="ShepherdAgentStart"} 1`,
		`bmctl_shepherd_finishes_total{process="ShepherdAgentStart"} 1`,
		`bmctl_shepherd_sessions{process="ShepherdAgentStart"} 2`,
		`bmctl_shepherd_work_duration_seconds_count{outcome="finished",process="ShepherdAgentStart"} 1`,
	}
	var missing []string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		missing = missing[:0]
		for _, want := range wantMetrics {
			if !strings.Contains(string(body), want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range missing {
		t.Errorf("/metrics lacks %s", want)
	}

	stop()
	if c := <-code; c != 0 {
		t.Errorf("exit %d after stop, want 0; stderr:\n%s", c, stderr.String())
	}
	var left int
	_ = conn.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM work) + (SELECT count(*) FROM sessions)`).Scan(&left)
	if left != 0 {
		t.Errorf("%d work or session rows left after shutdown", left)
	}
	for _, want := range []string{"msg=claimed", "msg=finished", "machine=" + id.String(), "process=ShepherdAgentStart", "session="} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, stderr.String())
		}
	}
}

// TestShepherdRunExitsZeroOnSIGTERM builds bmctl, runs `bmctl shepherd run`
// as its own process, sends SIGTERM while it holds a machine, and checks it
// exits 0 having canceled the work and closed its sessions.
func TestShepherdRunExitsZeroOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "bmctl")
	build := exec.Command("go", "build", "-o", exe, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building bmctl: %v\n%s", err, out)
	}
	url := pgtest.URL(t)
	ctx := context.Background()
	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	keyPath := filepath.Join(dir, "shepherd_ed25519")
	signer, _, err := shepherd.LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	execs := make(chan struct{}, 1)
	m, err := sshsim.New(sshsim.Config{
		AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()},
		OnExec: func(ctx context.Context, _ string, _ io.Reader, _, _ io.Writer) int {
			execs <- struct{}{}
			<-ctx.Done()
			return 255
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	id, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{Provider: "sim", ProviderID: "m1", Address: m.Addr()})
	if err != nil {
		t.Fatal(err)
	}

	var stderr shepherdLog
	cmd := exec.Command(exe, "shepherd", "run", "--db", url, "--ssh-key", keyPath, "--agent-binary", exe,
		"--agent-endpoint", "https://127.0.0.1:8443", "--agent-exec-timeout", "1h")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	<-execs // it holds the machine, waiting for the agent
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("bmctl shepherd run after SIGTERM: %v; stderr:\n%s", err, stderr.String())
	}
	var left, canceled int
	_ = conn.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM work) + (SELECT count(*) FROM sessions)`).Scan(&left)
	_ = conn.Pool.QueryRow(ctx, `SELECT count(*) FROM work_history WHERE machine_id = $1 AND event = 'Canceled' AND cause = 'shepherd shutting down'`, id).Scan(&canceled)
	if left != 0 || canceled != 1 {
		t.Errorf("after SIGTERM: %d work or session rows left, %d canceled work items; want 0 and 1; stderr:\n%s", left, canceled, stderr.String())
	}
}
