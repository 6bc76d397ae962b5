package main

import (
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/bmctl/bmctl/internal/metalemu"
)

// metalProject serves an emulated Metal API with one project (two free
// reservations, one of them spare, one bmctl device) and points the
// environment at it.
func metalProject(t *testing.T) (project string) {
	t.Helper()
	emu := metalemu.New("good-token")
	project = emu.AddProject("fleet")
	emu.AddReservations(project, 2, metalemu.Reservation{Plan: "c3.small.x86", Facility: "sv15", Metro: "sv"})
	emu.AddReservations(project, 1, metalemu.Reservation{Plan: "c3.small.x86", Facility: "sv15", Metro: "sv", Spare: true})
	emu.AddDevice(project, "bmctl-a", metalemu.Network{PublicIPv4: "192.0.2.1"})
	serveMetal(t, emu)
	t.Setenv("METAL_PROJECT_ID", project)
	t.Setenv("METAL_AUTH_TOKEN", "good-token")
	return project
}

// serveMetal serves emu, checking every exchange against the Metal OpenAPI
// description, and points the environment at it.
func serveMetal(t *testing.T, emu *metalemu.Server) {
	t.Helper()
	val, err := metalemu.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(val.Wrap(emu.Handler()))
	t.Cleanup(func() {
		srv.Close()
		violations, _ := val.Violations()
		for _, v := range violations {
			t.Errorf("OpenAPI: %s", v)
		}
	})
	t.Setenv("BMCTL_EQUINIX_API_URL", srv.URL+metalemu.BasePath)
}

func TestProviderCheck(t *testing.T) {
	project := metalProject(t)
	r := bmctl(t, "", "provider", "check")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	want := "Project fleet (" + project + `): credentials accepted; 1 device(s) with prefix "bmctl-"; 2 free hardware reservation(s)`
	if !strings.HasPrefix(r.out, want+"\n") || strings.Count(r.out, "c3.small.x86") != 2 || !strings.Contains(r.out, "sv/sv15") {
		t.Errorf("output:\n%s\nwant %s and two reservations", r.out, want)
	}

	r = bmctl(t, "", "provider", "check", "-o", "json")
	var got struct {
		ProjectName string `json:"project_name"`
		Free        []struct {
			ID string `json:"id"`
		} `json:"free_reservations"`
	}
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || got.ProjectName != "fleet" || len(got.Free) != 2 {
		t.Errorf("json: %v %+v\n%s", err, got, r.out)
	}
}

func TestProviderCheckRefusals(t *testing.T) {
	project := metalProject(t)

	t.Setenv("METAL_AUTH_TOKEN", "stale-token")
	r := bmctl(t, "", "provider", "check")
	want := "bmctl: equinix: get project " + project + ": GET /projects/" + project + ": 401 Unauthorized: Invalid authentication token; check METAL_AUTH_TOKEN\n"
	if r.code != 1 || r.err != want {
		t.Errorf("bad token: exit %d, stderr %q\nwant exit 1, %q", r.code, r.err, want)
	}
	if strings.Contains(r.err+r.out, "stale-token") {
		t.Errorf("the token was printed")
	}

	t.Setenv("METAL_AUTH_TOKEN", "")
	r = bmctl(t, "", "provider", "check", "--equinix-project", "fleet")
	want = `bmctl: no Metal API token: export METAL_AUTH_TOKEN (or PACKET_AUTH_TOKEN); Metal project "fleet" is not a UUID` + "\n"
	if r.code != 2 || r.err != want {
		t.Errorf("no token, bad project: exit %d, stderr %q\nwant exit 2, %q", r.code, r.err, want)
	}

	// packngo's variable works too.
	t.Setenv("PACKET_AUTH_TOKEN", "good-token")
	if r := bmctl(t, "", "provider", "check"); r.code != 0 {
		t.Errorf("PACKET_AUTH_TOKEN: exit %d: %s", r.code, r.err)
	}
}

// Devices bmctl cannot read are one line each on stderr, after what the
// check found; the check exits 1. An inconsistent listing is one line.
func TestProviderCheckProblems(t *testing.T) {
	emu := metalemu.New("good-token")
	project := emu.AddProject("fleet")
	emu.AddReservations(project, 1, metalemu.Reservation{Plan: "c3.small.x86", Facility: "sv15", Metro: "sv"})
	odd := emu.AddDevice(project, "bmctl-odd", metalemu.Network{PublicIPv4: "192.0.2.1"})
	emu.SetDeviceField(odd, "provisioning_percentage", 1e39) // unused: no problem
	var bad []string
	for _, name := range []string{"bmctl-a", "bmctl-b"} {
		id := emu.AddDevice(project, name, metalemu.Network{PublicIPv4: "192.0.2.2"})
		emu.SetDeviceField(id, "ip_addresses.1.address_family", 1e20)
		bad = append(bad, id)
	}
	serveMetal(t, emu)
	t.Setenv("METAL_PROJECT_ID", project)
	t.Setenv("METAL_AUTH_TOKEN", "good-token")

	r := bmctl(t, "", "provider", "check")
	wantOut := "Project fleet (" + project + `): credentials accepted; 3 device(s) with prefix "bmctl-"; 1 free hardware reservation(s)` + "\n"
	problem := ": field ip_addresses.address_family: number 100000000000000000000 is out of range for int; bmctl leaves it alone until Metal answers a value it can use\n"
	wantErr := "bmctl: device " + bad[0] + problem + "bmctl: device " + bad[1] + problem +
		"bmctl: Metal project " + project + ": 2 device(s) or reservation(s) bmctl cannot read, listed above\n"
	if r.code != 1 || !strings.HasPrefix(r.out, wantOut) || r.err != wantErr {
		t.Errorf("exit %d\nstdout %s\nstderr %s\nwant exit 1, stdout starting %s\nstderr %s", r.code, r.out, r.err, wantOut, wantErr)
	}

	r = bmctl(t, "", "provider", "check", "--equinix-list-timeout", "0s")
	wantErr = "bmctl: --equinix-reboot-timeout, --equinix-poll-interval and --equinix-list-timeout must be positive\n"
	if r.code != 2 || r.err != wantErr {
		t.Errorf("a list timeout of 0: exit %d, stderr %q\nwant exit 2, %q", r.code, r.err, wantErr)
	}

	emu.EditListMeta(func(m *metalemu.ListMeta) { m.Total = 0 })
	r = bmctl(t, "", "provider", "check")
	wantErr = "bmctl: equinix: list hardware reservations of project " + project + ": GET /projects/" + project +
		"/hardware-reservations?page=1&per_page=100&provisionable=only: inconsistent answer: meta.total is 0 but page 1 has 1 item(s)\n"
	if r.code != 1 || r.err != wantErr {
		t.Errorf("inconsistent paging: exit %d, stderr %q\nwant exit 1, %q", r.code, r.err, wantErr)
	}
}
