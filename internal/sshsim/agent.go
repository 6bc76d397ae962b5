package sshsim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/bmctl/bmctl/pkg/agentproto"
)

// AgentInit is the init message a started agent received.
type AgentInit = agentproto.Init

// AgentExec is the default exec behaviour, a well-behaved agent: the command
// must name an uploaded, executable file followed by "agent"; it reads one
// agentproto.Init from stdin and answers with the init echoed and a fresh
// ed25519 public key.
func (m *Machine) AgentExec(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) int {
	fields := strings.Fields(cmd)
	if len(fields) < 2 || fields[len(fields)-1] != "agent" {
		fmt.Fprintf(stderr, "sshsim: want \"<agent binary> agent\", got %q\n", cmd)
		return 2
	}
	bin := strings.Trim(fields[0], "'")
	u, ok := m.Uploaded(bin)
	if !ok {
		fmt.Fprintf(stderr, "sh: 1: %s: not found\n", bin)
		return 127
	}
	if u.Mode&0o111 == 0 {
		fmt.Fprintf(stderr, "sh: 1: %s: Permission denied\n", bin)
		return 126
	}
	var init agentproto.Init
	if err := json.NewDecoder(stdin).Decode(&init); err != nil {
		_ = json.NewEncoder(stdout).Encode(agentproto.Reply{Error: "reading init message: " + err.Error()})
		return 1
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(agentproto.Reply{Init: init, PublicKey: pub}); err != nil {
		return 1
	}
	m.mu.Lock()
	m.agentKey = key
	m.mu.Unlock()
	if m.cfg.OnAgentStart != nil {
		m.cfg.OnAgentStart(m, init, key)
	}
	return 0
}

// Reply returns an ExecFunc that reads stdin to its end and answers with
// stdout and exitStatus, for scripting misbehaving agents.
func Reply(stdout string, exitStatus int) ExecFunc {
	return func(_ context.Context, _ string, stdin io.Reader, out, _ io.Writer) int {
		_, _ = io.Copy(io.Discard, io.LimitReader(stdin, 1<<20))
		_, _ = io.WriteString(out, stdout)
		return exitStatus
	}
}

// Fail returns an ExecFunc that writes stderr and exits with exitStatus.
func Fail(stderr string, exitStatus int) ExecFunc {
	return func(_ context.Context, _ string, _ io.Reader, _, errw io.Writer) int {
		_, _ = io.WriteString(errw, stderr)
		return exitStatus
	}
}

// Hang is an ExecFunc that never answers; it returns when the client's
// connection drops or the machine loses power.
func Hang(ctx context.Context, _ string, _ io.Reader, _, _ io.Writer) int {
	<-ctx.Done()
	return 255
}
