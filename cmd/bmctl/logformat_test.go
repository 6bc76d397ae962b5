package main

import (
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// TestShepherdLogsJSON runs the shepherd from a config file that asks for
// JSON logs against a simulated machine, and parses every line back: one
// object per event, with the stable keys machine, process and session.
func TestShepherdLogsJSON(t *testing.T) {
	isolateSettings(t)
	url := pgtest.URL(t)
	ctx := context.Background()
	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dir := t.TempDir()
	keyPath, m := simMachine(t, dir)
	id, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{Provider: "sim", ProviderID: "m1", Address: m.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	// A machine whose SSH port refuses connections: its AgentStart fails.
	dead, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{Provider: "sim", ProviderID: "m2", Address: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	config := writeFile(t, filepath.Join(dir, "config.yaml"), "log-format: json\nlog-level: debug\nshepherd:\n  ssh-key: "+keyPath+"\n  agent-endpoint: https://127.0.0.1:8443\n")
	t.Setenv("BMCTL_DATABASE_URL", url)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var stderr shepherdLog
	code := make(chan int, 1)
	go func() {
		code <- run(runCtx, []string{"--config", config, "shepherd", "run"}, streams{In: strings.NewReader(""), Out: io.Discard, Err: &stderr})
	}()
	logged := func(msg string) bool { return strings.Contains(stderr.String(), `"msg":"`+msg+`"`) }
	for deadline := time.Now().Add(time.Minute); !logged("finished") || !logged("failed"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no finished and failed work logged; shepherd said:\n%s", stderr.String())
		}
	}
	stop()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d after stop; stderr:\n%s", c, stderr.String())
	}

	events := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("log line is not JSON (%v): %s", err, line)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := e[k]; !ok {
				t.Errorf("log line lacks %q: %s", k, line)
			}
		}
		events[e["msg"].(string)] = e
	}
	for msg, machine := range map[string]string{"finished": id.String(), "failed": dead.String()} {
		e := events[msg]
		if e == nil {
			t.Errorf("no %q event in:\n%s", msg, stderr.String())
			continue
		}
		if e["machine"] != machine || e["process"] != "ShepherdAgentStart" || e["session"] == nil || e["session"] == "" {
			t.Errorf("%q event has machine %v, process %v, session %v; want %s, ShepherdAgentStart, a session", msg, e["machine"], e["process"], e["session"], machine)
		}
	}
	if c, _ := events["failed"]["cause"].(string); c == "" {
		t.Errorf("the failed event has no cause: %v", events["failed"])
	}
}

// simMachine is the shepherd's SSH key, created in dir, and a simulated
// machine that accepts it.
func simMachine(t *testing.T, dir string) (keyPath string, m *sshsim.Machine) {
	t.Helper()
	keyPath = filepath.Join(dir, "shepherd_ed25519")
	signer, _, err := shepherd.LoadOrCreateKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	m, err = sshsim.New(sshsim.Config{AuthorizedKeys: []ssh.PublicKey{signer.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return keyPath, m
}
