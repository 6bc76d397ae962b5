package bmcpool_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/redfishsim"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/bmc"
	"github.com/bmctl/bmctl/pkg/bmc/bmcpool"
	"github.com/bmctl/bmctl/pkg/devca"
)

const password = "pool-test-pw"

// Two machines behind one BMC (a chassis with two nodes) share one client:
// one session, one request at a time, both rebooted.
func TestSystemsOfOneBMCShareASession(t *testing.T) {
	dir := t.TempDir()
	ca, err := devca.Ensure(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	var machines []*sshsim.Machine
	var powered []redfishsim.Machine
	for range 2 {
		m, err := sshsim.New(sshsim.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		machines, powered = append(machines, m), append(powered, m)
	}
	sim, err := redfishsim.New(redfishsim.Config{Username: "admin", Password: password, Certificate: cert, Machines: powered,
		Delays: redfishsim.Delays{Off: 100 * time.Millisecond, Cycle: 2 * time.Second, On: 200 * time.Millisecond, Boot: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	pool := bmcpool.New(bmcpool.Options{})
	spec := bmcpool.Spec{Type: "redfish", Address: sim.URL(), Username: "admin", PasswordFile: pwFile, CAFile: devca.CertPath(filepath.Join(dir, "ca"))}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		s := spec
		s.System = sim.SystemPath(i)
		c, err := pool.Get(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			_, errs[i] = bmc.Reboot(ctx, c, machines[i].Addr(), bmc.Bounds{Down: 30 * time.Second, On: 30 * time.Second, SSH: 30 * time.Second, Poll: 50 * time.Millisecond})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("system %d: %v", i+1, err)
		}
		if machines[i].Boots() != 2 {
			t.Errorf("machine %d booted %d times", i+1, machines[i].Boots())
		}
	}
	created := 0
	for _, r := range sim.Requests() {
		if r.Method == "POST" && r.Path == "/redfish/v1/SessionService/Sessions" {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d sessions created for one BMC, want 1", created)
	}
	if n := sim.PeakConcurrency(); n != 1 {
		t.Errorf("the BMC answered %d requests at once, want one at a time", n)
	}
	if err := pool.Close(ctx); err != nil || sim.Sessions() != 0 {
		t.Errorf("close: %v, %d sessions left", err, sim.Sessions())
	}
}

func TestPasswordSources(t *testing.T) {
	ctx := context.Background()
	pool := bmcpool.New(bmcpool.Options{})
	base := bmcpool.Spec{Type: "ipmi", Address: "10.0.0.1", Username: "admin"}

	s := base
	s.PasswordEnv = "BMCTL_POOL_TEST_UNSET"
	if _, err := pool.Get(ctx, s); err == nil || !strings.Contains(err.Error(), "environment variable BMCTL_POOL_TEST_UNSET is not set") {
		t.Errorf("unset variable: %v", err)
	}
	s = base
	s.PasswordFile = filepath.Join(t.TempDir(), "missing")
	if _, err := pool.Get(ctx, s); err == nil || !strings.Contains(err.Error(), "BMC password: open ") {
		t.Errorf("missing file: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, []byte("\n"), 0o600)
	s.PasswordFile = empty
	if _, err := pool.Get(ctx, s); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Errorf("empty file: %v", err)
	}
	t.Setenv("BMCTL_POOL_TEST_PW", "x")
	s = base
	s.PasswordEnv = "BMCTL_POOL_TEST_PW"
	c1, err := pool.Get(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if c2, _ := pool.Get(ctx, s); c2 != c1 {
		t.Error("a second Get opened another client for the same BMC")
	}
	t.Setenv("BMCTL_POOL_TEST_PW", "rotated")
	if c3, _ := pool.Get(ctx, s); c3 == c1 {
		t.Error("a rotated password kept the old client")
	}
	r := bmcpool.Spec{Type: "redfish", Address: "https://10.0.0.1", Username: "admin", PasswordEnv: "BMCTL_POOL_TEST_PW", CAFile: empty}
	if _, err := pool.Get(ctx, r); err == nil || !strings.Contains(err.Error(), "holds no PEM certificate") {
		t.Errorf("bad CA: %v", err)
	}
}

func TestInsecureWarnsOncePerBMC(t *testing.T) {
	var logs strings.Builder
	pool := bmcpool.New(bmcpool.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Setenv("BMCTL_POOL_TEST_PW", "x")
	yes := true
	for _, system := range []string{"/redfish/v1/Systems/1", "/redfish/v1/Systems/2", "/redfish/v1/Systems/1"} {
		s := bmcpool.Spec{Type: "redfish", Address: "https://10.0.0.9", Username: "admin", PasswordEnv: "BMCTL_POOL_TEST_PW", Insecure: &yes, System: system}
		if _, err := pool.Get(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "TLS certificate verification is off"); n != 1 || !strings.Contains(logs.String(), "bmc=https://10.0.0.9") {
		t.Errorf("%d warnings, want one naming the BMC:\n%s", n, logs.String())
	}
}
