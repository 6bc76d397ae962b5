package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/internal/metalemu"
	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// One `bmctl shepherd run --provider equinix` against an emulated Metal
// project whose devices are in-process SSH servers provisions the project up
// to --max-machines and brings every device to agent-started. The shepherd
// creates its SSH key pair on start; the provider puts the public half on
// the devices, which accept only the keys they were created with.
func TestShepherdRunEquinix(t *testing.T) {
	emu := metalemu.New("good-token")
	project := emu.AddProject("fleet")
	emu.AddReservations(project, 3, metalemu.Reservation{Plan: "c3.small.x86", Facility: "sv15", Metro: "sv"})
	var mu sync.Mutex
	machines := map[string]*sshsim.Machine{}
	emu.OnProvision(func(d metalemu.DeviceView) metalemu.Network {
		var keys []ssh.PublicKey
		for _, k := range d.AuthorizedKeys {
			if pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k)); err == nil {
				keys = append(keys, pk)
			}
		}
		if len(keys) == 0 {
			t.Errorf("device %s was created without a usable SSH key: %q", d.ID, d.AuthorizedKeys)
			return metalemu.Network{}
		}
		m, err := sshsim.New(sshsim.Config{AuthorizedKeys: keys})
		if err != nil {
			t.Errorf("device %s: %v", d.ID, err)
			return metalemu.Network{}
		}
		t.Cleanup(func() { m.Close() })
		mu.Lock()
		machines[d.ID] = m
		mu.Unlock()
		_, port, _ := strings.Cut(m.Addr(), ":")
		return metalemu.Network{PublicIPv4: "127.0.0.1", Tags: []string{"bmctl.ssh-port=" + port}}
	})
	serveMetal(t, emu)
	t.Setenv("METAL_PROJECT_ID", project)
	t.Setenv("METAL_AUTH_TOKEN", "good-token")

	url := pgtest.URL(t)
	dir := t.TempDir()
	agent := filepath.Join(dir, "agent")
	bin := make([]byte, 64<<10)
	_, _ = rand.Read(bin)
	if err := os.WriteFile(agent, bin, 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"shepherd", "run", "--db", url, "--provider", "equinix",
			"--loops", "agentstart,provisioning", "--max-machines", "2", "--provision-interval", "50ms",
			"--agent-endpoint", "https://127.0.0.1:8443", "--agent-binary", agent,
			"--ssh-key", filepath.Join(dir, "shepherd_ed25519"), "--session-interval", "1s"},
			streams{In: strings.NewReader(""), Out: &out, Err: &errb})
	}()

	conn, err := bmdb.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	started := func() int {
		var n int
		_ = conn.Pool.QueryRow(context.Background(), `SELECT count(*) FROM machine_agent_started a
			JOIN machine_provided p USING (machine_id) WHERE p.provider = 'equinix' AND p.provider_status = 'active'`).Scan(&n)
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for started() < 2 {
		select {
		case code := <-done:
			t.Fatalf("bmctl shepherd run exited %d early:\n%s", code, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("gave up waiting for 2 agent-started machines; log:\n%s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("bmctl shepherd run exited %d after the signal:\n%s", code, errb.String())
	}
	if n := len(emu.Devices(project)); n != 2 {
		t.Errorf("%d devices in the project, want --max-machines 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, m := range machines {
		if _, ok := m.Uploaded("/tmp/bmctl-agent"); !ok {
			t.Errorf("device %s: no agent uploaded", id)
		}
	}
}
