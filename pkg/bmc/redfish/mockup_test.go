package redfish_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/redfishsim"
	"github.com/bmctl/bmctl/pkg/bmc"
	"github.com/bmctl/bmctl/pkg/bmc/redfish"
)

// mockupDir is the DMTF's public-rackmount1 mockup (testdata/README.md).
const mockupDir = "testdata/public-rackmount1"

// serveMockup serves a static mockup the way the DMTF's mockup server does:
// /redfish/v1/<path> is <dir>/<path>/index.json. It is read-only: creating
// a session is refused, so the client must settle for basic auth.
func serveMockup(t *testing.T, dir string) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "the mockup is read-only", http.StatusMethodNotAllowed)
			return
		}
		rest, ok := strings.CutPrefix(path.Clean(r.URL.Path), "/redfish/v1")
		if !ok {
			http.NotFound(w, r)
			return
		}
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rest), "index.json"))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(data)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func mockupClient(t *testing.T, srv *httptest.Server) *redfish.Client {
	pool := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	c, err := redfish.New(redfish.Config{Address: srv.URL, Username: user, Password: password, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOfficialMockupReadCorrectly(t *testing.T) {
	srv := serveMockup(t, mockupDir)
	c := mockupClient(t, srv)
	systems, err := c.Systems(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(systems, []string{"/redfish/v1/Systems/437XR1138R2"}) {
		t.Errorf("systems %v", systems)
	}
	st, err := c.Status(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if c.System() != "/redfish/v1/Systems/437XR1138R2" {
		t.Errorf("system %q, want the only one found", c.System())
	}
	want := []string{"On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "Nmi", "ForceOn", "PushPowerButton"}
	if st.Power != bmc.PowerOn || !slices.Equal(resetNames(st.Resets), want) {
		t.Errorf("status %+v, want On and the mockup's allowed reset types %v", st, want)
	}
}

// TestSimulatorServesMockupShapes checks the simulator against the
// official mockup: every property it serves on the resources the client
// reads exists in the mockup's resource with the same JSON type.
func TestSimulatorServesMockupShapes(t *testing.T) {
	w := newWorld(t, 1, redfishsim.Faults{})
	for _, pair := range [][2]string{
		{"/redfish/v1/", "/redfish/v1/"},
		{"/redfish/v1/Systems", "/redfish/v1/Systems"},
		{"/redfish/v1/Systems/1", "/redfish/v1/Systems/437XR1138R2"},
		{"/redfish/v1/SessionService", "/redfish/v1/SessionService"},
	} {
		sim := fetch(t, w, pair[0])
		mock := readMockup(t, pair[1])
		if ns(sim["@odata.type"]) != ns(mock["@odata.type"]) {
			t.Errorf("%s: @odata.type %v, mockup %v", pair[0], sim["@odata.type"], mock["@odata.type"])
		}
		sameShape(t, pair[0], sim, mock)
	}
}

// ns is an @odata.type without its version: #ComputerSystem.v1_22_0.ComputerSystem -> #ComputerSystem.ComputerSystem.
func ns(v any) string {
	s, _ := v.(string)
	parts := strings.Split(s, ".")
	return parts[0] + "." + parts[len(parts)-1]
}

func sameShape(t *testing.T, where string, sim, mock any) {
	t.Helper()
	switch s := sim.(type) {
	case map[string]any:
		m, ok := mock.(map[string]any)
		if !ok {
			t.Errorf("%s: an object in the simulator, %T in the mockup", where, mock)
			return
		}
		for k, v := range s {
			mv, ok := m[k]
			if !ok {
				t.Errorf("%s: the simulator serves %s, the mockup has no such property", where, k)
				continue
			}
			if k == "@odata.type" || k == "@odata.id" {
				continue
			}
			sameShape(t, where+"/"+k, v, mv)
		}
	case []any:
		m, ok := mock.([]any)
		if !ok {
			t.Errorf("%s: an array in the simulator, %T in the mockup", where, mock)
			return
		}
		if len(s) > 0 && len(m) > 0 {
			sameShape(t, where+"[0]", s[0], m[0])
		}
	default:
		if fmt.Sprintf("%T", sim) != fmt.Sprintf("%T", mock) {
			t.Errorf("%s: %T in the simulator, %T in the mockup", where, sim, mock)
		}
	}
}

func fetch(t *testing.T, w *world, p string) map[string]any {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.pool()}}}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, w.sim.URL()+p, nil)
	req.SetBasicAuth(user, password)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return v
}

func readMockup(t *testing.T, p string) map[string]any {
	t.Helper()
	rest := strings.TrimPrefix(strings.TrimSuffix(p, "/"), "/redfish/v1")
	data, err := os.ReadFile(filepath.Join(mockupDir, filepath.FromSlash(rest), "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}
