package shepherd

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/pkg/agentproto"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// AgentStartConfig configures the AgentStart loop: how to reach machines
// over SSH and which agent to start there.
type AgentStartConfig struct {
	LoopConfig
	// Signer is the shepherd's SSH key (see LoadOrCreateKey).
	Signer ssh.Signer
	// User is the SSH user; default "root".
	User string
	// AgentBinary is the local file uploaded to machines and run there as
	// "<RemotePath> agent".
	AgentBinary string
	// RemotePath is where the agent binary is put; default /tmp/bmctl-agent.
	RemotePath string
	// Endpoint and EndpointCA (PEM) are passed to the agent in its init
	// message: where it heart-beats and how it verifies that endpoint.
	Endpoint   string
	EndpointCA string
	// MoreEndpoints are further replicas of the endpoint on the same BMDB
	// (same CA): agents are given them all and move to another when one
	// fails.
	MoreEndpoints []string
	// DialTimeout bounds TCP connect plus SSH handshake; default 15s.
	DialTimeout time.Duration
	// UploadTimeout bounds the agent upload; default 5m.
	UploadTimeout time.Duration
	// ExecTimeout bounds running the agent until its reply; default 1m.
	ExecTimeout time.Duration
}

// DefaultRemotePath is where the agent binary goes on a machine.
const DefaultRemotePath = "/tmp/bmctl-agent"

func (c AgentStartConfig) withDefaults() AgentStartConfig {
	if c.User == "" {
		c.User = "root"
	}
	if c.RemotePath == "" {
		c.RemotePath = DefaultRemotePath
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 15 * time.Second
	}
	if c.UploadTimeout <= 0 {
		c.UploadTimeout = 5 * time.Minute
	}
	if c.ExecTimeout <= 0 {
		c.ExecTimeout = time.Minute
	}
	if c.Backoff == (bmdb.Backoff{}) {
		c.Backoff = bmdb.AgentStartBackoff
	}
	return c
}

func (c AgentStartConfig) validate() error {
	if c.Signer == nil {
		return errors.New("AgentStart needs an SSH key")
	}
	if c.AgentBinary == "" {
		return errors.New("AgentStart needs an agent binary")
	}
	if _, err := os.Stat(c.AgentBinary); err != nil {
		return fmt.Errorf("agent binary: %w", err)
	}
	if c.Endpoint == "" {
		return errors.New("AgentStart needs the agent endpoint URL the agents heart-beat to")
	}
	return nil
}

// agentStart is the AgentStart loop: it starts the agent on provided
// machines that have none.
type agentStart struct {
	cfg  AgentStartConfig
	conn *bmdb.Conn

	local localAgent
}

func (a *agentStart) Process() bmdb.Process { return bmdb.ProcessShepherdAgentStart }

func (a *agentStart) Claim(ctx context.Context, sess *bmdb.Session) (*bmdb.Work, error) {
	return sess.ClaimAgentStart(ctx)
}

func (a *agentStart) Do(ctx context.Context, t *Task) (func(context.Context, pgx.Tx) error, error) {
	addr := t.Machine.Address
	if addr == "" {
		return nil, fail(FailMachine, errors.New("machine has no SSH address at its provider"))
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, "22")
	}
	pinned, err := PinnedHostKey(ctx, a.conn.Pool, t.Machine.MachineID)
	if err != nil {
		return nil, fail(FailInternal, err)
	}

	t.SetDetail(ctx, "dialing "+addr)
	client, presented, err := a.dial(ctx, addr, pinned)
	if err != nil {
		return nil, err
	}
	defer client.Close()
	// Blocked SSH calls return when the connection closes: close it on
	// shutdown or session expiry.
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()
	if pinned == nil {
		err := t.Work.Session().Transact(ctx, func(tx pgx.Tx) error {
			now, err := PinHostKey(ctx, tx, t.Machine.MachineID, presented)
			if err == nil && !sameKey(now, presented) {
				err = &hostKeyMismatch{pinned: now, presented: presented}
			}
			return err
		})
		if err != nil {
			return nil, fail(FailHostKey, fmt.Errorf("pinning SSH host key of %s: %w", addr, err))
		}
		t.Log.Info("pinned SSH host key", "fingerprint", ssh.FingerprintSHA256(presented))
	}

	want, gz, err := a.local.of(ctx, a.cfg.AgentBinary)
	if err != nil {
		return nil, fail(FailInternal, fmt.Errorf("hashing the agent binary: %w", err))
	}
	t.SetDetail(ctx, "checking the agent on the machine")
	var have bool
	err = a.step(ctx, client, a.cfg.ExecTimeout, "checking the agent on the machine", FailUpload, func() error {
		have, err = a.hasAgent(client, want)
		return err
	})
	if err != nil {
		return nil, err
	}
	if !have {
		t.SetDetail(ctx, "uploading agent")
		err = a.step(ctx, client, a.cfg.UploadTimeout, "uploading the agent", FailUpload, func() error {
			err := a.uploadCompressed(client, gz)
			if errors.Is(err, errNoGzip) {
				return a.upload(client)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}

	t.SetDetail(ctx, "starting agent")
	init := agentproto.Init{MachineID: t.Machine.MachineID.String(), Endpoint: a.cfg.Endpoint, EndpointCA: a.cfg.EndpointCA}
	if len(a.cfg.MoreEndpoints) > 0 {
		init.Endpoints = append([]string{a.cfg.Endpoint}, a.cfg.MoreEndpoints...)
	}
	var key ed25519.PublicKey
	err = a.step(ctx, client, a.cfg.ExecTimeout, "running the agent", FailExec, func() error {
		key, err = a.run(client, init)
		return err
	})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, tx pgx.Tx) error {
		return bmdb.SetAgentStarted(ctx, tx, t.Machine.MachineID, key)
	}, nil
}

// dial connects and does the SSH handshake within DialTimeout, checking the
// host key against pinned (nil: any key, which the caller then pins). It
// returns the key the machine presented.
func (a *agentStart) dial(ctx context.Context, addr string, pinned ssh.PublicKey) (*ssh.Client, ssh.PublicKey, error) {
	dctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	var presented ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User: a.cfg.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(a.cfg.Signer)},
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			presented = key
			if pinned != nil && !sameKey(pinned, key) {
				return &hostKeyMismatch{pinned: pinned, presented: key}
			}
			return nil
		},
		HostKeyAlgorithms: hostKeyAlgorithms(pinned),
	}
	nc, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, fail(FailDial, fmt.Errorf("dialing SSH at %s: %w", addr, err))
	}
	deadline, _ := dctx.Deadline()
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(dctx, func() { nc.Close() })
	sc, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	stopped := stop()
	if err != nil {
		nc.Close()
		var mismatch *hostKeyMismatch
		switch {
		case errors.As(err, &mismatch):
			return nil, nil, fail(FailHostKey, fmt.Errorf("refusing %s: %v; if the machine was reinstalled, forget the pinned key (bmctl shepherd forget-host-key)", addr, mismatch))
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case strings.Contains(err.Error(), "unable to authenticate"):
			return nil, nil, fail(FailAuth, fmt.Errorf("%s did not accept the shepherd's SSH key %s (install its .pub in the SSH user's authorized_keys): %w",
				addr, ssh.FingerprintSHA256(a.cfg.Signer.PublicKey()), err))
		case !stopped || dctx.Err() != nil:
			return nil, nil, fail(FailTimeout, fmt.Errorf("SSH handshake with %s did not complete within %s", addr, a.cfg.DialTimeout))
		}
		return nil, nil, fail(FailDial, fmt.Errorf("SSH handshake with %s: %w", addr, err))
	}
	_ = nc.SetDeadline(time.Time{})
	return ssh.NewClient(sc, chans, reqs), presented, nil
}

// hostKeyAlgorithms makes a pinned machine offer the pinned key's type, so
// that a machine with several host keys is compared on the same one.
func hostKeyAlgorithms(pinned ssh.PublicKey) []string {
	if pinned == nil {
		return nil
	}
	switch pinned.Type() {
	case ssh.KeyAlgoRSA:
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	default:
		return []string{pinned.Type()}
	}
}

// step runs fn with a time bound, closing the SSH connection when the bound
// or ctx ends so that fn returns.
func (a *agentStart) step(ctx context.Context, client *ssh.Client, bound time.Duration, what string, class FailureClass, fn func() error) error {
	sctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	stop := context.AfterFunc(sctx, func() { client.Close() })
	defer stop()
	err := fn()
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case sctx.Err() != nil:
		return fail(FailTimeout, fmt.Errorf("%s: no answer within %s", what, bound))
	}
	var f *failure
	if errors.As(err, &f) {
		return err
	}
	return fail(class, fmt.Errorf("%s: %w", what, err))
}

// hasAgent reports whether RemotePath is an executable file whose SHA-256
// is want, so that a restart does not move the binary again. Any answer but
// a matching digest (no file, no sha256sum, not executable) means upload.
func (a *agentStart) hasAgent(client *ssh.Client, want string) (bool, error) {
	sess, err := client.NewSession()
	if err != nil {
		return false, fmt.Errorf("opening an SSH session: %w", err)
	}
	defer sess.Close()
	stdout := &capBuffer{max: 4096}
	sess.Stdout = stdout
	p := shellQuote(a.cfg.RemotePath)
	err = sess.Run("test -x " + p + " && sha256sum " + p)
	var exit *ssh.ExitError
	switch {
	case errors.As(err, &exit):
		return false, nil
	case err != nil:
		return false, err
	}
	got, _, _ := strings.Cut(stdout.String(), " ")
	return got == want, nil
}

// ctxReader reads r until ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// localAgent caches the agent binary's SHA-256 and its gzip form while the
// file's size and modification time stay the same: hashing and compressing
// 30 MB for every machine would cost more than they save, and a replaced
// binary must be noticed.
type localAgent struct {
	mu      sync.Mutex
	size    int64
	modTime time.Time
	hex     string
	gz      []byte
}

// of returns the binary's SHA-256 in hex and its gzip-compressed bytes. It
// gives up when ctx ends: compressing a large binary takes seconds, and a
// shutdown or a fenced lease must not wait for it.
func (d *localAgent) of(ctx context.Context, path string) (string, []byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.hex != "" && st.Size() == d.size && st.ModTime().Equal(d.modTime) {
		return d.hex, d.gz, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	h := sha256.New()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := io.Copy(io.MultiWriter(h, zw), ctxReader{ctx, f}); err != nil {
		return "", nil, err
	}
	if err := zw.Close(); err != nil {
		return "", nil, err
	}
	d.size, d.modTime, d.hex, d.gz = st.Size(), st.ModTime(), hex.EncodeToString(h.Sum(nil)), gz.Bytes()
	return d.hex, d.gz, nil
}

// errNoGzip: the machine has no gzip to unpack a compressed upload.
var errNoGzip = errors.New("no gzip on the machine")

// uploadCompressed streams the gzip-compressed agent into gzip -dc on the
// machine, about half the bytes of the binary, and moves it into place
// as upload does.
func (a *agentStart) uploadCompressed(client *ssh.Client, gz []byte) error {
	sess, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("opening an SSH session: %w", err)
	}
	defer sess.Close()
	tmp, dst := shellQuote(a.cfg.RemotePath+".upload"), shellQuote(a.cfg.RemotePath)
	stderr := &capBuffer{max: 1024}
	sess.Stdin, sess.Stderr = bytes.NewReader(gz), stderr
	err = sess.Run("gzip -dc > " + tmp + " && chmod 755 " + tmp + " && mv -f " + tmp + " " + dst)
	var exit *ssh.ExitError
	switch {
	case errors.As(err, &exit) && exit.ExitStatus() == 127:
		return errNoGzip
	case errors.As(err, &exit):
		return fmt.Errorf("unpacking the agent to %s: exit status %d: %s", a.cfg.RemotePath, exit.ExitStatus(), strings.TrimSpace(stderr.String()))
	}
	return err
}

// upload copies the agent binary over SFTP, for machines without gzip, to
// a temporary name and renames it into place, so that an agent still
// running from an earlier attempt keeps its binary and nobody runs a
// half-written one.
func (a *agentStart) upload(client *ssh.Client) error {
	local, err := os.Open(a.cfg.AgentBinary)
	if err != nil {
		return fail(FailInternal, fmt.Errorf("opening the agent binary: %w", err))
	}
	defer local.Close()
	sc, err := sftp.NewClient(client)
	if err != nil {
		return fmt.Errorf("starting SFTP: %w", err)
	}
	defer sc.Close()
	tmp := a.cfg.RemotePath + ".upload"
	f, err := sc.Create(tmp)
	if err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	if _, err := f.ReadFrom(local); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := sc.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("making %s executable: %w", tmp, err)
	}
	if err := sc.PosixRename(tmp, a.cfg.RemotePath); err != nil {
		return fmt.Errorf("moving the agent to %s: %w", a.cfg.RemotePath, err)
	}
	return nil
}

// run starts the agent with init on its stdin and checks its reply.
func (a *agentStart) run(client *ssh.Client, init agentproto.Init) (ed25519.PublicKey, error) {
	sess, err := client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("opening an SSH session: %w", err)
	}
	defer sess.Close()
	in, err := json.Marshal(init)
	if err != nil {
		return nil, err
	}
	// Through a pipe rather than Stdin: an agent that exits without reading
	// its stdin must fail on its exit status and reply, not on our write.
	stdin, err := sess.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout := &capBuffer{max: agentproto.MaxReplySize + 1}
	stderr := &capBuffer{max: 2048}
	sess.Stdout, sess.Stderr = stdout, stderr
	cmd := shellQuote(a.cfg.RemotePath) + " agent"
	if err := sess.Start(cmd); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	go func() {
		_, _ = stdin.Write(in)
		_ = stdin.Close()
	}()
	if err := sess.Wait(); err != nil {
		var exit *ssh.ExitError
		var missing *ssh.ExitMissingError
		switch {
		case errors.As(err, &exit):
			return nil, fail(FailExec, fmt.Errorf("agent exited with status %d%s", exit.ExitStatus(), agentOutput(stdout, stderr)))
		case errors.As(err, &missing):
			return nil, fail(FailExec, fmt.Errorf("agent ended without an exit status (killed?)%s", agentOutput(stdout, stderr)))
		}
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	key, err := agentproto.ReadReply(bytes.NewReader(stdout.Bytes()), init)
	if err != nil {
		return nil, fail(FailReply, err)
	}
	return key, nil
}

// agentOutput renders what a failed agent said, for the failure cause.
func agentOutput(stdout, stderr *capBuffer) string {
	var parts []string
	var rep agentproto.Reply
	if json.Unmarshal(stdout.Bytes(), &rep) == nil && rep.Error != "" {
		parts = append(parts, "reported: "+rep.Error)
	} else if s := strings.TrimSpace(stdout.String()); s != "" {
		parts = append(parts, "stdout: "+truncate(s, 300))
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		parts = append(parts, "stderr: "+truncate(s, 500))
	}
	if len(parts) == 0 {
		return " and no output"
	}
	return "; " + strings.Join(parts, "; ")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// capBuffer keeps the first max bytes written and drops the rest without
// failing the writer, so a chatty agent cannot make the shepherd buffer
// without bound, nor stall the SSH channel.
type capBuffer struct {
	bytes.Buffer
	max int
}

func (b *capBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
