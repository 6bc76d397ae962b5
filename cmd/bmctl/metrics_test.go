package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

var metricName = regexp.MustCompile(`\bbmctl_[a-z0-9_]+\b`)

// monitoredMetrics are the metric names the shipped alert rules and the
// Grafana dashboard use.
func monitoredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	used := map[string]bool{}
	var rules struct {
		Groups []struct {
			Rules []struct{ Expr string } `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile("../../monitoring/bmctl.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &rules); err != nil {
		t.Fatal(err)
	}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			for _, n := range metricName.FindAllString(r.Expr, -1) {
				used[n] = true
			}
		}
	}
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string } `json:"targets"`
		} `json:"panels"`
	}
	if b, err = os.ReadFile("../../monitoring/bmctl-dashboard.json"); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				used[n] = true
			}
		}
	}
	if len(used) < 15 {
		t.Fatalf("only %d metrics found in the rules and the dashboard: %v", len(used), used)
	}
	return used
}

// exported is the bmctl_* sample names of a /metrics page.
func exported(body string, into map[string]bool) {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "bmctl_") {
			into[line[:strings.IndexAny(line, "{ ")]] = true
		}
	}
}

// TestMonitoredMetricsAreExported runs a shepherd (static provider, every
// loop, one good and one unreachable machine) and the endpoint, reads their
// live /metrics, and checks that every metric the alert rules and the
// dashboard use is one of them, and that every bmctl metric they export is
// documented in docs/metrics.md.
func TestMonitoredMetricsAreExported(t *testing.T) {
	isolateSettings(t)
	url := pgtest.URL(t)
	dir := t.TempDir()
	keyPath, m := simMachine(t, dir)
	inventory := writeFile(t, filepath.Join(dir, "fleet.yaml"), "name: sim\nreboot_command: \"true\"\nmachines:\n  - id: m1\n    address: "+m.Addr()+"\n  - id: m2\n    address: "+freeAddr(t)+"\n")
	shepherdMetrics, endpoint := freeAddr(t), freeAddr(t)
	caDir := filepath.Join(dir, "ca")
	t.Setenv("BMCTL_DATABASE_URL", url)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var shepherdLog, serverLog shepherdLog
	codes := make(chan int, 2)
	go func() {
		codes <- run(ctx, []string{"shepherd", "run", "--provider", "static", "--inventory", inventory, "--ssh-key", keyPath,
			"--agent-endpoint", "https://" + endpoint, "--metrics-addr", shepherdMetrics, "--provision-interval", "1s"},
			streams{In: strings.NewReader(""), Out: io.Discard, Err: &shepherdLog})
	}()
	go func() {
		codes <- run(ctx, []string{"server", "--listen", endpoint, "--dev-ca-dir", caDir}, streams{In: strings.NewReader(""), Out: io.Discard, Err: &serverLog})
	}()

	used := monitoredMetrics(t)
	have := map[string]bool{}
	var client *http.Client
	var missing []string
	testwait.Until(testwait.Limit, func() bool {
		have = map[string]bool{}
		if body, err := get(http.DefaultClient, "http://"+shepherdMetrics+"/metrics"); err == nil {
			exported(body, have)
		}
		if client == nil {
			client = endpointClient(caDir)
		}
		if client != nil {
			// A heartbeat without a client certificate: refused, and counted.
			if resp, err := client.Post("https://"+endpoint+heartbeat.Path, "application/json", strings.NewReader("{}")); err == nil {
				resp.Body.Close()
			}
			if body, err := get(client, "https://"+endpoint+"/metrics"); err == nil {
				exported(body, have)
			}
		}
		missing = missing[:0]
		for n := range used {
			if !have[n] {
				missing = append(missing, n)
			}
		}
		return len(missing) == 0
	})
	sort.Strings(missing)
	for _, n := range missing {
		t.Errorf("the rules or the dashboard use %s, which neither the shepherd nor the endpoint exports", n)
	}
	if len(missing) > 0 {
		t.Logf("shepherd:\n%s\nserver:\n%s", shepherdLog.String(), serverLog.String())
	}

	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for n := range have {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum"), "_count")
		if !strings.Contains(string(doc), "`"+base+"`") && !strings.Contains(string(doc), "`"+n+"`") {
			t.Errorf("%s is exported but not documented in docs/metrics.md", n)
		}
	}

	stop()
	for range 2 {
		if c := <-codes; c != 0 {
			t.Errorf("exit %d after stop; shepherd:\n%s\nserver:\n%s", c, shepherdLog.String(), serverLog.String())
		}
	}
}

// endpointClient trusts the endpoint's development CA once it exists.
func endpointClient(caDir string) *http.Client {
	pem, err := os.ReadFile(devca.CertPath(caDir))
	if err != nil {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestShepherdWaitsForSchema: a shepherd started against a database whose
// schema is behind it serves /metrics showing so, and starts its loops once
// the schema is migrated, instead of exiting into a restart loop.
func TestShepherdWaitsForSchema(t *testing.T) {
	isolateSettings(t)
	url := pgtest.EmptyURL(t) // nothing migrated
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "shepherd_ed25519")
	if _, _, err := shepherd.LoadOrCreateKey(keyPath); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var log shepherdLog
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"shepherd", "run", "--db", url, "--ssh-key", keyPath, "--agent-endpoint", "https://127.0.0.1:8443", "--metrics-addr", addr},
			streams{In: strings.NewReader(""), Out: io.Discard, Err: &log})
	}()
	want := []string{"bmctl_bmdb_schema_version 0\n", "bmctl_schema_version_needed " + strconv.Itoa(int(bmdb.LatestVersion())) + "\n"}
	var body string
	if !testwait.Until(testwait.Limit, func() bool {
		body, _ = get(http.DefaultClient, "http://"+addr+"/metrics")
		return strings.Contains(body, want[0]) && strings.Contains(body, want[1])
	}) {
		t.Fatalf("/metrics never showed %q; it said:\n%s\nshepherd:\n%s", want, body, log.String())
	}
	if !strings.Contains(log.String(), "waiting for the schema: run bmctl migrate up") || strings.Contains(log.String(), "shepherd running") {
		t.Fatalf("before the migration the shepherd said:\n%s", log.String())
	}
	if err := bmdb.MigrateUp(url); err != nil {
		t.Fatal(err)
	}
	if !testwait.Until(testwait.Limit, func() bool { return strings.Contains(log.String(), "shepherd running") }) {
		t.Fatalf("the shepherd did not start after the migration:\n%s", log.String())
	}
	stop()
	if c := <-code; c != 0 {
		t.Errorf("exit %d after stop:\n%s", c, log.String())
	}
}
