package equinix_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/internal/metalemu"
	"github.com/bmctl/bmctl/pkg/shepherd"
	"github.com/bmctl/bmctl/pkg/shepherd/equinix"
)

const token = "test-token-b7e1"

// world is an emulated Metal API whose every exchange is checked against
// the official OpenAPI description when the test ends.
type world struct {
	emu     *metalemu.Server
	url     string
	project string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	val, err := metalemu.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	emu := metalemu.New(token)
	srv := httptest.NewServer(val.Wrap(emu.Handler()))
	t.Cleanup(func() {
		srv.Close()
		violations, checked := val.Violations()
		for _, v := range violations {
			t.Errorf("OpenAPI: %s", v)
		}
		if checked == 0 {
			t.Errorf("OpenAPI: no exchange was checked")
		}
	})
	return &world{emu: emu, url: srv.URL + metalemu.BasePath, project: emu.AddProject("fleet")}
}

// config is a provider configuration for the world, fast enough for tests.
func (w *world) config(t *testing.T) equinix.Config {
	c := equinix.DefaultConfig()
	c.Token = token
	c.ProjectID = w.project
	c.APIURL = w.url
	c.SSHPublicKey = publicKey(t)
	c.RequestsPerSecond, c.Burst = 1000, 100
	c.RetryBackoff = 10 * time.Millisecond
	c.PollInterval = time.Millisecond
	c.RebootTimeout = 10 * time.Second
	c.CallTimeout = 10 * time.Second
	return c
}

func (w *world) provider(t *testing.T, edit ...func(*equinix.Config)) *equinix.Provider {
	t.Helper()
	c := w.config(t)
	for _, e := range edit {
		e(&c)
	}
	p, err := equinix.New(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func publicKey(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
}

func count(reqs []string, prefix string) int {
	n := 0
	for _, r := range reqs {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

var small = metalemu.Reservation{Plan: "c3.small.x86", Facility: "sv15", Metro: "sv"}

func TestProvisionFromReservationsUpToLimit(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.emu.AddReservations(w.project, 3, small)
	w.emu.AddReservations(w.project, 1, metalemu.Reservation{Plan: "c3.small.x86", Facility: "sv15", Metro: "sv", Spare: true})
	w.emu.AddReservations(w.project, 2, metalemu.Reservation{Plan: "m3.large.x86", Facility: "da11", Metro: "da"})
	w.emu.AddDevice(w.project, "someone-elses-db", metalemu.Network{PublicIPv4: "203.0.113.9"})
	p := w.provider(t, func(c *equinix.Config) { c.Plan = "c3.small.x86"; c.PageSize = 2 })

	free, err := p.FreeCapacity(ctx)
	if err != nil || free != 3 {
		t.Fatalf("FreeCapacity = %d, %v; want 3 (spares and other plans do not count)", free, err)
	}
	// The shepherd's provisioning loop creates up to its limit from free capacity.
	const limit = 2
	var made []shepherd.ProviderMachine
	for len(made) < limit {
		m, err := p.CreateMachine(ctx)
		if err != nil {
			t.Fatalf("CreateMachine: %v", err)
		}
		if m.Status != shepherd.StatusProvisioning {
			t.Errorf("new machine status %q, want provisioning", m.Status)
		}
		made = append(made, m)
	}
	if free, err := p.FreeCapacity(ctx); err != nil || free != 1 {
		t.Fatalf("FreeCapacity after %d creates = %d, %v; want 1", limit, free, err)
	}

	devs := w.emu.Devices(w.project)
	if len(devs) != 3 {
		t.Fatalf("project has %d devices, want 2 created + 1 foreign", len(devs))
	}
	var keyIDs []string
	for _, d := range devs[1:] {
		if !strings.HasPrefix(d.Hostname, "bmctl-") || d.Plan != "c3.small.x86" || d.OS != "ubuntu_24_04" || d.Reservation == "" {
			t.Errorf("device %+v: want prefix bmctl-, plan c3.small.x86, ubuntu_24_04, on a reservation", d)
		}
		if len(d.SSHKeyIDs) != 1 {
			t.Fatalf("device %s has SSH keys %v, want the shepherd's", d.ID, d.SSHKeyIDs)
		}
		keyIDs = append(keyIDs, d.SSHKeyIDs...)
	}
	if keyIDs[0] != keyIDs[1] {
		t.Errorf("devices got different SSH keys %v; the key is created once", keyIDs)
	}
	if n := count(w.emu.Requests(), "POST /metal/v1/projects/"+w.project+"/ssh-keys"); n != 1 {
		t.Errorf("created the project SSH key %d times, want once", n)
	}

	ms, err := p.ListMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("ListMachines = %+v, want our 2 devices only", ms)
	}
	for _, m := range ms {
		if !slices.ContainsFunc(made, func(x shepherd.ProviderMachine) bool { return x.ID == m.ID }) {
			t.Errorf("listed %s, which we did not create", m.ID)
		}
		if m.Location != "sv/sv15" || !strings.HasPrefix(m.Address, "198.51.100.") || !strings.HasSuffix(m.Address, ":22") {
			t.Errorf("machine %+v: want location sv/sv15 and the public IPv4 on port 22", m)
		}
	}

	// Fill the last reservation, then one more is refused with the reason.
	if _, err := p.CreateMachine(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = p.CreateMachine(ctx)
	if !errors.Is(err, equinix.ErrNoCapacity) {
		t.Fatalf("CreateMachine with no free reservation: %v, want ErrNoCapacity", err)
	}
	want := "equinix: create device in project " + w.project + ": no free hardware reservation of plan c3.small.x86"
	if err.Error() != want {
		t.Errorf("error %q\nwant  %q", err, want)
	}
}

func TestListMachinesPages(t *testing.T) {
	w := newWorld(t)
	for i := range 23 {
		w.emu.AddDevice(w.project, fmt.Sprintf("bmctl-%02d", i), metalemu.Network{PublicIPv4: fmt.Sprintf("192.0.2.%d", i+1)})
	}
	w.emu.AddDevice(w.project, "web-bmctl-1", metalemu.Network{}) // matches the API's partial filter, not our prefix
	p := w.provider(t, func(c *equinix.Config) { c.PageSize = 5 })
	ms, err := p.ListMachines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 23 {
		t.Fatalf("ListMachines returned %d machines, want 23", len(ms))
	}
	seen := map[string]bool{}
	for _, m := range ms {
		if seen[m.ID] {
			t.Errorf("machine %s listed twice", m.ID)
		}
		seen[m.ID] = true
	}
	if n := count(w.emu.Requests(), "GET /metal/v1/projects/"+w.project+"/devices?"); n != 5 {
		t.Errorf("made %d list calls, want 5 pages of 5", n)
	}
}

// A device deleted while the list is paged shifts the pages; the listing
// notices and starts again rather than miss a device.
func TestListMachinesRestartsWhenTheListShifts(t *testing.T) {
	val, err := metalemu.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	emu := metalemu.New(token)
	project := emu.AddProject("fleet")
	var ids []string
	for i := range 12 {
		ids = append(ids, emu.AddDevice(project, fmt.Sprintf("bmctl-%02d", i), metalemu.Network{}))
	}
	h := val.Wrap(emu.Handler())
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("page") == "2" {
			once.Do(func() { emu.RemoveDevice(ids[0]) })
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := equinix.DefaultConfig()
	c.Token, c.ProjectID, c.APIURL, c.PageSize = token, project, srv.URL+metalemu.BasePath, 5
	p, err := equinix.New(c)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := p.ListMachines(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.ID)
	}
	if !slices.Equal(got, ids[1:]) {
		t.Errorf("listed %v\nwant the 11 left %v", got, ids[1:])
	}
	if vs, _ := val.Violations(); len(vs) > 0 {
		t.Errorf("OpenAPI: %v", vs)
	}
}

func TestStatusMapping(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-a", metalemu.Network{PublicIPv6: "2001:db8::7", Tags: []string{equinix.SSHPortTag(2222)}})
	p := w.provider(t)
	// Every state the OpenAPI description lists for a device.
	for state, want := range map[string]shepherd.ProviderStatus{
		"queued":         shepherd.StatusProvisioning,
		"provisioning":   shepherd.StatusProvisioning,
		"reinstalling":   shepherd.StatusProvisioning,
		"active":         shepherd.StatusActive,
		"powering_off":   shepherd.StatusRebooting,
		"powering_on":    shepherd.StatusRebooting,
		"failed":         shepherd.StatusFailed,
		"inactive":       shepherd.StatusInactive,
		"deprovisioning": shepherd.StatusInactive,
		"deleted":        shepherd.StatusInactive,
	} {
		w.emu.SetStates(id, state)
		m, err := p.GetMachine(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if m.Status != want {
			t.Errorf("Metal state %s: status %q, want %q", state, m.Status, want)
		}
		// No public IPv4: the IPv6 one, with the port from the device's tag.
		if m.Address != "[2001:db8::7]:2222" {
			t.Errorf("address %q, want [2001:db8::7]:2222", m.Address)
		}
	}
	if got := equinix.MapState("something_new"); got != shepherd.StatusUnknown {
		t.Errorf("unknown state maps to %q, want unknown", got)
	}
}

// A device that failed to provision is listed as failed, so the shepherd can
// leave it alone, and its reservation is not free capacity.
func TestFailedDeviceIsListedAsFailed(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.emu.AddReservations(w.project, 2, small)
	w.emu.SetProvisionStates("provisioning", "failed")
	p := w.provider(t)
	m, err := p.CreateMachine(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got shepherd.ProviderStatus
	for range 3 { // queued, provisioning, failed
		ms, err := p.ListMachines(ctx)
		if err != nil || len(ms) != 1 || ms[0].ID != m.ID {
			t.Fatalf("ListMachines = %+v, %v", ms, err)
		}
		got = ms[0].Status
	}
	if got != shepherd.StatusFailed {
		t.Errorf("status %q, want failed", got)
	}
	if free, err := p.FreeCapacity(ctx); err != nil || free != 1 {
		t.Errorf("FreeCapacity = %d, %v; want 1 (the failed device holds its reservation)", free, err)
	}
}

func TestReboot(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-r", metalemu.Network{PublicIPv4: "192.0.2.1"})
	var rebooted []string
	w.emu.OnReboot(func(d metalemu.DeviceView) { rebooted = append(rebooted, d.ID) })
	p := w.provider(t)
	if err := p.Reboot(ctx, id); err != nil {
		t.Fatal(err)
	}
	d, _ := w.emu.Device(id)
	if d.Reboots != 1 || d.State != "active" || !slices.Equal(rebooted, []string{id}) {
		t.Errorf("after Reboot: %d reboots, state %s, hook saw %v; want 1, active, [%s]", d.Reboots, d.State, rebooted, id)
	}
	// It waited through the transitions: reads after the action saw the device down and back.
	reqs := w.emu.Requests()
	action := slices.Index(reqs, "POST /metal/v1/devices/"+id+"/actions")
	if action < 0 || count(reqs[action:], "GET /metal/v1/devices/"+id) < 3 {
		t.Errorf("requests %v: want the action, then reads until the device came back", reqs)
	}
}

func TestRebootGivesUp(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-r", metalemu.Network{PublicIPv4: "192.0.2.1"})
	p := w.provider(t, func(c *equinix.Config) {
		c.RebootTimeout = 100 * time.Millisecond
		c.PollInterval = 5 * time.Millisecond
	})

	w.emu.SetRebootStates("active")
	err := p.Reboot(ctx, id)
	want := "equinix: reboot device " + id + ": Metal accepted the reboot, but the device had not gone down (still active) when the provider's reboot timeout of 100ms (--equinix-reboot-timeout) ran out"
	if err == nil || err.Error() != want {
		t.Errorf("Reboot of a device that never goes down: %v\nwant %s", err, want)
	}

	// Seeing the device down and then its next state takes two reads after
	// the action: they get seconds, not 100ms, under the race detector on a
	// loaded machine.
	p = w.provider(t, func(c *equinix.Config) {
		c.RebootTimeout = 3 * time.Second
		c.PollInterval = 5 * time.Millisecond
	})
	w.emu.SetStates(id, "active")
	w.emu.SetRebootStates("powering_off", "inactive")
	err = p.Reboot(ctx, id)
	want = "equinix: reboot device " + id + ": the device went down but had not come back (last state inactive) when the provider's reboot timeout of 3s (--equinix-reboot-timeout) ran out"
	if err == nil || err.Error() != want {
		t.Errorf("Reboot of a device that stays down: %v\nwant %s", err, want)
	}

	// The caller's bound (Recovery's reboot timeout) may end the wait
	// first, and the error names it by its cause.
	w.emu.SetStates(id, "active")
	w.emu.SetRebootStates("active")
	// Long enough for the GET and the POST before the wait even under the
	// race detector on a loaded machine (80ms left no room: a slow GET or
	// POST fails with the deadline before the wait starts), still far below
	// the provider's hour.
	short, cancel := context.WithTimeoutCause(ctx, 900*time.Millisecond, errors.New("Recovery's reboot timeout of 900ms ran out"))
	defer cancel()
	p2 := w.provider(t, func(c *equinix.Config) { c.RebootTimeout = time.Hour; c.PollInterval = 5 * time.Millisecond })
	err = p2.Reboot(short, id)
	want = "equinix: reboot device " + id + ": Metal accepted the reboot, but the device had not gone down (still active) when Recovery's reboot timeout of 900ms ran out"
	if err == nil || err.Error() != want {
		t.Errorf("Reboot under the caller's deadline: %v\nwant %s", err, want)
	}

	w.emu.SetStates(id, "active")
	w.emu.SetRebootStates("powering_off", "failed")
	err = p.Reboot(ctx, id)
	want = "equinix: reboot device " + id + ": the device went to state failed while rebooting"
	if err == nil || err.Error() != want {
		t.Errorf("Reboot of a device that fails: %v\nwant %s", err, want)
	}
}

func TestRateLimitedWithRetryAfter(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	p := w.provider(t)

	// The API asks for a second's pause once: the call waits and succeeds.
	w.emu.Fail(metalemu.Fault{Method: "GET", Path: "/devices/", Status: 429, RetryAfter: "1", Message: "Rate limit exceeded"})
	start := time.Now()
	if _, err := p.GetMachine(ctx, id); err != nil {
		t.Fatalf("GetMachine after one 429: %v", err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("retried after %v; Retry-After asked for 1s", waited)
	}
	if n := count(w.emu.Requests(), "GET /metal/v1/devices/"+id); n != 2 {
		t.Errorf("%d GETs, want the refused one and its retry", n)
	}

	// A pause longer than bmctl will wait ends the call with the reason.
	w.emu.Fail(metalemu.Fault{Method: "GET", Path: "/devices/", Status: 429, RetryAfter: "3600", Message: "Rate limit exceeded"})
	_, err := p.GetMachine(ctx, id)
	want := "equinix: get device " + id + ": GET /devices/" + id + ": 429 Too Many Requests: Rate limit exceeded; the API is rate limiting bmctl and asks to retry after 3600s"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
}

// The client limits its own rate, whatever the API would allow.
func TestClientSideRateLimit(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	p := w.provider(t, func(c *equinix.Config) { c.RequestsPerSecond, c.Burst = 50, 1 })
	start := time.Now()
	for range 11 {
		if _, err := p.GetMachine(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	// 11 calls at 50/s with no burst cannot take less than 10 intervals.
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("11 calls took %v; at 50/s they take at least 200ms", took)
	}
}

func TestServerErrors(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	w.emu.AddReservations(w.project, 1, small)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	p := w.provider(t, func(c *equinix.Config) { c.Retries = 2 })

	// Reads are retried with backoff.
	w.emu.Fail(metalemu.Fault{Method: "GET", Path: "/devices/", Status: 500, Times: 2})
	if _, err := p.GetMachine(ctx, id); err != nil {
		t.Fatalf("GetMachine after two 500s: %v", err)
	}
	// ... up to a bound, and then the error says how hard we tried.
	w.emu.Fail(metalemu.Fault{Method: "GET", Path: "/devices/", Status: 502, Message: "upstream unavailable", Times: 3})
	_, err := p.GetMachine(ctx, id)
	want := "equinix: get device " + id + ": GET /devices/" + id + ": 502 Bad Gateway: upstream unavailable (after 3 attempts)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}

	// A create that failed with a 500 may have happened: it is not repeated.
	w.emu.Fail(metalemu.Fault{Method: "POST", Path: "/projects/" + w.project + "/devices", Status: 500, Message: "Internal server error"})
	_, err = p.CreateMachine(ctx)
	if err == nil || !strings.Contains(err.Error(), ": POST /projects/"+w.project+"/devices: 500 Internal Server Error: Internal server error") ||
		!strings.HasPrefix(err.Error(), "equinix: create device on hardware reservation ") {
		t.Errorf("CreateMachine on a 500: %v", err)
	}
	if n := count(w.emu.Requests(), "POST /metal/v1/projects/"+w.project+"/devices"); n != 1 {
		t.Errorf("create was sent %d times, want once", n)
	}
}

// A call that gets no answer ends at CallTimeout with the reason.
func TestCallTimeout(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	release := make(chan struct{})
	defer close(release)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer hang.Close()
	p := w.provider(t, func(c *equinix.Config) {
		c.APIURL = hang.URL + metalemu.BasePath
		c.CallTimeout = 50 * time.Millisecond
	})
	_, err := p.GetMachine(context.Background(), id)
	want := "equinix: get device " + id + ": GET /devices/" + id + ": gave up waiting: the call timeout of 50ms ran out"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	// The same call against the answering API, so the world has an exchange to check.
	if _, err := w.provider(t).GetMachine(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

func TestVanishedDevice(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	p := w.provider(t)
	w.emu.RemoveDevice(id)

	_, err := p.GetMachine(ctx, id)
	if !errors.Is(err, shepherd.ErrNotFound) {
		t.Errorf("GetMachine of a vanished device: %v, want ErrNotFound", err)
	}
	want := "equinix: get device " + id + ": GET /devices/" + id + ": 404 Not Found: Not found"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	err = p.Reboot(ctx, id)
	want = "equinix: reboot device " + id + ": GET /devices/" + id + ": 404 Not Found: Not found; the reboot was not sent"
	if !errors.Is(err, shepherd.ErrNotFound) || err.Error() != want {
		t.Errorf("Reboot of a vanished device: %v\nwant %s", err, want)
	}
	if _, err := p.GetMachine(ctx, "bmctl-x"); !errors.Is(err, shepherd.ErrNotFound) {
		t.Errorf("GetMachine of a non-UUID: %v, want ErrNotFound", err)
	}
}

func TestInvalidToken(t *testing.T) {
	w := newWorld(t)
	p := w.provider(t, func(c *equinix.Config) { c.Token = "expired" })
	_, err := p.Check(context.Background())
	if !errors.Is(err, equinix.ErrUnauthorized) {
		t.Errorf("Check with a bad token: %v, want ErrUnauthorized", err)
	}
	want := "equinix: get project " + w.project + ": GET /projects/" + w.project + ": 401 Unauthorized: Invalid authentication token; check METAL_AUTH_TOKEN"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	if strings.Contains(err.Error(), "expired") {
		t.Errorf("error shows the token: %v", err)
	}
}

func TestUnknownProject(t *testing.T) {
	w := newWorld(t)
	p := w.provider(t, func(c *equinix.Config) { c.ProjectID = "0b9a3c52-1d1e-4f0e-9a57-6a4f1c1b2d3e" })
	_, err := p.FreeCapacity(context.Background())
	want := "equinix: list hardware reservations of project 0b9a3c52-1d1e-4f0e-9a57-6a4f1c1b2d3e: " +
		"GET " + w.url + "/projects/0b9a3c52-1d1e-4f0e-9a57-6a4f1c1b2d3e/hardware-reservations?page=1&per_page=100&provisionable=only: " +
		"404 Not Found: Not found; Metal has no such project, or the token may not see it: check the project id (--equinix-project)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
}

func TestSSHKeyLabelHeldByAnotherKey(t *testing.T) {
	w := newWorld(t)
	w.emu.AddReservations(w.project, 1, small)
	w.emu.AddSSHKey(w.project, "bmctl-shepherd", publicKey(t))
	p := w.provider(t)
	_, err := p.CreateMachine(context.Background())
	want := "equinix: project " + w.project + " has an SSH key labelled \"bmctl-shepherd\" that is not the shepherd's key; delete it or choose another label (--equinix-ssh-key-label)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	if len(w.emu.Devices(w.project)) != 0 {
		t.Errorf("a device was created without the shepherd's key")
	}
}

func TestExistingSSHKeyIsReused(t *testing.T) {
	w := newWorld(t)
	w.emu.AddReservations(w.project, 1, small)
	c := w.config(t)
	keyID := w.emu.AddSSHKey(w.project, "bmctl-shepherd", c.SSHPublicKey+" shepherd@host")
	p, err := equinix.New(c)
	if err != nil {
		t.Fatal(err)
	}
	m, err := p.CreateMachine(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	d, _ := w.emu.Device(m.ID)
	if !slices.Equal(d.SSHKeyIDs, []string{keyID}) {
		t.Errorf("device keys %v, want the existing key %s", d.SSHKeyIDs, keyID)
	}
}

func TestCheck(t *testing.T) {
	w := newWorld(t)
	w.emu.AddReservations(w.project, 2, small)
	w.emu.AddDevice(w.project, "bmctl-a", metalemu.Network{})
	info, err := w.provider(t).Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "fleet" || info.Devices != 1 || len(info.Free) != 2 || info.Free[0].Location() != "sv/sv15" || info.Free[0].Plan != "c3.small.x86" {
		t.Errorf("Check = %+v", info)
	}
}

func TestConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c := equinix.ConfigFromEnv(env(map[string]string{"PACKET_AUTH_TOKEN": "old", "METAL_PROJECT_ID": "3a0b8b4e-9d6e-4c1e-a0a6-2f1d6b0e9f11"}))
	if c.Token != "old" || c.ProjectID != "3a0b8b4e-9d6e-4c1e-a0a6-2f1d6b0e9f11" || c.Validate() != nil {
		t.Errorf("packngo's PACKET_AUTH_TOKEN: %+v, %v", c, c.Validate())
	}
	c = equinix.ConfigFromEnv(env(map[string]string{"PACKET_AUTH_TOKEN": "old", "METAL_AUTH_TOKEN": "new"}))
	if c.Token != "new" {
		t.Errorf("METAL_AUTH_TOKEN should win, got %q", c.Token)
	}
	_, err := equinix.New(equinix.ConfigFromEnv(env(nil)))
	want := "no Metal API token: export METAL_AUTH_TOKEN (or PACKET_AUTH_TOKEN)\nno Metal project: pass --equinix-project or export METAL_PROJECT_ID"
	if err == nil || err.Error() != want {
		t.Errorf("New without token and project: %v\nwant %s", err, want)
	}
	c = equinix.ConfigFromEnv(env(map[string]string{"METAL_AUTH_TOKEN": "t", "METAL_PROJECT_ID": "fleet"}))
	if err := c.Validate(); err == nil || err.Error() != `Metal project "fleet" is not a UUID` {
		t.Errorf("project that is no UUID: %v", err)
	}
}
