// Package sshsim simulates machines for tests and the demo: each Machine is a
// real SSH server (golang.org/x/crypto/ssh) on 127.0.0.1 with its own ed25519
// host key, that accepts the shepherd's key, takes SFTP uploads and runs exec
// requests through a pluggable function. By default an exec behaves like a
// well-behaved bmctl agent. A machine can be powered off, on and cycled; it
// comes back on the same port.
package sshsim

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// ExecFunc runs one exec request: cmd is the command line the client sent,
// stdin, stdout and stderr are the SSH channel's streams. ctx ends when the
// client's connection drops or the machine loses power. It returns the exit
// status sent to the client.
type ExecFunc func(ctx context.Context, cmd string, stdin io.Reader, stdout, stderr io.Writer) (exitStatus int)

// Config describes a simulated machine. The zero value is a machine that
// accepts any client key and behaves like a well-behaved agent.
type Config struct {
	// AuthorizedKeys are the client keys the machine accepts; empty accepts
	// every key.
	AuthorizedKeys []ssh.PublicKey
	// HostKey is the machine's host key; a fresh ed25519 key when nil.
	HostKey ed25519.PrivateKey
	// OnExec runs exec requests; nil means Machine.AgentExec.
	OnExec ExecFunc
	// KeepUploads keeps uploaded bytes in memory (Upload.Data); otherwise only
	// their size and SHA-256 are kept, so that many machines stay cheap.
	KeepUploads bool
	// OnAgentStart, if set, is called by AgentExec after it answered, with the
	// init message and the agent key it made (the demo heart-beats with it).
	OnAgentStart func(m *Machine, init AgentInit, key ed25519.PrivateKey)
	// OnConnection, if set, is called when a client connects; the function it
	// returns is called when that connection ends. Tests use it as a record
	// of who acted on the machine when.
	OnConnection func() (ended func())
}

// Machine is one simulated machine.
type Machine struct {
	cfg  Config
	addr string

	mu       sync.Mutex
	hostKey  ssh.Signer
	onExec   ExecFunc
	listener net.Listener
	conns    map[net.Conn]struct{}
	powerCtx context.Context
	powerOff context.CancelFunc
	uploads  map[string]Upload
	boots    int
	execs    []string
	agentKey ed25519.PrivateKey
	closed   bool
	// received counts SFTP bytes written to the machine, across power cycles.
	received int64
	digests  int
	noGzip   bool

	wg sync.WaitGroup
}

// New starts a machine listening on 127.0.0.1 at a free port.
func New(cfg Config) (*Machine, error) {
	m := &Machine{cfg: cfg, onExec: cfg.OnExec, conns: map[net.Conn]struct{}{}, uploads: map[string]Upload{}}
	key := cfg.HostKey
	if key == nil {
		var err error
		if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
	}
	if err := m.SetHostKey(key); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("sshsim: listening: %w", err)
	}
	m.addr = l.Addr().String()
	m.powerOnLocked(l)
	return m, nil
}

// Addr is the machine's SSH address, host:port; it survives power cycles.
func (m *Machine) Addr() string { return m.addr }

// HostKey is the machine's current public host key.
func (m *Machine) HostKey() ssh.PublicKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hostKey.PublicKey()
}

// SetHostKey replaces the host key for later connections (a reinstalled
// machine, or an impostor).
func (m *Machine) SetHostKey(key ed25519.PrivateKey) error {
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.hostKey = signer
	m.mu.Unlock()
	return nil
}

// SetAuthorizedKeys replaces the client keys accepted from now on; none
// accepts every key.
func (m *Machine) SetAuthorizedKeys(keys ...ssh.PublicKey) {
	m.mu.Lock()
	m.cfg.AuthorizedKeys = keys
	m.mu.Unlock()
}

// SetOnConnection replaces Config.OnConnection.
func (m *Machine) SetOnConnection(f func() (ended func())) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg.OnConnection = f
}

// SetOnExec replaces what exec requests do; nil restores AgentExec.
func (m *Machine) SetOnExec(f ExecFunc) {
	m.mu.Lock()
	m.onExec = f
	m.mu.Unlock()
}

// Boots counts power-ons, the first one included.
func (m *Machine) Boots() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boots
}

// Execs returns the command lines given to the exec handler (OnExec or
// AgentExec) so far, oldest first; digest checks are counted by DigestChecks.
func (m *Machine) Execs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.execs...)
}

// AgentKey is the private key of the last agent AgentExec started since the
// last power-on, or nil.
func (m *Machine) AgentKey() ed25519.PrivateKey {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.agentKey
}

// PoweredOn reports whether the machine is listening.
func (m *Machine) PoweredOn() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listener != nil
}

// PowerOff stops listening and drops every connection: clients see their
// connection reset and new dials refused. Running execs see their context end
// (the agent dies with the machine) and uploads are lost (they live in tmpfs).
func (m *Machine) PowerOff() {
	m.mu.Lock()
	if m.listener == nil {
		m.mu.Unlock()
		return
	}
	_ = m.listener.Close()
	m.listener = nil
	for c := range m.conns {
		_ = c.Close()
	}
	m.powerOff()
	m.uploads = map[string]Upload{}
	m.agentKey = nil
	m.mu.Unlock()
	m.wg.Wait()
}

// PowerOn listens again on the same address.
func (m *Machine) PowerOn() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("sshsim: machine closed")
	}
	if m.listener != nil {
		return nil
	}
	var l net.Listener
	var err error
	// The port was ours a moment ago; retry briefly in case the kernel
	// still holds it.
	for range 50 {
		if l, err = net.Listen("tcp", m.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("sshsim: powering on %s: %w", m.addr, err)
	}
	m.powerOnLocked(l)
	return nil
}

// PowerCycle powers the machine off, waits off, and powers it on again.
func (m *Machine) PowerCycle(ctx context.Context, off time.Duration) error {
	m.PowerOff()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(off):
	}
	return m.PowerOn()
}

// Close powers the machine off for good and waits for its goroutines.
func (m *Machine) Close() error {
	m.PowerOff()
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

func (m *Machine) powerOnLocked(l net.Listener) {
	m.listener = l
	m.boots++
	m.powerCtx, m.powerOff = context.WithCancel(context.Background())
	ctx := m.powerCtx
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.accept(ctx, l)
	}()
}

func (m *Machine) accept(ctx context.Context, l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		if ctx.Err() != nil {
			m.mu.Unlock()
			_ = c.Close()
			return
		}
		m.conns[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.wg.Done()
			m.serveConn(ctx, c)
			m.mu.Lock()
			delete(m.conns, c)
			m.mu.Unlock()
		}()
	}
}

func (m *Machine) serverConfig() *ssh.ServerConfig {
	m.mu.Lock()
	authorized := m.cfg.AuthorizedKeys
	m.mu.Unlock()
	cfg := &ssh.ServerConfig{
		PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			if len(authorized) == 0 {
				return nil, nil
			}
			for _, k := range authorized {
				if string(k.Marshal()) == string(key.Marshal()) {
					return nil, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
	}
	m.mu.Lock()
	cfg.AddHostKey(m.hostKey)
	m.mu.Unlock()
	return cfg
}

func (m *Machine) serveConn(power context.Context, c net.Conn) {
	defer c.Close()
	m.mu.Lock()
	onConn := m.cfg.OnConnection
	m.mu.Unlock()
	if onConn != nil {
		defer onConn()()
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	sconn, chans, reqs, err := ssh.NewServerConn(c, m.serverConfig())
	if err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(power)
	defer cancel()
	go func() {
		_ = sconn.Wait()
		cancel()
	}()
	go ssh.DiscardRequests(reqs)
	var wg sync.WaitGroup
	defer wg.Wait()
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only session channels")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.serveSession(ctx, ch, chReqs)
		}()
	}
}

// serveSession handles one session channel: one exec or one sftp subsystem.
func (m *Machine) serveSession(ctx context.Context, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var running sync.WaitGroup
	defer running.Wait()
	started := false
	for req := range reqs {
		switch {
		case req.Type == "exec" && !started:
			var p struct{ Command string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			started = true
			_ = req.Reply(true, nil)
			running.Add(1)
			go func() {
				defer running.Done()
				status := m.exec(ctx, p.Command, ch)
				_ = ch.CloseWrite()
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
				_ = ch.Close()
			}()
		case req.Type == "subsystem" && !started:
			var p struct{ Name string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil || p.Name != "sftp" {
				_ = req.Reply(false, nil)
				continue
			}
			started = true
			_ = req.Reply(true, nil)
			running.Add(1)
			go func() {
				defer running.Done()
				srv := sftp.NewRequestServer(ch, m.sftpHandlers())
				_ = srv.Serve()
				_ = srv.Close()
				_ = ch.Close()
			}()
		case req.Type == "env":
			_ = req.Reply(true, nil)
		default:
			_ = req.Reply(false, nil)
		}
	}
}

func (m *Machine) exec(ctx context.Context, cmd string, ch ssh.Channel) int {
	// The machine's own tools answer whatever the exec handler does.
	if p, ok := digestCommand(cmd); ok {
		return m.digest(p, ch)
	}
	if p, ok := unpackCommand(cmd); ok {
		return m.unpack(p, ch, ch.Stderr())
	}
	m.mu.Lock()
	m.execs = append(m.execs, cmd)
	f := m.onExec
	m.mu.Unlock()
	if f == nil {
		f = m.AgentExec
	}
	return f(ctx, cmd, ch, ch, ch.Stderr())
}
