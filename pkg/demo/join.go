package demo

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/shepherd"
)

// JoinFile is the file in the state directory that holds, as BMCTL_*
// variables, everything `bmctl shepherd run` needs to work the demo's fleet.
const JoinFile = "shepherd.env"

// writeJoinFiles writes the endpoint's CA and JoinFile into the state
// directory, so that shepherds in other processes (or on other hosts that
// reach 127.0.0.1 here) can join the fleet:
//
//	set -a; . STATE/shepherd.env; set +a; bmctl shepherd run
//
// It is also a systemd EnvironmentFile. It returns JoinFile's path.
func writeJoinFiles(cfg Config, sc shepherd.Config, inventory string) (string, error) {
	caFile := filepath.Join(cfg.StateDir, "endpoint-ca.pem")
	if err := os.WriteFile(caFile, []byte(sc.AgentStart.EndpointCA), 0o600); err != nil {
		return "", err
	}
	backoff := func(b bmdb.Backoff) string {
		return fmt.Sprintf("%s,%s,%s", b.Initial, b.Maximum, strconv.FormatFloat(b.Exponent, 'g', -1, 64))
	}
	vars := [][2]string{
		{"BMCTL_DATABASE_URL", cfg.Conn.URL()},
		{"BMCTL_PROVIDER", "static"},
		{"BMCTL_INVENTORY", inventory},
		{"BMCTL_AGENT_ENDPOINT", sc.AgentStart.Endpoint},
		{"BMCTL_AGENT_ENDPOINT_CA", caFile},
		{"BMCTL_AGENT_BINARY", sc.AgentStart.AgentBinary},
		{"BMCTL_SSH_KEY", filepath.Join(cfg.StateDir, "shepherd_ed25519")},
		{"BMCTL_SESSION_INTERVAL", sc.SessionInterval.String()},
		{"BMCTL_PROVISION_INTERVAL", sc.Provisioning.Interval.String()},
		{"BMCTL_NO_HEARTBEAT_AFTER_START", sc.Recovery.Thresholds.NoHeartbeatAfterStart.String()},
		{"BMCTL_STALE_HEARTBEAT", sc.Recovery.Thresholds.StaleHeartbeat.String()},
		{"BMCTL_AGENTSTART_PARALLELISM", strconv.Itoa(sc.AgentStart.Parallelism)},
		{"BMCTL_RECOVERY_PARALLELISM", strconv.Itoa(sc.Recovery.Parallelism)},
		{"BMCTL_AGENTSTART_BACKOFF", backoff(sc.AgentStart.Backoff)},
		{"BMCTL_RECOVERY_BACKOFF", backoff(sc.Recovery.Backoff)},
		{"BMCTL_SSH_DIAL_TIMEOUT", sc.AgentStart.DialTimeout.String()},
		{"BMCTL_AGENT_EXEC_TIMEOUT", sc.AgentStart.ExecTimeout.String()},
		{"BMCTL_REBOOT_TIMEOUT", sc.Recovery.RebootTimeout.String()},
	}
	var b strings.Builder
	b.WriteString("# Written by bmctl demo: what `bmctl shepherd run` needs to work this fleet.\n")
	b.WriteString("# set -a; . " + filepath.Join(cfg.StateDir, JoinFile) + "; set +a; bmctl shepherd run\n")
	for _, v := range vars {
		fmt.Fprintf(&b, "%s=%s\n", v[0], strconv.Quote(v[1]))
	}
	path := filepath.Join(cfg.StateDir, JoinFile)
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
}

// listenStable listens on the address saved in file if it is free, else on a
// new port, and saves the address: the endpoint keeps its URL across
// restarts, so agents and joined shepherds find it again.
func listenStable(file string) (net.Listener, error) {
	if addr, err := os.ReadFile(file); err == nil {
		if ln, err := net.Listen("tcp", strings.TrimSpace(string(addr))); err == nil {
			return ln, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return ln, os.WriteFile(file, []byte(ln.Addr().String()+"\n"), 0o600)
}
