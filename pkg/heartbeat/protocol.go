// Package heartbeat is the HTTPS endpoint agents heart-beat to (Server) and
// the agent's side of that protocol (Client, Request, Response).
//
// An agent authenticates with mutual TLS: its client certificate is
// self-signed and only its ed25519 public key matters; the server accepts a
// heartbeat only when that key is the one the machine's agent-started tag
// holds. The agent verifies the server with the CA the shepherd gave it.
package heartbeat

// Path is where agents POST heartbeats.
const Path = "/v1/heartbeat"

// Request is one heartbeat. Hardware is sent on first contact only.
type Request struct {
	MachineID string          `json:"machine_id"`
	Hardware  *HardwareReport `json:"hardware,omitempty"`
}

// Response tells the agent when to heart-beat next, so that the server,
// which knows the stale threshold, sets the pace.
type Response struct {
	IntervalMillis int64 `json:"interval_ms"`
}

// HardwareReport is what the agent found on its machine.
type HardwareReport struct {
	CPUModel    string `json:"cpu_model"`
	CPUCount    int    `json:"cpu_count"`
	MemoryBytes uint64 `json:"memory_bytes"`
	Disks       []Disk `json:"disks"`
	NICs        []NIC  `json:"nics"`
}

// Disk is a block device.
type Disk struct {
	Name      string `json:"name"`
	SizeBytes uint64 `json:"size_bytes"`
	Model     string `json:"model,omitempty"`
}

// NIC is a network interface.
type NIC struct {
	Name string `json:"name"`
	MAC  string `json:"mac"`
}

// ErrorBody is the JSON body of every refusal. It never says whether a
// machine exists.
type ErrorBody struct {
	Error string `json:"error"`
}
