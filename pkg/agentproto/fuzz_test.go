package agentproto

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"
)

// FuzzReadReply feeds the shepherd whatever a machine's agent (or whatever
// runs in its place) may print: ReadReply never panics, accepts only a reply
// that echoes the init and carries a 32-byte key, and its error is one line
// (it goes into logs and history causes).
func FuzzReadReply(f *testing.F) {
	sent := Init{MachineID: "3f2a9c10-0000-4000-8000-000000000001", Endpoint: "https://a:8443", EndpointCA: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}
	for _, s := range []string{
		`{"init":{"machine_id":"3f2a9c10-0000-4000-8000-000000000001","endpoint":"https://a:8443","endpoint_ca":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"},"public_key":"O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="}`,
		`{"error":"cannot write key\nsecond line"}`,
		`{"init":{},"public_key":"AAAA"}`,
		`{"init":{"endpoints":["x","y"]}}`,
		`not json`, ``, `{}`, `null`, `{"public_key":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ReadReply(bytes.NewReader(data), sent)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		if len(got) != ed25519.PublicKeySize {
			t.Fatalf("accepted a %d-byte key", len(got))
		}
	})
}
