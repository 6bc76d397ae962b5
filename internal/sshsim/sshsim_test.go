package sshsim

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/bmctl/bmctl/pkg/agentproto"
)

func clientKey(t *testing.T) ssh.Signer {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dial(m *Machine, s ssh.Signer) (*ssh.Client, error) {
	return ssh.Dial("tcp", m.Addr(), &ssh.ClientConfig{
		User:            "root",
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(s)},
		HostKeyCallback: ssh.FixedHostKey(m.HostKey()),
		Timeout:         5 * time.Second,
	})
}

func upload(t *testing.T, c *ssh.Client, path string, data []byte) {
	t.Helper()
	sc, err := sftp.NewClient(c)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	f, err := sc.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadFrom(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sc.Chmod(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestAgentStartsAfterUpload(t *testing.T) {
	key := clientKey(t)
	m, err := New(Config{AuthorizedKeys: []ssh.PublicKey{key.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c, err := dial(m, key)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Before the upload the binary is missing, as on a real machine.
	s, _ := c.NewSession()
	err = s.Run("/tmp/bmctl agent")
	var exit *ssh.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 127 {
		t.Fatalf("exec before upload: got %v, want exit status 127", err)
	}

	bin := make([]byte, 3<<20) // several SFTP chunks, written concurrently
	_, _ = rand.Read(bin)
	upload(t, c, "/tmp/bmctl", bin)
	u, ok := m.Uploaded("/tmp/bmctl")
	if !ok || u.Size != int64(len(bin)) || u.SHA256 != sha256.Sum256(bin) || u.Mode != 0o755 {
		t.Fatalf("upload recorded as %+v, want %d bytes, matching hash, mode 0755", u, len(bin))
	}

	init := agentproto.Init{MachineID: "m1", Endpoint: "https://127.0.0.1:1", EndpointCA: "ca"}
	in, _ := json.Marshal(init)
	s, _ = c.NewSession()
	s.Stdin = bytes.NewReader(in)
	var out bytes.Buffer
	s.Stdout = &out
	if err := s.Run("/tmp/bmctl agent"); err != nil {
		t.Fatalf("agent exec: %v", err)
	}
	pub, err := agentproto.ReadReply(&out, init)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(m.AgentKey().Public()) {
		t.Fatal("reply key is not the agent key the machine keeps")
	}
}

func TestUnauthorizedKeyRefused(t *testing.T) {
	m, err := New(Config{AuthorizedKeys: []ssh.PublicKey{clientKey(t).PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if c, err := dial(m, clientKey(t)); err == nil {
		c.Close()
		t.Fatal("a key not authorized was accepted")
	}
}

func TestPowerCycleDropsConnectionsAndComesBackOnSamePort(t *testing.T) {
	key := clientKey(t)
	m, err := New(Config{OnExec: Hang})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := m.Addr()
	c, err := dial(m, key)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := c.NewSession()
	done := make(chan error, 1)
	go func() { done <- s.Run("hang") }()

	m.PowerOff()
	if err := <-done; err == nil {
		t.Fatal("a hanging exec survived power off")
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Fatal("a powered-off machine accepted a connection")
	}
	if err := m.PowerCycle(context.Background(), 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if m.Addr() != addr || m.Boots() != 2 {
		t.Fatalf("after power cycle: addr %s boots %d, want %s and 2", m.Addr(), m.Boots(), addr)
	}
	c2, err := dial(m, key)
	if err != nil {
		t.Fatalf("dial after power on: %v", err)
	}
	c2.Close()
}

// toolsMachine is a machine whose exec handler must not run, and a client
// connected to it.
func toolsMachine(t *testing.T) (*Machine, *ssh.Client) {
	t.Helper()
	m, err := New(Config{OnExec: Fail("the agent must not run\n", 9)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	c, err := dial(m, clientKey(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return m, c
}

// TestDigestCheck answers the shepherd's digest line like a shell with
// coreutils: nothing and status 1 for a missing or non-executable file, else
// sha256sum's line; the upload's bytes are counted.
func TestDigestCheck(t *testing.T) {
	m, c := toolsMachine(t)
	const line = `test -x '/tmp/bmctl' && sha256sum '/tmp/bmctl'`
	run := func() (string, error) {
		s, _ := c.NewSession()
		defer s.Close()
		out, err := s.Output(line)
		return string(out), err
	}

	var exit *ssh.ExitError
	if out, err := run(); !errors.As(err, &exit) || exit.ExitStatus() != 1 || out != "" {
		t.Fatalf("digest before upload: %q, %v; want no output and exit status 1", out, err)
	}
	bin := make([]byte, 1<<20)
	_, _ = rand.Read(bin)
	upload(t, c, "/tmp/bmctl", bin)
	want := fmt.Sprintf("%x  /tmp/bmctl\n", sha256.Sum256(bin))
	if out, err := run(); err != nil || out != want {
		t.Fatalf("digest after upload: %q, %v; want %q", out, err, want)
	}
	if got := m.BytesReceived(); got != int64(len(bin)) {
		t.Errorf("bytes received %d, want the upload's %d", got, len(bin))
	}
	if m.DigestChecks() != 2 || len(m.Execs()) != 0 {
		t.Errorf("%d digest checks and exec handler runs %q; want 2 and none", m.DigestChecks(), m.Execs())
	}
}

// TestUnpackCompressedUpload: the shepherd's gzip line stores the unpacked
// file, executable, and counts the compressed bytes; without gzip the shell
// answers 127.
func TestUnpackCompressedUpload(t *testing.T) {
	m, c := toolsMachine(t)
	const line = `gzip -dc > '/tmp/a.upload' && chmod 755 '/tmp/a.upload' && mv -f '/tmp/a.upload' '/tmp/a'`
	run := func(stdin []byte) error {
		s, _ := c.NewSession()
		defer s.Close()
		s.Stdin = bytes.NewReader(stdin)
		return s.Run(line)
	}
	bin := bytes.Repeat([]byte("agent "), 100_000)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bin)
	zw.Close()
	if err := run(gz.Bytes()); err != nil {
		t.Fatalf("unpack: %v", err)
	}
	u, ok := m.Uploaded("/tmp/a")
	if !ok || u.SHA256 != sha256.Sum256(bin) || u.Mode != 0o755 || m.BytesReceived() != int64(gz.Len()) {
		t.Errorf("unpacked %+v (%v), %d bytes received; want the binary, mode 0755, %d compressed bytes", u, ok, m.BytesReceived(), gz.Len())
	}
	var exit *ssh.ExitError
	if err := run([]byte("not gzip")); !errors.As(err, &exit) || exit.ExitStatus() != 1 {
		t.Errorf("unpack of garbage: %v, want exit status 1", err)
	}
	m.SetGzip(false)
	if err := run(gz.Bytes()); !errors.As(err, &exit) || exit.ExitStatus() != 127 {
		t.Errorf("unpack without gzip: %v, want exit status 127", err)
	}
	if len(m.Execs()) != 0 {
		t.Errorf("the exec handler ran %q; the machine's tools answer these lines", m.Execs())
	}
}
