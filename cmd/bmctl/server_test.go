package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/agentproto"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

func TestServerFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"server"}, "no TLS certificate: give --tls-cert and --tls-key, or --dev-ca-dir"},
		{[]string{"server", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"server", "--tls-cert", "c.pem", "--tls-key", "k.pem", "--dev-ca-dir", dir}, "not both"},
		{[]string{"server", "--dev-ca-dir", dir, "--heartbeat-interval", "6m"}, "at most half of --stale-heartbeat"},
		{[]string{"server", "--dev-ca-dir", dir, "--max-body", "10"}, "too small for a hardware report"},
		{[]string{"server", "--dev-ca-dir", dir, "--agent-rate", "-1"}, "cannot be negative"},
		{[]string{"server", "--dev-ca-dir", dir, "--batch-wait", "2s"}, "--batch-wait 2s must be between 0 and 1s"},
	} {
		r := bmctl(t, "", tc.args...)
		if r.code != 2 || !strings.Contains(r.err, tc.want) || strings.Count(r.err, "\n") != 1 {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and one line saying %q", tc.args, r.code, r.err, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, devca.KeyFile)); err == nil {
		t.Error("a refused command line created a CA")
	}
}

// TestServerServesHeartbeats runs `bmctl server` in process, with a
// development CA and with certificate files, and heart-beats to it.
func TestServerServesHeartbeats(t *testing.T) {
	t.Run("dev CA", func(t *testing.T) {
		caDir := filepath.Join(t.TempDir(), "ca")
		serveAndBeat(t, []string{"--dev-ca-dir", caDir}, func() []byte {
			pem, err := os.ReadFile(devca.CertPath(caDir))
			if err != nil {
				t.Fatal(err)
			}
			return pem
		}, "agents_ca="+devca.CertPath(caDir))
	})
	t.Run("certificate files", func(t *testing.T) {
		// The operator's own CA; here one made with devca, then written out
		// as the PEM files an operator would have.
		dir := t.TempDir()
		ca, err := devca.Ensure(filepath.Join(dir, "ca"))
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		var chain []byte
		for _, der := range cert.Certificate {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem")
		if err := os.WriteFile(certFile, chain, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
			t.Fatal(err)
		}
		serveAndBeat(t, []string{"--tls-cert", certFile, "--tls-key", keyFile}, func() []byte { return ca.CertPEM }, "url=")
	})
}

func serveAndBeat(t *testing.T, tlsArgs []string, caPEM func() []byte, wantLog string) {
	url := pgtest.URL(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr lockedBuffer
	exited := make(chan int, 1)
	args := append([]string{"server", "--db", url, "--listen", "127.0.0.1:0", "--heartbeat-interval", "3s"}, tlsArgs...)
	go func() {
		exited <- run(ctx, args, streams{In: strings.NewReader(""), Out: &stderr, Err: &stderr})
	}()
	listening := regexp.MustCompile(`url=(https://127\.0\.0\.1:\d+)`)
	deadline := time.Now().Add(time.Minute)
	for !listening.MatchString(stderr.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("server never said where it listens:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	endpoint := listening.FindStringSubmatch(stderr.String())[1]
	if !strings.Contains(stderr.String(), wantLog) {
		t.Errorf("server log lacks %q:\n%s", wantLog, stderr.String())
	}

	conn, err := bmdb.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{Provider: "test", ProviderID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	if err := bmdb.SetAgentStarted(ctx, conn.Pool, id, pub); err != nil {
		t.Fatal(err)
	}
	c, err := heartbeat.NewClient(endpoint, caPEM(), key, id.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Send(ctx, heartbeat.Request{MachineID: id.String()})
	if err != nil || resp.IntervalMillis != 3000 {
		t.Fatalf("heartbeat: %+v, %v; want accepted with the 3s interval", resp, err)
	}
	var n int
	if err := conn.Pool.QueryRow(ctx, `SELECT count(*) FROM machine_agent_heartbeat WHERE machine_id = $1`, id).Scan(&n); err != nil || n != 1 {
		t.Errorf("heartbeat rows: %d (%v), want 1", n, err)
	}
	cancel()
	if code := <-exited; code != 0 {
		t.Errorf("server exited %d on shutdown:\n%s", code, stderr.String())
	}
}

func TestAgentForegroundAnswersBadInit(t *testing.T) {
	r := bmctl(t, `{"machine_id": "not-a-uuid"}`, "agent", "--foreground")
	var rep agentproto.Reply
	if err := json.Unmarshal([]byte(r.out), &rep); err != nil || !strings.Contains(rep.Error, "not a UUID") {
		t.Errorf("reply %q (%v): want an error naming the bad machine id", r.out, err)
	}
	if r.code != 1 || !strings.Contains(r.err, "not a UUID") {
		t.Errorf("exit %d, stderr %q; want 1 and the cause", r.code, r.err)
	}
}
