package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
	"github.com/bmctl/bmctl/pkg/localpg"
	"github.com/bmctl/bmctl/pkg/tui"
)

// tlsCluster is a throwaway PostgreSQL that takes connections over TCP with
// TLS only (pg_hba has no non-TLS host line), with a server certificate for
// "localhost" issued by its own CA.
type tlsCluster struct {
	url *url.URL // the superuser's, sslmode=verify-full with the CA
}

func startTLSCluster(t *testing.T) *tlsCluster {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	ca, err := devca.Ensure(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	c := &localpg.Cluster{Dir: filepath.Join(dir, "pg"), Fast: true}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	// The server reads its key and certificate as the account it runs as,
	// and refuses a key others may read.
	st, err := os.Stat(c.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	owner := st.Sys().(*syscall.Stat_t)
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"server.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		"server.key":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		"pg_hba.conf": []byte("local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n"),
	} {
		p := filepath.Join(c.DataDir(), name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, int(owner.Uid), int(owner.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c.Settings = []string{"listen_addresses=127.0.0.1", fmt.Sprintf("port=%d", port),
		"ssl=on", "ssl_cert_file=server.crt", "ssl_key_file=server.key"}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })

	socketURL, _ := url.Parse(c.URL("postgres"))
	u := &url.URL{Scheme: "postgres", User: socketURL.User, Host: fmt.Sprintf("localhost:%d", port), Path: "/postgres",
		RawQuery: url.Values{"sslmode": {"verify-full"}, "sslrootcert": {devca.CertPath(filepath.Join(dir, "ca"))}}.Encode()}
	return &tlsCluster{url: u}
}

// as is the cluster's URL for login, with the query changed by set.
func (c *tlsCluster) as(login string, set map[string]string) string {
	u := *c.url
	if login != "" {
		u.User = url.User(login)
	}
	q := u.Query()
	for k, v := range set {
		q.Set(k, v)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// TestEveryConnectionOverVerifiedTLS: with sslmode=verify-full and the CA
// file, migrations, the shepherd's and the views' pools, the endpoint's pool
// and the change listener all connect over TLS, each under its role; a
// server the CA did not sign, a host name the certificate does not name and
// a connection without TLS are all refused.
func TestEveryConnectionOverVerifiedTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := startTLSCluster(t)
	owner := c.as("", nil)
	if err := bmdb.MigrateUp(owner); err != nil {
		t.Fatalf("migrating over TLS: %v", err)
	}
	conn, err := bmdb.Open(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, r := range bmdb.Roles {
		login := "tls_" + strings.TrimPrefix(string(r), "bmctl_")
		if _, err := conn.Pool.Exec(ctx, "CREATE ROLE "+login+" LOGIN IN ROLE "+string(r)); err != nil {
			t.Fatal(err)
		}
	}

	shepherd, err := bmdb.Open(ctx, c.as("tls_shepherd", nil))
	if err != nil {
		t.Fatalf("shepherd over TLS: %v", err)
	}
	defer shepherd.Close()
	var ssl bool
	if err := shepherd.Pool.QueryRow(ctx, `SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()`).Scan(&ssl); err != nil || !ssl {
		t.Fatalf("shepherd's connection uses TLS: %v (%v)", ssl, err)
	}
	if err := shepherd.CheckSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if err := shepherd.CheckGrants(ctx, bmdb.RoleShepherd); err != nil {
		t.Fatal(err)
	}

	// The view's listener, on its own connection, hears the shepherd's write.
	viewerURL := c.as("tls_viewer", nil)
	lctx, stopListening := context.WithCancel(ctx)
	defer stopListening()
	events := tui.Listen(lctx, viewerURL, slog.New(slog.DiscardHandler))
	waitFor := func(what string, ok func(tui.ListenEvent) bool) {
		t.Helper()
		for {
			select {
			case ev, open := <-events:
				if !open {
					t.Fatalf("listener ended waiting for %s", what)
				}
				if ev.Lost != nil {
					t.Fatalf("listener over TLS: %v", ev.Lost)
				}
				if ok(ev) {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no %s", what)
			}
		}
	}
	waitFor("connected listener", func(ev tui.ListenEvent) bool { return ev.Connected })
	id, err := bmdb.AddProvidedMachine(ctx, shepherd.Pool, bmdb.ProvidedMachine{Provider: "test", ProviderID: "tls-1"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor("notification of the new machine", func(ev tui.ListenEvent) bool { return ev.Channel == "bmdb_change" })
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if err := bmdb.SetAgentStarted(ctx, shepherd.Pool, id, pub); err != nil {
		t.Fatal(err)
	}

	// The endpoint's own pool.
	pool, err := heartbeat.OpenPool(ctx, c.as("tls_endpoint", nil), 2)
	if err != nil {
		t.Fatalf("endpoint over TLS: %v", err)
	}
	defer pool.Close()
	if ok, err := bmdb.RecordHeartbeats(ctx, pool, []bmdb.AgentKey{{Machine: id, Key: pub}}); err != nil || !ok[0] {
		t.Fatalf("heartbeat over TLS: %v, %v", ok, err)
	}
	viewer, err := bmdb.Open(ctx, viewerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer viewer.Close()
	var n int
	if err := viewer.Pool.QueryRow(ctx, `SELECT count(*) FROM machine_agent_heartbeat`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("viewer reads %d heartbeats (%v)", n, err)
	}

	otherDir := filepath.Join(t.TempDir(), "other-ca")
	if _, err := devca.Ensure(otherDir); err != nil {
		t.Fatal(err)
	}
	for what, dsn := range map[string]string{
		"a CA that did not sign the server":    c.as("", map[string]string{"sslrootcert": devca.CertPath(otherDir)}),
		"a host the certificate does not name": strings.Replace(owner, "localhost:", "127.0.0.1:", 1),
		"no TLS":                               c.as("", map[string]string{"sslmode": "disable"}),
	} {
		pc, err := pgx.Connect(ctx, dsn)
		if err == nil {
			pc.Close(ctx)
			t.Errorf("connected with %s", what)
			continue
		}
		t.Logf("%s: refused: %v", what, err)
	}
}
