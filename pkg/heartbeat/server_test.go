package heartbeat_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"golang.org/x/time/rate"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// endpoint is a heartbeat server on 127.0.0.1 over a fresh database.
type endpoint struct {
	url  string
	ca   []byte
	conn *bmdb.Conn
}

func startEndpoint(t *testing.T, cfg heartbeat.Config) *endpoint {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := bmdb.Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := devca.Ensure(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pool = conn.Pool
	srv := heartbeat.New(cfg)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln, cert) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
		conn.Close()
	})
	return &endpoint{url: "https://" + ln.Addr().String(), ca: ca.CertPEM, conn: conn}
}

// machine adds a provided machine whose started agent holds a new key.
func (e *endpoint) machine(t *testing.T) (uuid.UUID, ed25519.PrivateKey) {
	t.Helper()
	ctx := context.Background()
	id, err := bmdb.AddProvidedMachine(ctx, e.conn.Pool, bmdb.ProvidedMachine{Provider: "test", ProviderID: uuid.NewString()})
	if err != nil {
		t.Fatal(err)
	}
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	if err := bmdb.SetAgentStarted(ctx, e.conn.Pool, id, pub); err != nil {
		t.Fatal(err)
	}
	return id, key
}

func (e *endpoint) client(t *testing.T, key ed25519.PrivateKey) *heartbeat.Client {
	t.Helper()
	c, err := heartbeat.NewClient(e.url, e.ca, key, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func (e *endpoint) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := e.conn.Pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func newKey() ed25519.PrivateKey {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	return k
}

func body(t *testing.T, req heartbeat.Request) []byte {
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var someHardware = &heartbeat.HardwareReport{
	CPUModel: "Test CPU", CPUCount: 8, MemoryBytes: 64 << 30,
	Disks: []heartbeat.Disk{{Name: "nvme0n1", SizeBytes: 1 << 40}},
	NICs:  []heartbeat.NIC{{Name: "eth0", MAC: "02:00:00:00:00:01"}},
}

func TestHeartbeatAndHardwareReportLand(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{Interval: 7 * time.Second})
	id, key := e.machine(t)
	c := e.client(t, key)
	ctx := context.Background()

	resp, err := c.Send(ctx, heartbeat.Request{MachineID: id.String(), Hardware: someHardware})
	if err != nil {
		t.Fatal(err)
	}
	if resp.IntervalMillis != 7000 {
		t.Errorf("interval told to the agent = %d ms, want 7000", resp.IntervalMillis)
	}
	var first, report []byte
	if err := e.conn.Pool.QueryRow(ctx, `SELECT h.agent_heartbeat_at::text, r.hardware_report::text
		FROM machine_agent_heartbeat h JOIN machine_hardware_report r USING (machine_id)
		WHERE machine_id = $1`, id).Scan(&first, &report); err != nil {
		t.Fatalf("heartbeat and report of the machine: %v", err)
	}
	var got heartbeat.HardwareReport
	if err := json.Unmarshal(report, &got); err != nil {
		t.Fatal(err)
	}
	if got.CPUModel != "Test CPU" || got.CPUCount != 8 || got.MemoryBytes != 64<<30 ||
		len(got.Disks) != 1 || got.Disks[0].SizeBytes != 1<<40 || len(got.NICs) != 1 || got.NICs[0].MAC != "02:00:00:00:00:01" {
		t.Errorf("stored report = %+v, want %+v", got, *someHardware)
	}

	// Later heartbeats carry no report and move the heartbeat time on.
	if _, err := c.Send(ctx, heartbeat.Request{MachineID: id.String()}); err != nil {
		t.Fatal(err)
	}
	var moved bool
	if err := e.conn.Pool.QueryRow(ctx, `SELECT agent_heartbeat_at::text > $2 FROM machine_agent_heartbeat WHERE machine_id = $1`, id, string(first)).Scan(&moved); err != nil {
		t.Fatal(err)
	}
	if !moved {
		t.Error("second heartbeat did not move the heartbeat time")
	}
}

func TestRefusalsWriteNothing(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{MaxBodyBytes: 4096})
	id, key := e.machine(t)
	valid := body(t, heartbeat.Request{MachineID: id.String(), Hardware: someHardware})
	huge := body(t, heartbeat.Request{MachineID: id.String(), Hardware: &heartbeat.HardwareReport{CPUModel: strings.Repeat("x", 5000)}})

	cases := []struct {
		name string
		key  ed25519.PrivateKey
		body []byte
		code int
	}{
		{"wrong key", newKey(), valid, http.StatusForbidden},
		{"unknown machine", key, body(t, heartbeat.Request{MachineID: uuid.NewString(), Hardware: someHardware}), http.StatusForbidden},
		{"malformed JSON", key, []byte(`{"machine_id": "` + id.String() + `", "hardware": {`), http.StatusBadRequest},
		{"not a UUID", key, []byte(`{"machine_id": "web-01"}`), http.StatusBadRequest},
		{"oversized body", key, huge, http.StatusRequestEntityTooLarge},
		{"no client certificate", nil, valid, http.StatusUnauthorized},
	}
	messages := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.client(t, tc.key).SendRaw(context.Background(), tc.body)
			var se *heartbeat.StatusError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want HTTP %d", err, tc.code)
			}
			if se.Code != tc.code {
				t.Errorf("HTTP %d (%s), want %d", se.Code, se.Message, tc.code)
			}
			messages[tc.name] = se.Message
			for _, table := range []string{"machine_agent_heartbeat", "machine_hardware_report"} {
				if n := e.count(t, table); n != 0 {
					t.Errorf("%s has %d rows after a refusal, want 0", table, n)
				}
			}
		})
	}
	// An unknown machine and a wrong key look the same from outside.
	if messages["wrong key"] != messages["unknown machine"] {
		t.Errorf("refusals tell machines apart: wrong key %q, unknown machine %q", messages["wrong key"], messages["unknown machine"])
	}
}

func TestRecoveredMachineRefusesOldKey(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{})
	id, key := e.machine(t)
	c := e.client(t, key)
	ctx := context.Background()
	if _, err := c.Send(ctx, heartbeat.Request{MachineID: id.String()}); err != nil {
		t.Fatal(err)
	}
	if err := bmdb.ClearAgentTags(ctx, e.conn.Pool, id); err != nil {
		t.Fatal(err)
	}
	_, err := c.Send(ctx, heartbeat.Request{MachineID: id.String()})
	var se *heartbeat.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("heartbeat after recovery: %v, want 403", err)
	}
	if n := e.count(t, "machine_agent_heartbeat"); n != 0 {
		t.Errorf("refused heartbeat left %d heartbeat rows", n)
	}
}

func TestRateLimitPerKey(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{AgentRate: rate.Limit(0.001), AgentBurst: 2})
	id, key := e.machine(t)
	other, otherKey := e.machine(t)
	c := e.client(t, key)
	ctx := context.Background()
	req := heartbeat.Request{MachineID: id.String()}
	for i := range 2 {
		if _, err := c.Send(ctx, req); err != nil {
			t.Fatalf("heartbeat %d within the burst: %v", i+1, err)
		}
	}
	_, err := c.Send(ctx, req)
	var se *heartbeat.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusTooManyRequests {
		t.Fatalf("heartbeat beyond the burst: %v, want 429", err)
	}
	// Another agent is not held back by the first one's excess.
	if _, err := e.client(t, otherKey).Send(ctx, heartbeat.Request{MachineID: other.String()}); err != nil {
		t.Errorf("other agent: %v", err)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{})
	id, key := e.machine(t)
	ctx := context.Background()
	if _, err := e.client(t, key).Send(ctx, heartbeat.Request{MachineID: id.String(), Hardware: someHardware}); err != nil {
		t.Fatal(err)
	}
	_, _ = e.client(t, newKey()).Send(ctx, heartbeat.Request{MachineID: id.String()})

	// Readable without a client certificate.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	get := func(path string) (int, string) {
		resp, err := hc.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, b := get("/healthz"); code != http.StatusOK || b != "ok\n" {
		t.Errorf("/healthz = %d %q, want 200 ok", code, b)
	}
	code, metrics := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`bmctl_heartbeat_requests_total{result="accepted"} 1`,
		`bmctl_heartbeat_requests_total{result="refused"} 1`,
		`bmctl_heartbeat_hardware_reports_total 1`,
		`bmctl_heartbeat_accepted_seconds_count 1`,
		`bmctl_heartbeat_batch_size_count 1`, // the refused one; the report goes its own way
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// A plain HTTPS client gets an HTTP answer saying what is missing, not
	// a failed handshake.
	resp, err := hc.Post(e.url+heartbeat.Path, "application/json", bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST without certificate = %d, want 401", resp.StatusCode)
	}
	if code, _ := get(heartbeat.Path); code != http.StatusMethodNotAllowed {
		t.Errorf("GET %s = %d, want 405", heartbeat.Path, code)
	}
}

func TestNonEd25519CertificateRefused(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{})
	id, _ := e.machine(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	}}}
	resp, err := hc.Post(e.url+heartbeat.Path, "application/json", bytes.NewReader(body(t, heartbeat.Request{MachineID: id.String()})))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("ECDSA client certificate: HTTP %d, want 401", resp.StatusCode)
	}
	if n := e.count(t, "machine_agent_heartbeat"); n != 0 {
		t.Errorf("%d heartbeat rows after a refusal, want 0", n)
	}
}

// TestDatabaseDown: without its database the endpoint answers 503 with
// Retry-After (agents retry) and /healthz says so.
func TestDatabaseDown(t *testing.T) {
	e := startEndpoint(t, heartbeat.Config{})
	id, key := e.machine(t)
	c := e.client(t, key)
	e.conn.Pool.Close()
	_, err := c.Send(context.Background(), heartbeat.Request{MachineID: id.String()})
	var se *heartbeat.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable {
		t.Errorf("heartbeat without a database: %v, want 503", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err := hc.Get(e.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/healthz without a database: %d, want 503", resp.StatusCode)
	}
}
