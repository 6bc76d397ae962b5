package redfish_test

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/redfishsim"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/bmc"
	"github.com/bmctl/bmctl/pkg/bmc/redfish"
	"github.com/bmctl/bmctl/pkg/devca"
)

const (
	user     = "admin"
	password = "s3cret-Pa55word"
)

// Delays long enough that a poll every 50ms sees each step even on a busy
// machine under -race: power stays Off for 2s and SSH returns 1s after On.
var delays = redfishsim.Delays{Off: 100 * time.Millisecond, Cycle: 2 * time.Second, On: 200 * time.Millisecond, Boot: time.Second}

// Bounds generous enough for a loaded machine; the failing cases shorten
// the step that must fail.
var bounds = bmc.Bounds{Down: 30 * time.Second, On: 30 * time.Second, SSH: 30 * time.Second, Poll: 50 * time.Millisecond}

type world struct {
	t   *testing.T
	sim *redfishsim.BMC
	ssh []*sshsim.Machine
	ca  *devca.CA
}

// newWorld starts a simulated BMC whose systems each power a real SSH
// server.
func newWorld(t *testing.T, systems int, faults redfishsim.Faults) *world {
	t.Helper()
	ca, err := devca.Ensure(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, ca: ca}
	var machines []redfishsim.Machine
	for range systems {
		m, err := sshsim.New(sshsim.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		w.ssh = append(w.ssh, m)
		machines = append(machines, m)
	}
	w.sim, err = redfishsim.New(redfishsim.Config{
		Username: user, Password: password, Certificate: cert,
		Machines: machines, Delays: delays, Faults: faults,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.sim.Close() })
	return w
}

func (w *world) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(w.ca.Cert)
	return p
}

func (w *world) client(mod func(*redfish.Config)) *redfish.Client {
	w.t.Helper()
	cfg := redfish.Config{Address: w.sim.URL(), Username: user, Password: password, RootCAs: w.pool(), RequestTimeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := redfish.New(cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func steps(r bmc.Report) []string {
	var s []string
	for _, st := range r.Steps {
		s = append(s, st.What)
	}
	return s
}

func countRequests(sim *redfishsim.BMC, method, path string) int {
	n := 0
	for _, r := range sim.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

func TestRebootUsesForceRestartAndSeesEveryStep(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{})
	c := w.client(nil)
	var progress []string
	b := bounds
	b.Progress = func(s string) { progress = append(progress, s) }
	rep, err := bmc.Reboot(ctx(t), c, w.ssh[0].Addr(), b)
	if err != nil {
		t.Fatal(err)
	}
	prefix := "redfish ForceRestart at " + w.sim.URL()
	if len(progress) != 3 || progress[0] != prefix+"; waiting for Off or SSH going away" ||
		!strings.HasPrefix(progress[1], prefix+": Off after ") || !strings.HasSuffix(progress[1], "; waiting for On") ||
		!strings.Contains(progress[2], ", On after ") || !strings.HasSuffix(progress[2], "; waiting for SSH") {
		t.Errorf("progress %q", progress)
	}
	if got := w.sim.Resets(); !slices.Equal(got, []string{"ForceRestart"}) {
		t.Errorf("resets %v, want one ForceRestart", got)
	}
	if got := steps(rep); !slices.Equal(got, []string{"Off", "On", "SSH"}) {
		t.Errorf("steps %v, want Off, On, SSH", got)
	}
	if w.ssh[0].Boots() != 2 || !w.ssh[0].PoweredOn() {
		t.Errorf("machine booted %d times, on=%v; want it power-cycled and on", w.ssh[0].Boots(), w.ssh[0].PoweredOn())
	}
	s := rep.String()
	if !strings.HasPrefix(s, "redfish ForceRestart at "+w.sim.URL()+": Off after ") || !strings.Contains(s, ", On after ") || !strings.Contains(s, ", SSH after ") {
		t.Errorf("report %q", s)
	}
	// One session for every request of the reboot, deleted on Close.
	if n := countRequests(w.sim, "POST", "/redfish/v1/SessionService/Sessions"); n != 1 {
		t.Errorf("%d sessions created, want 1 reused", n)
	}
	for _, r := range w.sim.Requests() {
		if r.Auth == "basic" || r.Auth == "bad" {
			t.Errorf("request %s %s used %s auth with a session open", r.Method, r.Path, r.Auth)
		}
	}
	if err := c.Close(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if n := w.sim.Sessions(); n != 0 {
		t.Errorf("%d sessions left open after Close", n)
	}
}

func TestRebootWithOnlySomeResetTypes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		allowed []string
		want    []string
		action  string
	}{
		{"power cycle", []string{"On", "ForceOff", "PowerCycle"}, []string{"PowerCycle"}, "PowerCycle"},
		{"off then on", []string{"ForceOff", "On", "Nmi"}, []string{"ForceOff", "On"}, "ForceOff+On"},
		{"off then force on", []string{"ForceOff", "ForceOn"}, []string{"ForceOff", "ForceOn"}, "ForceOff+On"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 1, redfishsim.Faults{ResetTypes: tc.allowed})
			st, err := w.client(nil).Status(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := resetNames(st.Resets); !slices.Equal(got, tc.allowed) {
				t.Errorf("allowed %v, want %v", got, tc.allowed)
			}
			rep, err := bmc.Reboot(ctx(t), w.client(nil), w.ssh[0].Addr(), bounds)
			if err != nil {
				t.Fatal(err)
			}
			if got := w.sim.Resets(); !slices.Equal(got, tc.want) {
				t.Errorf("resets %v, want %v", got, tc.want)
			}
			if rep.Action != tc.action || !slices.Equal(steps(rep), []string{"Off", "On", "SSH"}) {
				t.Errorf("report %q", rep)
			}
		})
	}
}

func TestNoUsableResetType(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{ResetTypes: []string{"Nmi", "GracefulShutdown"}})
	_, err := bmc.Reboot(ctx(t), w.client(nil), w.ssh[0].Addr(), bounds)
	if !errors.Is(err, bmc.ErrNotAllowed) || !strings.Contains(err.Error(), "allows Nmi, GracefulShutdown") {
		t.Fatalf("err %v, want ErrNotAllowed naming what the BMC allows", err)
	}
	if len(w.sim.Resets()) != 0 {
		t.Error("a reset was sent")
	}
}

func resetNames(ts []bmc.ResetType) []string {
	var s []string
	for _, t := range ts {
		s = append(s, string(t))
	}
	return s
}

func TestResetTypesOnlyThroughActionInfo(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{ActionInfoOnly: true, ResetTypes: []string{"On", "ForceOff", "PowerCycle"}})
	c := w.client(nil)
	st, err := c.Status(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := resetNames(st.Resets); !slices.Equal(got, []string{"On", "ForceOff", "PowerCycle"}) {
		t.Errorf("allowed %v, want the ActionInfo's", got)
	}
	if _, err := bmc.Reboot(ctx(t), c, w.ssh[0].Addr(), bounds); err != nil {
		t.Fatal(err)
	}
	if got := w.sim.Resets(); !slices.Equal(got, []string{"PowerCycle"}) {
		t.Errorf("resets %v, want PowerCycle", got)
	}
	if n := countRequests(w.sim, "GET", w.sim.SystemPath(0)+"/ResetActionInfo"); n != 1 {
		t.Errorf("ActionInfo read %d times, want once (cached)", n)
	}
}

func TestSeveralSystems(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 2, redfishsim.Faults{})
	_, err := w.client(nil).Status(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "has 2 systems (/redfish/v1/Systems/1, /redfish/v1/Systems/2); name the machine's one with system:") {
		t.Fatalf("err %v, want a refusal to guess naming both systems", err)
	}
	c := w.client(func(c *redfish.Config) { c.System = w.sim.SystemPath(1) })
	if _, err := bmc.Reboot(ctx(t), c, w.ssh[1].Addr(), bounds); err != nil {
		t.Fatal(err)
	}
	if w.ssh[0].Boots() != 1 || w.ssh[1].Boots() != 2 {
		t.Errorf("boots %d and %d, want only the second system rebooted", w.ssh[0].Boots(), w.ssh[1].Boots())
	}
}

func TestRedfishErrorObjectInCause(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{ResetError: true})
	_, err := bmc.Reboot(ctx(t), w.client(nil), w.ssh[0].Addr(), bounds)
	var se *bmc.StepError
	if !errors.As(err, &se) || se.Step != "ForceRestart request" {
		t.Fatalf("err %v, want the ForceRestart request step failing", err)
	}
	msg := err.Error()
	for _, want := range []string{"400 Bad Request", "A general error has occurred",
		"Unable to complete the operation because the server is in a power transition state.", "[IDRAC.2.8.SYS446]"} {
		if !strings.Contains(msg, want) {
			t.Errorf("cause %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "Successfully Completed") || strings.Contains(msg, "PropertyValueConflict") {
		t.Errorf("cause %q has a less severe message than the Critical one", msg)
	}
}

func TestSessionLimitFallsBackToBasicAuth(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{SessionLimit: true})
	c := w.client(nil)
	if _, err := bmc.Reboot(ctx(t), c, w.ssh[0].Addr(), bounds); err != nil {
		t.Fatal(err)
	}
	reqs := w.sim.Requests()
	var refused, basic int
	for _, r := range reqs {
		if r.Method == "POST" && r.Path == "/redfish/v1/SessionService/Sessions" && r.Status == 503 {
			refused++
		}
		if r.Auth == "basic" {
			basic++
		}
	}
	if refused != 1 || basic == 0 {
		t.Errorf("%d refused session requests and %d basic-auth requests; want one refusal, then basic auth", refused, basic)
	}
}

func TestNoSessionServiceUsesBasicAuth(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{NoSessions: true})
	st, err := w.client(nil).Status(ctx(t))
	if err != nil || st.Power != bmc.PowerOn {
		t.Fatalf("status %+v, %v", st, err)
	}
	if n := countRequests(w.sim, "POST", "/redfish/v1/SessionService/Sessions"); n != 0 {
		t.Errorf("%d session requests to a service without sessions", n)
	}
}

func TestBusyBMCHonoursRetryAfter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		faults redfishsim.Faults
		status int
	}{
		{"429", redfishsim.Faults{RateLimit: 2}, 429},
		{"503", redfishsim.Faults{Unavailable: 2}, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, 1, tc.faults)
			st, err := w.client(nil).Status(ctx(t))
			if err != nil || st.Power != bmc.PowerOn {
				t.Fatalf("status %+v, %v; want the busy answers waited out", st, err)
			}
			reqs := w.sim.Requests()
			if len(reqs) < 3 || reqs[0].Status != tc.status || reqs[1].Status != tc.status || reqs[2].Status != 200 {
				t.Fatalf("requests %+v, want two %d then success", reqs, tc.status)
			}
			// Retry-After: 1 means at least a second between the attempts.
			for i := 1; i <= 2; i++ {
				if gap := reqs[i].At.Sub(reqs[i-1].At); gap < time.Second {
					t.Errorf("retry %d came %s after the %d, before its Retry-After of 1s", i, gap, tc.status)
				}
			}
		})
	}
}

func TestBusyBeyondRetriesFailsWithTheAnswer(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{Unavailable: 100})
	_, err := w.client(func(c *redfish.Config) { c.Retries = 1 }).Status(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "503 Service Unavailable: The service is temporarily unavailable.") {
		t.Fatalf("err %v, want the 503 and the BMC's message", err)
	}
}

func TestBMCThatNeverComesBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{NeverComesBack: true})
	b := bounds
	b.On = 3 * time.Second
	rep, err := bmc.Reboot(ctx(t), w.client(nil), w.ssh[0].Addr(), b)
	var se *bmc.StepError
	if !errors.As(err, &se) || se.Step != "power On" {
		t.Fatalf("err %v, want the power On step failing", err)
	}
	if !slices.Equal(steps(rep), []string{"Off"}) || !strings.Contains(err.Error(), ": Off after") ||
		!strings.Contains(err.Error(), "; power On: On not seen within 3s (last power state Off)") {
		t.Errorf("err %q, want the Off step and the On bound with the last state", err)
	}
}

func TestQuietRestartSeenThroughSSH(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{QuietRestart: true})
	rep, err := bmc.Reboot(ctx(t), w.client(nil), w.ssh[0].Addr(), bounds)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(steps(rep), []string{"SSH down", "SSH"}) {
		t.Errorf("steps %v, want SSH down, SSH", steps(rep))
	}
	if w.ssh[0].Boots() != 2 {
		t.Errorf("machine booted %d times", w.ssh[0].Boots())
	}
}

func TestMachineFoundOffIsPoweredOn(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{})
	if err := w.sim.SetPowerState(0, "Off"); err != nil {
		t.Fatal(err)
	}
	rep, err := bmc.Reboot(ctx(t), w.client(nil), w.ssh[0].Addr(), bounds)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Action != "On (found Off)" || !slices.Equal(w.sim.Resets(), []string{"On"}) || !w.ssh[0].PoweredOn() {
		t.Errorf("report %q, resets %v", rep, w.sim.Resets())
	}
}

func TestWrongCredentials(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{})
	for _, faults := range []redfishsim.Faults{{}, {NoSessions: true}} {
		w.sim.SetFaults(faults)
		_, err := w.client(func(c *redfish.Config) { c.Password = "wrong-" + password }).Status(ctx(t))
		if !errors.Is(err, redfish.ErrCredentials) || !strings.Contains(err.Error(), "401") {
			t.Errorf("faults %+v: err %v, want ErrCredentials with the 401", faults, err)
		}
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("the cause %q holds the password", err)
		}
	}
}

func TestUntrustedCertificate(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{})
	other, err := devca.Ensure(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(other.Cert)
	_, err = w.client(func(c *redfish.Config) { c.RootCAs = pool }).Status(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("err %v, want the certificate refused", err)
	}
	if len(w.sim.Requests()) != 0 {
		t.Error("a request reached the BMC over an unverified connection")
	}
	if _, err := w.client(func(c *redfish.Config) { c.RootCAs = pool; c.Insecure = true }).Status(ctx(t)); err != nil {
		t.Errorf("insecure: %v", err)
	}
}

func TestSessionReauthenticatesAfter401(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{})
	c := w.client(nil)
	for range 3 {
		if _, err := c.Status(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	w.sim.ExpireSessions()
	if _, err := c.Status(ctx(t)); err != nil {
		t.Fatalf("after the BMC forgot the session: %v", err)
	}
	if n := countRequests(w.sim, "POST", "/redfish/v1/SessionService/Sessions"); n != 2 {
		t.Errorf("%d sessions created, want one, and one more after the 401", n)
	}
	if err := c.Close(ctx(t)); err != nil || w.sim.Sessions() != 0 {
		t.Errorf("close: %v, %d sessions left", err, w.sim.Sessions())
	}
}

func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{Hang: true})
	_, err := w.client(func(c *redfish.Config) { c.RequestTimeout = 200 * time.Millisecond }).Status(ctx(t))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Fatalf("err %v, want the request's timeout", err)
	}
}

func TestRebootHonoursContext(t *testing.T) {
	t.Parallel()
	w := newWorld(t, 1, redfishsim.Faults{NeverComesBack: true})
	c, cancel := context.WithCancel(ctx(t))
	go func() {
		for len(w.sim.Resets()) == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	_, err := bmc.Reboot(c, w.client(nil), w.ssh[0].Addr(), bmc.Bounds{Down: time.Hour, On: time.Hour, SSH: time.Hour, Poll: 50 * time.Millisecond})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want the cancellation", err)
	}
}
