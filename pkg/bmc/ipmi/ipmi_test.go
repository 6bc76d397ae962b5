package ipmi_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/ipmisim"
	"github.com/bmctl/bmctl/internal/sshsim"
	"github.com/bmctl/bmctl/pkg/bmc"
	"github.com/bmctl/bmctl/pkg/bmc/ipmi"
)

// IPMI v2.0 passwords are at most 20 bytes.
const user, password = "admin", "ipmi-Pa55-test-91"

var bounds = bmc.Bounds{Down: 30 * time.Second, On: 30 * time.Second, SSH: 30 * time.Second, Poll: 50 * time.Millisecond}

func start(t *testing.T) (*ipmisim.BMC, *sshsim.Machine) {
	t.Helper()
	m, err := sshsim.New(sshsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	sim, err := ipmisim.New(t.TempDir(), ipmisim.Config{Username: user, Password: password, Machine: m, Boot: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(sim.Log())
		}
		sim.Close()
	})
	return sim, m
}

func client(t *testing.T, addr, pw string) *ipmi.Client {
	c, err := ipmi.New(ipmi.Config{Address: addr, Username: user, Password: pw, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// status waits for ipmi_sim to answer (it takes a moment to start).
func status(t *testing.T, c *ipmi.Client) bmc.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.Status(ctx(t))
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("ipmi_sim never answered: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPowerCycleSeenInSimulator(t *testing.T) {
	t.Parallel()
	sim, m := start(t)
	c := client(t, sim.Addr(), password)
	if st := status(t, c); st.Power != bmc.PowerOn {
		t.Fatalf("power %q, want On", st.Power)
	}
	rep, err := bmc.Reboot(ctx(t), c, m.Addr(), bounds)
	if err != nil {
		t.Fatal(err)
	}
	if got := sim.PowerHistory(); !slices.Equal(got, []string{"on", "off", "on"}) {
		t.Errorf("simulator's power %v, want on, off, on", got)
	}
	if rep.Action != "PowerCycle" || !strings.HasPrefix(rep.String(), "ipmi PowerCycle at "+sim.Addr()+": ") || !strings.HasSuffix(steps(rep), "SSH") {
		t.Errorf("report %q", rep)
	}
	if m.Boots() != 2 || !m.PoweredOn() {
		t.Errorf("machine booted %d times", m.Boots())
	}
}

func steps(r bmc.Report) string {
	var s []string
	for _, st := range r.Steps {
		s = append(s, st.What)
	}
	return strings.Join(s, ",")
}

func TestMachineFoundOffIsPoweredOn(t *testing.T) {
	t.Parallel()
	sim, m := start(t)
	c := client(t, sim.Addr(), password)
	status(t, c)
	if err := sim.SetPower(false); err != nil {
		t.Fatal(err)
	}
	for status(t, c).Power != bmc.PowerOff {
		time.Sleep(20 * time.Millisecond)
	}
	rep, err := bmc.Reboot(ctx(t), c, m.Addr(), bounds)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Action != "On (found Off)" || steps(rep) != "On,SSH" {
		t.Errorf("report %q, want On then SSH", rep)
	}
	if got := sim.PowerHistory(); !slices.Equal(got, []string{"on", "off", "on"}) {
		t.Errorf("simulator's power %v", got)
	}
}

func TestWrongPassword(t *testing.T) {
	t.Parallel()
	sim, _ := start(t)
	status(t, client(t, sim.Addr(), password))
	_, err := client(t, sim.Addr(), "wrong-"+password[:8]).Status(ctx(t))
	if err == nil {
		t.Fatal("a wrong password was accepted")
	}
	msg := err.Error()
	for _, want := range []string{"ipmitool chassis power status at " + sim.Addr(), "cipher suite 3: exit status 1", "; cipher suite 17: exit status 1", "Unable to establish IPMI v2 / RMCP+ session"} {
		if !strings.Contains(msg, want) {
			t.Errorf("cause %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, password[:8]) {
		t.Errorf("cause %q holds the password", msg)
	}
}

func TestUnreachableBMC(t *testing.T) {
	t.Parallel()
	// A UDP port nobody listens on.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	_, err = client(t, addr, password).Status(ctx(t))
	if err == nil || !strings.Contains(err.Error(), "ipmitool chassis power status at "+addr) || !strings.Contains(err.Error(), "Unable to establish") {
		t.Fatalf("err %v, want ipmitool's failure to reach %s", err, addr)
	}
}

func TestHonoursContext(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	c, cancel := context.WithCancel(ctx(t))
	time.AfterFunc(300*time.Millisecond, cancel)
	_, err = client(t, addr, password).Status(c)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want the cancellation", err)
	}
}

func TestBadAddress(t *testing.T) {
	for _, a := range []string{"", "host:0", "host:x", "a b"} {
		if _, err := ipmi.New(ipmi.Config{Address: a, Username: user}); err == nil {
			t.Errorf("address %q accepted", a)
		}
	}
	if _, err := ipmi.New(ipmi.Config{Address: "10.0.0.1"}); err == nil || !strings.Contains(err.Error(), "no username") {
		t.Errorf("no username: %v", err)
	}
	c, err := ipmi.New(ipmi.Config{Address: "10.0.0.1", Username: user})
	if err != nil || c.Address() != "10.0.0.1" {
		t.Errorf("%v %v", c, err)
	}
	if err := c.Reset(context.Background(), "Nmi"); err == nil || !strings.Contains(err.Error(), fmt.Sprint(bmc.ErrNotAllowed)) {
		t.Errorf("Nmi: %v", err)
	}
}
