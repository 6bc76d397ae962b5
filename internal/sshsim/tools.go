package sshsim

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"path"
	"regexp"
)

// The machine's own tools: the few shell lines the shepherd sends, answered
// as a shell with coreutils and gzip would, whatever the exec handler does.

// digestRE is the shepherd's check whether an executable file already holds
// its agent: `test -x 'P' && sha256sum 'P'`.
var digestRE = regexp.MustCompile(`^test -x '([^']+)' && sha256sum '([^']+)'$`)

// digestCommand returns the path cmd asks the digest of.
func digestCommand(cmd string) (string, bool) {
	sub := digestRE.FindStringSubmatch(cmd)
	if sub == nil || sub[1] != sub[2] {
		return "", false
	}
	return sub[1], true
}

// DigestChecks counts the digest commands the machine answered.
func (m *Machine) DigestChecks() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.digests
}

// digest answers like test and coreutils' sha256sum over the uploads.
func (m *Machine) digest(p string, stdout io.Writer) int {
	m.mu.Lock()
	m.digests++
	u, ok := m.uploads[path.Clean(p)]
	m.mu.Unlock()
	if !ok || u.Mode&0o111 == 0 {
		return 1 // test -x fails silently
	}
	fmt.Fprintf(stdout, "%x  %s\n", u.SHA256, p)
	return 0
}

// unpackRE is the shepherd's compressed upload: gzip on stdin, unpacked
// to a temporary name, made executable and moved into place.
var unpackRE = regexp.MustCompile(`^gzip -dc > '([^']+)' && chmod 755 '([^']+)' && mv -f '([^']+)' '([^']+)'$`)

// unpackCommand returns the target path cmd unpacks stdin to.
func unpackCommand(cmd string) (string, bool) {
	sub := unpackRE.FindStringSubmatch(cmd)
	if sub == nil || sub[1] != sub[2] || sub[2] != sub[3] {
		return "", false
	}
	return sub[4], true
}

// SetGzip makes gzip present (the default) or missing on the machine.
func (m *Machine) SetGzip(present bool) {
	m.mu.Lock()
	m.noGzip = !present
	m.mu.Unlock()
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// unpack stores what gzip -dc makes of stdin at target, executable, and
// counts the compressed bytes as received.
func (m *Machine) unpack(target string, stdin io.Reader, stderr io.Writer) int {
	m.mu.Lock()
	missing := m.noGzip
	m.mu.Unlock()
	if missing {
		fmt.Fprintln(stderr, "sh: 1: gzip: not found")
		return 127
	}
	in := &countingReader{r: stdin}
	defer func() {
		m.mu.Lock()
		m.received += in.n
		m.mu.Unlock()
	}()
	zr, err := gzip.NewReader(in)
	if err != nil {
		fmt.Fprintln(stderr, "gzip: stdin: not in gzip format")
		return 1
	}
	h := sha256.New()
	var data *bytes.Buffer
	w := io.Writer(h)
	if m.cfg.KeepUploads {
		data = &bytes.Buffer{}
		w = io.MultiWriter(h, data)
	}
	size, err := io.Copy(w, zr)
	if err != nil {
		fmt.Fprintf(stderr, "gzip: stdin: %v\n", err)
		return 1
	}
	u := Upload{Path: path.Clean(target), Size: size, Mode: 0o755}
	copy(u.SHA256[:], h.Sum(nil))
	if data != nil {
		u.Data = data.Bytes()
	}
	m.mu.Lock()
	m.uploads[u.Path] = u
	m.mu.Unlock()
	return 0
}
