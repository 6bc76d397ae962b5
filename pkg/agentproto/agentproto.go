// Package agentproto is the exchange between the shepherd and the agent it
// starts over SSH: the shepherd writes an Init on the agent's stdin, the agent
// answers one Reply on stdout and detaches.
package agentproto

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// MaxReplySize caps what the shepherd reads from an agent's stdout.
const MaxReplySize = 64 << 10

// Init tells a starting agent who it is and where to heart-beat.
type Init struct {
	MachineID string `json:"machine_id"`
	// Endpoint is the heartbeat endpoint's base URL (https://host:port),
	// the first of Endpoints when there are replicas.
	Endpoint string `json:"endpoint"`
	// Endpoints, when there are several, are every replica of the endpoint
	// (all on one BMDB), Endpoint first: the agent heart-beats to one and
	// moves to the next when it fails.
	Endpoints []string `json:"endpoints,omitempty"`
	// EndpointCA is the PEM certificate the endpoint's certificate chains to.
	EndpointCA string `json:"endpoint_ca"`
}

// URLs are the endpoint URLs the agent may heart-beat to.
func (i Init) URLs() []string {
	if len(i.Endpoints) > 0 {
		return i.Endpoints
	}
	return []string{i.Endpoint}
}

// Equal reports whether i and o say the same.
func (i Init) Equal(o Init) bool {
	return i.MachineID == o.MachineID && i.Endpoint == o.Endpoint &&
		slices.Equal(i.Endpoints, o.Endpoints) && i.EndpointCA == o.EndpointCA
}

// Reply is the agent's answer: its init message echoed and its public key, or
// an error.
type Reply struct {
	Init      Init   `json:"init"`
	PublicKey []byte `json:"public_key,omitempty"`
	Error     string `json:"error,omitempty"`
}

// ReadReply reads and checks an agent's reply to init: it must be one JSON
// object of at most MaxReplySize bytes, echo init exactly and carry an ed25519
// public key.
func ReadReply(r io.Reader, init Init) (ed25519.PublicKey, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxReplySize+1))
	if err != nil {
		return nil, fmt.Errorf("reading agent reply: %w", err)
	}
	if len(data) > MaxReplySize {
		return nil, fmt.Errorf("agent reply larger than %d bytes", MaxReplySize)
	}
	var rep Reply
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("agent reply is not valid JSON (%v): %q", err, truncate(data, 200))
	}
	if rep.Error != "" {
		// The agent's words, on one line and bounded: the cause goes into
		// logs and history (FuzzReadReply).
		return nil, fmt.Errorf("agent reported an error: %s", truncate([]byte(strings.Join(strings.Fields(rep.Error), " ")), 500))
	}
	if !rep.Init.Equal(init) {
		return nil, fmt.Errorf("agent reply does not echo the init message (got machine %q, endpoint %q)", rep.Init.MachineID, rep.Init.Endpoint)
	}
	if len(rep.PublicKey) != ed25519.PublicKeySize {
		return nil, errors.New("agent reply carries no ed25519 public key (want 32 bytes)")
	}
	return ed25519.PublicKey(rep.PublicKey), nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
