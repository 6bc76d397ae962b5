package redfish

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// FuzzSystemStatus serves whatever a BMC may answer for its system to the
// real client over HTTPS: never a panic, and an error is one line.
func FuzzSystemStatus(f *testing.F) {
	var system atomic.Value
	system.Store([]byte(`{}`))
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/redfish/v1/", "/redfish/v1":
			_, _ = w.Write([]byte(`{"Systems":{"@odata.id":"/redfish/v1/Systems"},"SessionService":{"@odata.id":"/redfish/v1/SessionService"},"Links":{"Sessions":{"@odata.id":"/redfish/v1/SessionService/Sessions"}}}`))
		case "/redfish/v1/SessionService/Sessions":
			w.Header().Set("X-Auth-Token", "t")
			w.Header().Set("Location", "/redfish/v1/SessionService/Sessions/1")
			w.WriteHeader(http.StatusCreated)
			_, _ = w.Write([]byte(`{}`))
		case "/redfish/v1/Systems":
			_, _ = w.Write([]byte(`{"Members":[{"@odata.id":"/redfish/v1/Systems/1"}]}`))
		default:
			_, _ = w.Write(system.Load().([]byte))
		}
	}))
	defer srv.Close()
	c, err := New(Config{Address: srv.URL, Username: "u", Password: "p", Insecure: true, Retries: 1, RequestTimeout: 10 * time.Second})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		`{"Id":"1","PowerState":"On","Actions":{"#ComputerSystem.Reset":{"target":"/redfish/v1/Systems/1/Actions/ComputerSystem.Reset","ResetType@Redfish.AllowableValues":["On","ForceOff","PowerCycle"]}}}`,
		`{"Id":"1","PowerState":"Off","Actions":{"#ComputerSystem.Reset":{"target":"/x","@Redfish.ActionInfo":"/redfish/v1/Systems/1/ResetActionInfo"}}}`,
		`{"PowerState":null}`, `{"Actions":{"#ComputerSystem.Reset":null}}`, `[]`, `not json`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		system.Store(body)
		clear(c.actionInfo) // each input its own ActionInfo
		_, err := c.Status(context.Background())
		if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
			t.Fatalf("error is not one line: %q", err)
		}
	})
}
