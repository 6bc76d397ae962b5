package equinix_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/metalemu"
	"github.com/bmctl/bmctl/pkg/shepherd"
	"github.com/bmctl/bmctl/pkg/shepherd/equinix"
)

// Answers the description allows but bmctl may not expect, each with the
// exact message a user sees.

// A value of a field bmctl does not use never fails a listing; a value of a
// field it uses that it cannot read fails that device only.
func TestOddFieldFailsOnlyItsDevice(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	odd := w.emu.AddDevice(w.project, "bmctl-odd", metalemu.Network{PublicIPv4: "192.0.2.1"})
	bad := w.emu.AddDevice(w.project, "bmctl-bad", metalemu.Network{PublicIPv4: "192.0.2.2"})
	fine := w.emu.AddDevice(w.project, "bmctl-fine", metalemu.Network{PublicIPv4: "192.0.2.3"})
	// Beyond float32, as "format: float" allows: packngo failed every listing on it.
	w.emu.SetDeviceField(odd, "provisioning_percentage", 1e39)
	// An integer as the description allows, but no int: the public IPv4 entry.
	w.emu.SetDeviceField(bad, "ip_addresses.1.address_family", 1e20)
	hr := w.emu.AddReservations(w.project, 1, small)[0]
	w.emu.SetReservationField(hr, "custom_rate", 1e39)
	p := w.provider(t)

	ms, err := p.ListMachines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]shepherd.ProviderMachine{}
	for _, m := range ms {
		byID[m.ID] = m
	}
	if len(ms) != 3 || byID[odd].Address != "192.0.2.1:22" || byID[fine].Address != "192.0.2.3:22" || byID[odd].Problem != "" {
		t.Errorf("ListMachines = %+v; want all three, the odd one and the fine one readable", ms)
	}
	wantBad := "device " + bad + ": field ip_addresses.address_family: number 100000000000000000000 is out of range for int; bmctl leaves it alone until Metal answers a value it can use"
	if got := byID[bad]; got.Problem != wantBad || got.Status != shepherd.StatusUnknown || got.Address != "" {
		t.Errorf("unreadable device listed as %+v\nwant problem %s", got, wantBad)
	}

	if m, err := p.GetMachine(ctx, odd); err != nil || m.Address != "192.0.2.1:22" {
		t.Errorf("GetMachine of the device with an odd unused field = %+v, %v", m, err)
	}
	_, err = p.GetMachine(ctx, bad)
	want := "equinix: get device " + bad + ": GET /devices/" + bad + ": " + wantBad
	if err == nil || err.Error() != want {
		t.Errorf("GetMachine of the unreadable device: %v\nwant %s", err, want)
	}
	if n, err := p.FreeCapacity(ctx); err != nil || n != 1 {
		t.Errorf("FreeCapacity with an odd custom_rate = %d, %v; want 1", n, err)
	}

	info, err := p.Check(ctx)
	if err != nil || info.Devices != 3 || len(info.Free) != 1 || len(info.Problems) != 1 || info.Problems[0] != wantBad {
		t.Errorf("Check = %+v, %v; want 3 devices, 1 free, the one problem", info, err)
	}
}

// A device whose address is no IP address is unreadable, not reachable at
// nonsense.
func TestDeviceWithoutUsableAddress(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	w.emu.SetDeviceField(id, "ip_addresses.1.address", "somewhere")
	_, err := w.provider(t).GetMachine(context.Background(), id)
	want := "equinix: get device " + id + ": GET /devices/" + id + ": device " + id +
		`: field ip_addresses[1].address: "somewhere" is not an IP address; bmctl leaves it alone until Metal answers a value it can use`
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
}

// Paging metadata that cannot be true is reported as what it is, at once,
// not as a list that changed while being paged.
func TestInconsistentPaging(t *testing.T) {
	for _, c := range []struct {
		name string
		edit func(*metalemu.ListMeta)
		page int // the page whose answer is reported
		want string
	}{
		{"total 0 with items", func(m *metalemu.ListMeta) { m.Total = 0 }, 1, "meta.total is 0 but page 1 has 5 item(s)"},
		{"negative total", func(m *metalemu.ListMeta) { m.Total = -12 }, 1, "meta.total is -12"},
		{"last_page of millions", func(m *metalemu.ListMeta) { m.LastPage = 4_000_000 }, 1, "meta.last_page is 4000000, but meta.total 12 at 5 a page makes 3 page(s)"},
		{"last_page 0", func(m *metalemu.ListMeta) { m.LastPage = 0 }, 1, "meta.last_page is 0"},
		// As Prism answers in example mode: every number 0, one item.
		{"all zero", func(m *metalemu.ListMeta) { m.Total, m.CurrentPage, m.LastPage = 0, 0, 0 }, 1,
			"meta.total is 0 but page 1 has 5 item(s); meta.last_page is 0; meta.current_page is 0 on page 1"},
		{"current_page wrong", func(m *metalemu.ListMeta) {
			if m.CurrentPage == 2 {
				m.CurrentPage = 1
			}
		}, 2, "meta.current_page is 1 on page 2"},
		{"total too small", func(m *metalemu.ListMeta) { m.Total, m.LastPage = 7, 2 }, 2, "page 2, the last, has 5 item(s), but meta.total 7 says 2"},
		{"total too large for one page", func(m *metalemu.ListMeta) { m.LastPage = 1 }, 1, "meta.last_page is 1, but meta.total 12 at 5 a page makes 3 page(s)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t)
			for i := range 12 {
				w.emu.AddDevice(w.project, fmt.Sprintf("bmctl-%02d", i), metalemu.Network{})
			}
			w.emu.EditListMeta(c.edit)
			_, err := w.provider(t, func(cfg *equinix.Config) { cfg.PageSize = 5 }).ListMachines(context.Background())
			want := fmt.Sprintf("equinix: list devices of project %s: GET /projects/%s/devices?hostname=bmctl-&include=facility&page=%d&per_page=5: inconsistent answer: %s",
				w.project, w.project, c.page, c.want)
			if !errors.Is(err, equinix.ErrInconsistent) || err.Error() != want {
				t.Errorf("error %v\nwant  %s", err, want)
			}
		})
	}
}

// Answers that are unexpected but true page fine: no meta at all (short
// page last), and pages smaller than asked for.
func TestPagingWithoutMetaOrWithSmallerPages(t *testing.T) {
	w := newWorld(t)
	for i := range 12 {
		w.emu.AddDevice(w.project, fmt.Sprintf("bmctl-%02d", i), metalemu.Network{})
	}
	p := w.provider(t, func(cfg *equinix.Config) { cfg.PageSize = 5 })
	w.emu.EditListMeta(func(m *metalemu.ListMeta) { m.Omit = true })
	if ms, err := p.ListMachines(context.Background()); err != nil || len(ms) != 12 {
		t.Errorf("without meta: %d machines, %v; want 12", len(ms), err)
	}
	w.emu.EditListMeta(nil)
	w.emu.SetMaxPerPage(3)
	if ms, err := p.ListMachines(context.Background()); err != nil || len(ms) != 12 {
		t.Errorf("pages of 3 when 5 were asked: %d machines, %v; want 12", len(ms), err)
	}
	// An empty list said to have no pages at all.
	w.emu.EditListMeta(func(m *metalemu.ListMeta) {
		if m.Total == 0 {
			m.LastPage = 0
		}
	})
	if n, err := p.FreeCapacity(context.Background()); err != nil || n != 0 {
		t.Errorf("no reservations, last_page 0: %d, %v; want 0, no error", n, err)
	}
}

// A listing has a deadline of its own, whatever each call's: a page that
// hangs ends it, and the error says which deadline it was.
func TestListingDeadline(t *testing.T) {
	w := newWorld(t)
	w.emu.AddDevice(w.project, "bmctl-a", metalemu.Network{})
	w.emu.Fail(metalemu.Fault{Method: "GET", Path: "/projects/" + w.project + "/devices", Hang: true})
	p := w.provider(t, func(c *equinix.Config) { c.CallTimeout, c.ListTimeout = time.Hour, 300*time.Millisecond })
	_, err := p.ListMachines(context.Background())
	want := "equinix: list devices of project " + w.project + ": GET /projects/" + w.project +
		"/devices?hostname=bmctl-&include=facility&page=1&per_page=100: gave up waiting: the listing timeout of 300ms ran out"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	// The hang was one request: the next listing works (with time to spare
	// on a loaded machine).
	if ms, err := w.provider(t).ListMachines(context.Background()); err != nil || len(ms) != 1 {
		t.Errorf("ListMachines after the hang = %v, %v", ms, err)
	}
}

// A create answered with a device that existed before is no new machine:
// it is reported once, as an inconsistency, and its reservation is set
// aside so the next interval does not create again.
func TestCreateAnsweredWithExistingDevice(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	old := w.emu.AddDevice(w.project, "bmctl-old", metalemu.Network{PublicIPv4: "192.0.2.1"})
	hrs := w.emu.AddReservations(w.project, 2, small)
	p := w.provider(t)
	if _, err := p.ListMachines(ctx); err != nil {
		t.Fatal(err)
	}
	w.emu.AnswerCreatesWith(old)
	_, err := p.CreateMachine(ctx)
	want := "equinix: create device on hardware reservation " + hrs[0] + ": POST /projects/" + w.project + "/devices: inconsistent answer: " +
		"Metal answered with device " + old + " (bmctl-old), which existed before, not a new device bmctl-" + hrs[0][:8] +
		"; not counted as created, and the reservation is set aside until bmctl restarts"
	if !errors.Is(err, equinix.ErrInconsistent) || err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	if n, err := p.FreeCapacity(ctx); err != nil || n != 1 {
		t.Errorf("FreeCapacity after the inconsistent create = %d, %v; want 1, the reservation set aside", n, err)
	}
	// Another device's answer, named otherwise, is caught without a listing.
	other := w.emu.AddDevice(w.project, "web-1", metalemu.Network{})
	w.emu.AnswerCreatesWith(other)
	_, err = p.CreateMachine(ctx)
	want = "equinix: create device on hardware reservation " + hrs[1] + ": POST /projects/" + w.project + "/devices: inconsistent answer: " +
		"Metal answered with device " + other + ` named "web-1", not "bmctl-` + hrs[1][:8] + `" as asked` +
		"; not counted as created, and the reservation is set aside until bmctl restarts"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	_, err = p.CreateMachine(ctx)
	if !errors.Is(err, equinix.ErrNoCapacity) {
		t.Errorf("a third create: %v, want ErrNoCapacity (both reservations set aside)", err)
	}
	if n := count(w.emu.Requests(), "POST /metal/v1/projects/"+w.project+"/devices"); n != 2 {
		t.Errorf("%d creates sent, want 2", n)
	}
}

// A read answered with another device is refused, and a reboot is not
// sent on it.
func TestReadAnsweredWithAnotherDevice(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	a := w.emu.AddDevice(w.project, "bmctl-a", metalemu.Network{PublicIPv4: "192.0.2.1"})
	b := w.emu.AddDevice(w.project, "bmctl-b", metalemu.Network{PublicIPv4: "192.0.2.2"})
	w.emu.AnswerReadsWith(a, b)
	p := w.provider(t)
	_, err := p.GetMachine(ctx, a)
	want := "equinix: get device " + a + ": GET /devices/" + a + ": inconsistent answer: Metal answered with device " + b + " (bmctl-b), not the one asked for"
	if !errors.Is(err, equinix.ErrInconsistent) || errors.Is(err, shepherd.ErrNotFound) || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	err = p.Reboot(ctx, a)
	want = "equinix: reboot device " + a + ": GET /devices/" + a + ": inconsistent answer: Metal answered with device " + b + " (bmctl-b), not the one asked for; the reboot was not sent"
	if err == nil || err.Error() != want {
		t.Errorf("Reboot: %v\nwant %s", err, want)
	}
	for _, id := range []string{a, b} {
		if d, _ := w.emu.Device(id); d.Reboots != 0 {
			t.Errorf("device %s was rebooted", id)
		}
	}
}

// A device that a reboot cannot help is not rebooted.
func TestRebootRefusesDevicesNotUp(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	p := w.provider(t)
	for state, why := range map[string]string{
		"queued":         "is queued for provisioning",
		"provisioning":   "is still provisioning",
		"reinstalling":   "is being reinstalled",
		"deprovisioning": "is being deprovisioned",
		"failed":         "failed to provision",
	} {
		w.emu.SetStates(id, state)
		err := p.Reboot(context.Background(), id)
		want := "equinix: reboot device " + id + ": not rebooting: the device " + why + " (state " + state + "); a reboot makes no sense until it is active"
		if err == nil || err.Error() != want {
			t.Errorf("Reboot of a %s device: %v\nwant %s", state, err, want)
		}
	}
	if d, _ := w.emu.Device(id); d.Reboots != 0 {
		t.Errorf("device rebooted %d times, want never", d.Reboots)
	}
	if n := count(w.emu.Requests(), "POST "); n != 0 {
		t.Errorf("%d POSTs sent, want none", n)
	}
}

// A deadline that ends a reboot before it is sent is named, and the error
// says the reboot was not sent.
func TestRebootDeadlineBeforeSending(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	w.emu.Fail(metalemu.Fault{Method: "GET", Path: "/devices/" + id, Hang: true})
	ctx, cancel := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, errors.New("Recovery's reboot timeout of 300ms ran out"))
	defer cancel()
	err := w.provider(t).Reboot(ctx, id)
	want := "equinix: reboot device " + id + ": GET /devices/" + id + ": gave up waiting: Recovery's reboot timeout of 300ms ran out; the reboot was not sent"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	if d, _ := w.emu.Device(id); d.Reboots != 0 {
		t.Errorf("device rebooted")
	}
	// An exchange for the world to check.
	if _, err := w.provider(t).GetMachine(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// problem+json, which gateways and mocks answer, shows its detail.
func TestProblemJSONError(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{})
	w.emu.Fail(metalemu.Fault{Method: "GET", Path: "/devices/", Status: 503, ProblemJSON: true, Message: "maintenance until 12:00 UTC"})
	p := w.provider(t, func(c *equinix.Config) { c.Retries = 0 })
	_, err := p.GetMachine(context.Background(), id)
	want := "equinix: get device " + id + ": GET /devices/" + id + ": 503 Service Unavailable: maintenance until 12:00 UTC"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
}

// A wrong base URL is blamed on the URL, with the whole URL shown, not on
// the project id; and a device is not taken for vanished because of it.
func TestWrongBaseURL(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{})
	// Not validated: the paths are wrong by design.
	srv := httptest.NewServer(w.emu.Handler())
	defer srv.Close()
	p := w.provider(t, func(c *equinix.Config) { c.APIURL = srv.URL }) // without /metal/v1
	_, err := p.Check(context.Background())
	want := "equinix: get project " + w.project + ": GET " + srv.URL + "/projects/" + w.project + ": 404 Not Found: no API path /projects/" + w.project +
		"; the answer is not the Metal API's (application/problem+json); check the API URL " + srv.URL + "/ (--equinix-api-url)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	_, err = p.GetMachine(context.Background(), id)
	if err == nil || errors.Is(err, shepherd.ErrNotFound) || !strings.Contains(err.Error(), "check the API URL") {
		t.Errorf("GetMachine at a wrong base URL: %v; want no ErrNotFound, the URL blamed", err)
	}
	// The right URL, for the world's validator to check an exchange.
	if _, err := w.provider(t).GetMachine(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// A reboot whose action gets no answer says Metal may not have received it.
func TestRebootActionUnanswered(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	w.emu.Fail(metalemu.Fault{Method: "POST", Path: "/devices/" + id + "/actions", Hang: true})
	// Time enough for the read before the action on a loaded machine.
	ctx, cancel := context.WithTimeoutCause(context.Background(), 2*time.Second, errors.New("Recovery's reboot timeout of 2s ran out"))
	defer cancel()
	err := w.provider(t).Reboot(ctx, id)
	want := "equinix: reboot device " + id + ": POST /devices/" + id + "/actions: gave up waiting: Recovery's reboot timeout of 2s ran out; Metal may not have received the reboot"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
}

// An answer that is not JSON at all (a web page where the API should be)
// blames the URL.
func TestAnswerNotJSON(t *testing.T) {
	w := newWorld(t)
	page := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/devices") {
			rw.Header().Set("Content-Type", "application/json")
			_, _ = rw.Write([]byte(`["not", "an", "object"]`))
			return
		}
		rw.Header().Set("Content-Type", "text/html")
		_, _ = rw.Write([]byte("<html>Welcome</html>"))
	}))
	defer page.Close()
	p := w.provider(t, func(c *equinix.Config) { c.APIURL = page.URL })
	_, err := p.Check(context.Background())
	want := "equinix: get project " + w.project + ": GET /projects/" + w.project +
		": the answer is not JSON (invalid character '<' looking for beginning of value); check the API URL " + page.URL + "/ (--equinix-api-url)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	_, err = p.ListMachines(context.Background())
	want = "equinix: list devices of project " + w.project + ": GET /projects/" + w.project + "/devices?hostname=bmctl-&include=facility&page=1&per_page=100" +
		": the answer is a JSON array, not the object the API answers; check the API URL " + page.URL + "/ (--equinix-api-url)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	// An exchange for the world to check.
	if _, err := w.provider(t).Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// Waiting for another create ends with the caller's context.
func TestCreateWaitHonoursContext(t *testing.T) {
	w := newWorld(t)
	w.emu.AddReservations(w.project, 2, small)
	w.emu.Fail(metalemu.Fault{Method: "POST", Path: "/projects/" + w.project + "/devices", Hang: true})
	p := w.provider(t, func(c *equinix.Config) { c.CallTimeout = time.Hour })
	first, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.CreateMachine(first)
		done <- err
	}()
	// Wait until the first create is hanging in its POST.
	deadline := time.Now().Add(60 * time.Second)
	for count(w.emu.Requests(), "POST /metal/v1/projects/"+w.project+"/devices") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first create never posted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	second, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	_, err := p.CreateMachine(second)
	want := "equinix: create device in project " + w.project + ": gave up waiting for another create: the caller's deadline passed"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	cancel()
	err = <-done
	if err == nil || !strings.HasSuffix(err.Error(), "/devices: gave up waiting: the caller canceled") {
		t.Errorf("the canceled first create: %v", err)
	}
}

// A device read that names another project is not ours; a project href
// that names no project (as a mock's "string") says nothing either way.
func TestDeviceOfAnotherProject(t *testing.T) {
	w := newWorld(t)
	id := w.emu.AddDevice(w.project, "bmctl-x", metalemu.Network{PublicIPv4: "192.0.2.1"})
	p := w.provider(t)
	other := "0b9a3c52-1d1e-4f0e-9a57-6a4f1c1b2d3e"
	w.emu.SetDeviceField(id, "project.href", metalemu.BasePath+"/projects/"+other)
	_, err := p.GetMachine(context.Background(), id)
	want := "equinix: get device " + id + ": device is in another project (" + other + "): machine not found at provider"
	if !errors.Is(err, shepherd.ErrNotFound) || err.Error() != want {
		t.Errorf("error %v\nwant  %s", err, want)
	}
	w.emu.SetDeviceField(id, "project.href", "string")
	if _, err := p.GetMachine(context.Background(), id); err != nil {
		t.Errorf("a project href naming no project: %v", err)
	}
}
