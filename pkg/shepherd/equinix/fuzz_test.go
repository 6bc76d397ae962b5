package equinix

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// canonical reports whether id is a UUID as Metal writes them.
func canonical(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.String() == strings.ToLower(id)
}

// FuzzDecodeDevice decodes whatever Metal (or a proxy in its place) may
// answer for a device: never a panic, an accepted device has a canonical
// UUID (it becomes the provider id and a URL path), and a refusal is one line.
func FuzzDecodeDevice(f *testing.F) {
	for _, s := range []string{
		`{"id":"3f2a9c10-1111-4000-8000-000000000001","hostname":"m1","state":"active","tags":["a"],"ip_addresses":[{"address":"147.75.1.2","address_family":4,"public":true}],"metro":{"code":"fr"},"facility":{"code":"fr2","metro":{"code":"fr"}},"project":{"href":"/metal/v1/projects/p1"},"hardware_reservation":{"id":"r1"}}`,
		`{"id":"{3f2a9c10-1111-4000-8000-000000000001}"}`,
		`{"id":"urn:uuid:3f2a9c10-1111-4000-8000-000000000001"}`,
		`{"id":"3f2a9c101111400080000000000000001"}`,
		`{"id":"x","ip_addresses":[{"address":"nope","address_family":4,"public":true}]}`,
		`{"id":"3f2a9c10-1111-4000-8000-000000000001","ip_addresses":[{"address_family":99999999999999999999}]}`,
		`[]`, `null`, `"x"`, `{"facility":{"metro":null}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := decodeDevice(json.RawMessage(raw), "page 1, item 1")
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if !canonical(d.ID) {
			t.Fatalf("accepted device id %q", d.ID)
		}
	})
}

// FuzzDecodeReservation is FuzzDecodeDevice for hardware reservations.
func FuzzDecodeReservation(f *testing.F) {
	for _, s := range []string{
		`{"id":"3f2a9c10-1111-4000-8000-000000000002","short_id":"3f2a9c10","provisionable":true,"spare":false,"plan":{"slug":"c3.small.x86"},"facility":{"code":"fr2","metro":{"code":"fr"}},"device":null}`,
		`{"id":"urn:uuid:3f2a9c10-1111-4000-8000-000000000002"}`,
		`{"id":"3f2a9c10-1111-4000-8000-000000000002","device":{"id":"d"}}`,
		`{"id":1}`, `{}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := decodeReservation(json.RawMessage(raw), "page 1, item 1")
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if !canonical(r.ID) || r.ShortID == "" {
			t.Fatalf("accepted reservation id %q short id %q", r.ID, r.ShortID)
		}
	})
}
