package metalemu_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/packethost/packngo"

	"github.com/bmctl/bmctl/internal/metalemu"
)

func serve(t *testing.T, h http.Handler) (*metalemu.Validator, string) {
	t.Helper()
	v, err := metalemu.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(v.Wrap(h))
	t.Cleanup(srv.Close)
	return v, srv.URL + metalemu.BasePath + "/"
}

func client(t *testing.T, url, token string) *packngo.Client {
	t.Helper()
	c, err := packngo.NewClient(packngo.WithAuth("test", token), packngo.WithBaseURL(url))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The emulator's hrefs carry the API's base path, as the description's own
// example does ("href": "/metal/v1/projects/..."). packngo's list calls
// follow meta.next by resolving that href against its base URL, which
// doubles the base path: a packngo defect that real Metal would show too.
// This is why the provider pages by number; this test tells us if packngo
// ever changes.
func TestPackngoFollowingMetaNextDoublesBasePath(t *testing.T) {
	emu := metalemu.New("tok")
	p := emu.AddProject("p")
	emu.AddReservations(p, 7, metalemu.Reservation{Plan: "c3.small.x86", Facility: "sv15", Metro: "sv"})
	emu.SetPerPage(3)
	v, url := serve(t, emu.Handler())
	c := client(t, url, "tok")

	_, _, err := c.HardwareReservations.List(p, nil)
	if err == nil || !strings.Contains(err.Error(), "/metal/v1/metal/v1/projects/"+p+"/hardware-reservations?page=2: 404") {
		t.Errorf("packngo following meta.next: %v; want the doubled base path", err)
	}
	// Paging by number, as the provider does, walks every page.
	n := 0
	for page := 1; page <= 3; page++ {
		got, _, err := c.HardwareReservations.List(p, &packngo.ListOptions{Page: page, PerPage: 3})
		if err != nil {
			t.Fatal(err)
		}
		n += len(got)
	}
	if n != 7 {
		t.Errorf("listed %d reservations over pages of 3, want 7", n)
	}
	if vs, _ := v.Violations(); len(vs) != 1 || !strings.Contains(vs[0], "not among the Metal API paths") {
		t.Errorf("violations %v; want only the doubled path", vs)
	}
}

// The validator is a real check: it catches a request and a response that
// do not conform to the description.
func TestValidatorCatchesViolations(t *testing.T) {
	emu := metalemu.New("tok")
	p := emu.AddProject("p")
	id := emu.AddDevice(p, "x", metalemu.Network{})
	h := emu.Handler()
	v, url := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/bogus-device") {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"id":"not-a-uuid","state":"exploded"}`))
			return
		}
		h.ServeHTTP(w, r)
	}))
	c := client(t, url, "tok")

	// An action the description does not list.
	_, _ = c.DoRequest("POST", "devices/"+id+"/actions", map[string]string{"type": "explode"}, nil)
	// A device that is not a Device.
	_, _ = c.DoRequest("GET", "devices/bogus-device", nil, new(packngo.Device))
	// A path the API does not have.
	_, _ = c.DoRequest("GET", "warp-drives", nil, nil)

	vs, _ := v.Violations()
	joined := strings.Join(vs, "\n")
	for _, want := range []string{
		`request POST /metal/v1/devices/` + id + `/actions`,
		`"explode"`,
		`response 200 to GET /metal/v1/devices/bogus-device`,
		`"exploded"`,
		`GET /metal/v1/warp-drives: not among the Metal API paths the emulator serves`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("violations lack %q:\n%s", want, joined)
		}
	}
}

func TestRejectsWrongToken(t *testing.T) {
	emu := metalemu.New("tok")
	p := emu.AddProject("p")
	_, url := serve(t, emu.Handler())
	_, _, err := client(t, url, "nope").Projects.Get(p, nil)
	if err == nil || !strings.Contains(err.Error(), "401 Invalid authentication token") {
		t.Errorf("wrong token: %v", err)
	}
}
