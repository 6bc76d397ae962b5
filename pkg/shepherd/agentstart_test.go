package shepherd_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/agentproto"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

func TestAgentStartSetsTag(t *testing.T) {
	e := newEnv(t)
	m, id, _ := e.machine()
	stop := e.run(shepherd.Config{AgentStart: e.agentStart()})
	testwait.For(t, "the agent-started tag", func() bool { return e.agentStarted(id) })
	stop()

	var key []byte
	if err := e.conn.Pool.QueryRow(context.Background(), `SELECT agent_public_key FROM machine_agent_started WHERE machine_id = $1`, id).Scan(&key); err != nil {
		t.Fatal(err)
	}
	if !ed25519.PublicKey(key).Equal(m.AgentKey().Public()) {
		t.Error("the tag does not hold the key the agent replied with")
	}
	bin, _ := os.ReadFile(e.agentBin)
	u, ok := m.Uploaded(shepherd.DefaultRemotePath)
	if !ok || u.SHA256 != sha256.Sum256(bin) || u.Mode&0o111 == 0 {
		t.Errorf("agent on the machine: %+v, uploaded %v; want the agent binary, executable", u, ok)
	}
	if got := m.Execs(); len(got) != 1 || got[0] != "'/tmp/bmctl-agent' agent" || m.DigestChecks() != 1 {
		t.Errorf("commands run: %q after %d digest checks, want one \"'/tmp/bmctl-agent' agent\" after one check", got, m.DigestChecks())
	}
	pinned, err := shepherd.PinnedHostKey(context.Background(), e.conn.Pool, id)
	if err != nil || pinned == nil || string(pinned.Marshal()) != string(m.HostKey().Marshal()) {
		t.Errorf("pinned host key %v (%v), want the machine's", pinned, err)
	}
	evs := e.history(id)
	if len(evs) != 2 || evs[0].Event != bmdb.EventStarted || evs[1].Event != bmdb.EventFinished || evs[1].Process != bmdb.ProcessShepherdAgentStart {
		t.Errorf("history: %s\nwant AgentStart Started, Finished", events(evs))
	}
	if n := e.count(`SELECT count(*) FROM work`) + e.count(`SELECT count(*) FROM sessions`); n != 0 {
		t.Errorf("%d work or session rows left after shutdown", n)
	}
}

// misbehaviours are machines that fail AgentStart; each must fail with a
// clear cause, back off, and be retried after the backoff once it behaves.
var misbehaviours = []struct {
	name  string
	class shepherd.FailureClass
	cause []string
	// break makes the machine misbehave; the fix is SetOnExec(nil),
	// PowerOn and SetAuthorizedKeys with the shepherd's key.
	breakIt func(m *sshsim.Machine)
}{
	{"refuses connections", shepherd.FailDial, []string{"dialing SSH at", "connection refused"},
		func(m *sshsim.Machine) { m.PowerOff() }},
	{"refuses our key", shepherd.FailAuth, []string{"did not accept the shepherd's SSH key", "unable to authenticate"},
		func(m *sshsim.Machine) { m.SetAuthorizedKeys(otherKey()) }},
	{"agent exits non-zero", shepherd.FailExec, []string{"agent exited with status 3", "stderr: kernel too old"},
		func(m *sshsim.Machine) { m.SetOnExec(sshsim.Fail("kernel too old\n", 3)) }},
	{"agent replies garbage", shepherd.FailReply, []string{"agent reply is not valid JSON", "hello there"},
		func(m *sshsim.Machine) { m.SetOnExec(sshsim.Reply("hello there", 0)) }},
	{"agent replies with a wrong echo", shepherd.FailReply, []string{"does not echo the init message", "someone-else"},
		func(m *sshsim.Machine) { m.SetOnExec(wrongEcho) }},
	{"agent hangs", shepherd.FailTimeout, []string{"running the agent: no answer within 1s"},
		func(m *sshsim.Machine) { m.SetOnExec(sshsim.Hang) }},
}

func otherKey() ssh.PublicKey {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	k, _ := ssh.NewPublicKey(pub)
	return k
}

func wrongEcho(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) int {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	_ = json.NewEncoder(stdout).Encode(agentproto.Reply{Init: agentproto.Init{MachineID: "someone-else"}, PublicKey: pub})
	return 0
}

func TestAgentStartFailuresBackOffAndRetry(t *testing.T) {
	e := newEnv(t)
	type subject struct {
		m  *sshsim.Machine
		id bmdb.ProvidedMachine
	}
	var subjects []subject
	for _, mb := range misbehaviours {
		m, id, _ := e.machine()
		mb.breakIt(m)
		subjects = append(subjects, subject{m, bmdb.ProvidedMachine{MachineID: id}})
	}
	cfg := e.agentStart()
	cfg.Parallelism = len(misbehaviours)
	cfg.ExecTimeout = time.Second
	metrics := shepherd.NewMetrics(nil)
	e.run(shepherd.Config{AgentStart: cfg, Metrics: metrics})

	for i, mb := range misbehaviours {
		s := subjects[i]
		id := s.id.MachineID
		testwait.For(t, mb.name+": a failure", func() bool {
			_, ok := hasEvent(e.history(id), bmdb.ProcessShepherdAgentStart, bmdb.EventFailed)
			return ok
		})
		failed, _ := hasEvent(e.history(id), bmdb.ProcessShepherdAgentStart, bmdb.EventFailed)
		if _, ok := hasEvent([]event{failed}, bmdb.ProcessShepherdAgentStart, bmdb.EventFailed, mb.cause...); !ok {
			t.Errorf("%s: history %s\nwant the first failure's cause to hold %q", mb.name, events(e.history(id)), mb.cause)
		}
		// The shepherd counts the failure after BMDB recorded it.
		testwait.For(t, mb.name+": the failure counted with class "+string(mb.class), func() bool {
			return counterValue(metrics.Failures.WithLabelValues("ShepherdAgentStart", string(mb.class))) >= 1
		})
		// The backoff follows the loop's policy: 2s after the first failure.
		// The machine may have failed again after that backoff before this
		// reads it, so the interval is checked against the failures of the
		// same snapshot, and the cause against the latest of them.
		var interval int64
		var failures int
		var cause, lastCause string
		err := e.conn.Pool.QueryRow(context.Background(), `
			SELECT b.backoff_last_interval_seconds, b.backoff_cause,
			       (SELECT count(*) FROM work_history h WHERE h.machine_id = b.machine_id
			        AND h.process = 'ShepherdAgentStart' AND h.event = 'Failed'),
			       (SELECT h.cause FROM work_history h WHERE h.machine_id = b.machine_id
			        AND h.process = 'ShepherdAgentStart' AND h.event = 'Failed' ORDER BY h.work_history_id DESC LIMIT 1)
			FROM work_backoff b
			WHERE b.machine_id = $1 AND b.process = 'ShepherdAgentStart'`, id).Scan(&interval, &cause, &failures, &lastCause)
		var want int64
		for range failures {
			want = testBackoff.Next(want)
		}
		if err != nil || failures < 1 || interval != want || cause != lastCause {
			t.Errorf("%s: backoff interval %ds cause %q after %d failures (%v); want %ds (2s after the first) and the latest failure's cause %q",
				mb.name, interval, cause, failures, err, want, lastCause)
		}
		// Behave again; the retry must come after the backoff.
		s.m.SetOnExec(nil)
		s.m.SetAuthorizedKeys(e.signer.PublicKey())
		if err := s.m.PowerOn(); err != nil {
			t.Fatal(err)
		}
	}
	for i, mb := range misbehaviours {
		id := subjects[i].id.MachineID
		testwait.For(t, mb.name+": the agent started after the backoff", func() bool { return e.agentStarted(id) })
		evs := e.history(id)
		failed, _ := hasEvent(evs, bmdb.ProcessShepherdAgentStart, bmdb.EventFailed)
		var retry *event
		for j := range evs {
			if evs[j].Event == bmdb.EventStarted && evs[j].At.After(failed.At) {
				retry = &evs[j]
				break
			}
		}
		if retry == nil || retry.At.Sub(failed.At) < 2*time.Second {
			t.Errorf("%s: history %s\nwant the retry at least 2s (the backoff) after the failure", mb.name, events(evs))
		}
		if last := evs[len(evs)-1]; last.Event != bmdb.EventFinished {
			t.Errorf("%s: history %s\nwant it to end Finished", mb.name, events(evs))
		}
		if n := e.count(`SELECT count(*) FROM work_backoff WHERE machine_id = $1`, id); n != 0 {
			t.Errorf("%s: backoff left after success", mb.name)
		}
	}
}

func TestChangedHostKeyIsRefused(t *testing.T) {
	e := newEnv(t)
	m, id, _ := e.machine()
	cfg := e.agentStart()
	// A changed host key is no transient fault: retry rarely.
	cfg.BackoffOverrides = map[shepherd.FailureClass]bmdb.Backoff{shepherd.FailHostKey: {Initial: time.Hour, Maximum: 4 * time.Hour}}
	e.run(shepherd.Config{AgentStart: cfg})
	testwait.For(t, "the first agent start", func() bool { return e.agentStarted(id) })
	pinned := m.HostKey()

	// The machine comes back with another host key and needs its agent.
	_, newKey, _ := ed25519.GenerateKey(rand.Reader)
	if err := m.SetHostKey(newKey); err != nil {
		t.Fatal(err)
	}
	if err := bmdb.ClearAgentTags(context.Background(), e.conn.Pool, id); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "the refusal", func() bool {
		_, ok := hasEvent(e.history(id), bmdb.ProcessShepherdAgentStart, bmdb.EventFailed)
		return ok
	})
	if _, ok := hasEvent(e.history(id), bmdb.ProcessShepherdAgentStart, bmdb.EventFailed,
		"SSH host key changed", "pinned "+ssh.FingerprintSHA256(pinned), "presented ssh-ed25519 "+ssh.FingerprintSHA256(m.HostKey())); !ok {
		t.Errorf("history %s\nwant a failure naming both fingerprints", events(e.history(id)))
	}
	if e.agentStarted(id) || len(m.Execs()) != 1 {
		t.Errorf("the agent was started through a changed host key (commands run: %q)", m.Execs())
	}
	if n := e.count(`SELECT backoff_last_interval_seconds FROM work_backoff WHERE machine_id = $1`, id); n != 3600 {
		t.Errorf("backoff after a host key change: %ds, want the override's 3600s", n)
	}
	still, _ := shepherd.PinnedHostKey(context.Background(), e.conn.Pool, id)
	if string(still.Marshal()) != string(pinned.Marshal()) {
		t.Error("the pin changed to the new key")
	}
}

// TestAgentStartUploadsOnlyWhatTheMachineLacks restarts the agent on a
// machine that still has it (nothing moves), then with a new agent binary
// (uploaded again, compressed), then after the machine lost it in a power
// cycle, and last on a machine without gzip (uploaded whole over SFTP).
func TestAgentStartUploadsOnlyWhatTheMachineLacks(t *testing.T) {
	e := newEnv(t)
	// Half text, half noise: compressible like a real binary, not entirely.
	agent := func() []byte {
		b := bytes.Repeat([]byte("bmctl agent "), 64<<10/12)
		noise := make([]byte, len(b))
		_, _ = rand.Read(noise)
		return append(b, noise...)
	}
	bin := agent()
	if err := os.WriteFile(e.agentBin, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	m, id, _ := e.machine()
	e.run(shepherd.Config{AgentStart: e.agentStart()})
	restart := func(what string) (moved int64) {
		t.Helper()
		before := m.BytesReceived()
		if err := bmdb.ClearAgentTags(context.Background(), e.conn.Pool, id); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, what, func() bool { return e.agentStarted(id) })
		return m.BytesReceived() - before
	}
	holds := func(bin []byte) bool {
		u, ok := m.Uploaded(shepherd.DefaultRemotePath)
		return ok && u.SHA256 == sha256.Sum256(bin) && u.Mode&0o111 != 0
	}
	testwait.For(t, "the first agent start", func() bool { return e.agentStarted(id) })
	first := m.BytesReceived()
	if first <= 0 || first >= int64(len(bin))*3/4 || !holds(bin) {
		t.Fatalf("first start moved %d bytes for a %d-byte agent (machine holds it: %v); want it compressed on the wire",
			first, len(bin), holds(bin))
	}

	if moved := restart("the agent restarted"); moved != 0 || len(m.Execs()) != 2 || m.DigestChecks() != 2 {
		t.Errorf("restart with the same agent: %d bytes moved, %d agent runs, %d digest checks; want 0, 2, 2",
			moved, len(m.Execs()), m.DigestChecks())
	}

	// A new build of the agent: same size, other bytes, later mtime.
	newBin := agent()
	if err := os.WriteFile(e.agentBin, newBin, 0o755); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(e.agentBin, later, later); err != nil {
		t.Fatal(err)
	}
	if moved := restart("the new agent started"); moved <= 0 || !holds(newBin) {
		t.Errorf("after a new agent build %d bytes moved and the machine holds the new one: %v; want it uploaded", moved, holds(newBin))
	}

	// Power loss empties /tmp: the agent is uploaded again.
	if err := m.PowerCycle(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if moved := restart("the agent started after a power cycle"); moved <= 0 || !holds(newBin) {
		t.Errorf("after a power cycle %d bytes moved, machine holds the agent: %v; want it uploaded", moved, holds(newBin))
	}

	// Without gzip the agent goes whole over SFTP.
	m.SetGzip(false)
	if err := m.PowerCycle(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	if moved := restart("the agent started on a machine without gzip"); moved != int64(len(newBin)) || !holds(newBin) {
		t.Errorf("without gzip %d bytes moved, machine holds the agent: %v; want the %d-byte binary over SFTP", moved, holds(newBin), len(newBin))
	}
}

// TestAgentStartPassesEndpointReplicas: the init names every endpoint
// replica, the first as Endpoint too, and the agent's echo of it is accepted.
func TestAgentStartPassesEndpointReplicas(t *testing.T) {
	e := newEnv(t)
	m, id, _ := e.machine()
	inits := make(chan agentproto.Init, 1)
	m.SetOnExec(func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) int {
		in, _ := io.ReadAll(stdin)
		var init agentproto.Init
		_ = json.Unmarshal(in, &init)
		select {
		case inits <- init:
		default:
		}
		return m.AgentExec(ctx, cmd, bytes.NewReader(in), stdout, stderr)
	})
	cfg := e.agentStart()
	cfg.MoreEndpoints = []string{"https://127.0.0.2:8443", "https://127.0.0.3:8443"}
	e.run(shepherd.Config{AgentStart: cfg})
	testwait.For(t, "the agent-started tag", func() bool { return e.agentStarted(id) })
	init := <-inits
	want := []string{cfg.Endpoint, "https://127.0.0.2:8443", "https://127.0.0.3:8443"}
	if init.Endpoint != cfg.Endpoint || !slices.Equal(init.Endpoints, want) || !slices.Equal(init.URLs(), want) {
		t.Errorf("init names endpoint %q and replicas %q, want %q and %q", init.Endpoint, init.Endpoints, cfg.Endpoint, want)
	}
}
