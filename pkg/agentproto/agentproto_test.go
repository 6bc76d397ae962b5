package agentproto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
)

// TestReadReplyWantsTheReplicasEchoed: an echo that lost or reordered the
// endpoint replicas is not the init the shepherd sent.
func TestReadReplyWantsTheReplicasEchoed(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sent := Init{MachineID: "m", Endpoint: "https://a:1", Endpoints: []string{"https://a:1", "https://b:1"}, EndpointCA: "ca"}
	for _, tc := range []struct {
		name      string
		endpoints []string
		ok        bool
	}{
		{"echoed", []string{"https://a:1", "https://b:1"}, true},
		{"lost", nil, false},
		{"reordered", []string{"https://b:1", "https://a:1"}, false},
	} {
		echo := sent
		echo.Endpoints = tc.endpoints
		data, _ := json.Marshal(Reply{Init: echo, PublicKey: pub})
		key, err := ReadReply(bytes.NewReader(data), sent)
		if tc.ok && (err != nil || !key.Equal(pub)) {
			t.Errorf("%s: %v, want the key", tc.name, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "does not echo the init message")) {
			t.Errorf("%s: %v, want a refusal of the echo", tc.name, err)
		}
	}
}
