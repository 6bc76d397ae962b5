package sshsim

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/pkg/sftp"
)

// Upload is a file written over SFTP since the last power-on.
type Upload struct {
	Path   string
	Size   int64
	SHA256 [32]byte
	Mode   os.FileMode
	// Data is the content, only with Config.KeepUploads.
	Data []byte
}

// Uploads returns the files uploaded since the last power-on, by path.
func (m *Machine) Uploads() map[string]Upload {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Upload, len(m.uploads))
	for k, v := range m.uploads {
		out[k] = v
	}
	return out
}

// Uploaded returns one uploaded file.
func (m *Machine) Uploaded(p string) (Upload, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.uploads[path.Clean(p)]
	return u, ok
}

func (m *Machine) sftpHandlers() sftp.Handlers {
	fs := &fileSystem{m: m}
	return sftp.Handlers{FileGet: fs, FilePut: fs, FileCmd: fs, FileList: fs}
}

// fileSystem is the machine's flat, write-mostly file system: uploads are
// hashed as they stream in, so a simulated machine does not hold a binary.
type fileSystem struct{ m *Machine }

func (fs *fileSystem) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	u, ok := fs.m.Uploaded(r.Filepath)
	if !ok {
		return nil, os.ErrNotExist
	}
	if !fs.m.cfg.KeepUploads {
		return nil, os.ErrPermission
	}
	return bytes.NewReader(u.Data), nil
}

func (fs *fileSystem) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	w := &uploadWriter{m: fs.m, path: path.Clean(r.Filepath), h: sha256.New(), pending: map[int64][]byte{}}
	if fs.m.cfg.KeepUploads {
		w.data = &bytes.Buffer{}
	}
	return w, nil
}

func (fs *fileSystem) Filecmd(r *sftp.Request) error {
	m := fs.m
	m.mu.Lock()
	defer m.mu.Unlock()
	p := path.Clean(r.Filepath)
	switch r.Method {
	case "Setstat":
		u, ok := m.uploads[p]
		if !ok {
			return os.ErrNotExist
		}
		if r.AttrFlags().Permissions {
			u.Mode = r.Attributes().FileMode().Perm()
			m.uploads[p] = u
		}
		return nil
	case "Remove":
		if _, ok := m.uploads[p]; !ok {
			return os.ErrNotExist
		}
		delete(m.uploads, p)
		return nil
	case "Rename", "PosixRename":
		u, ok := m.uploads[p]
		if !ok {
			return os.ErrNotExist
		}
		delete(m.uploads, p)
		u.Path = path.Clean(r.Target)
		m.uploads[u.Path] = u
		return nil
	case "Mkdir":
		return nil
	}
	return sftp.ErrSSHFxOpUnsupported
}

func (fs *fileSystem) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	m := fs.m
	m.mu.Lock()
	defer m.mu.Unlock()
	p := path.Clean(r.Filepath)
	switch r.Method {
	case "Stat":
		if u, ok := m.uploads[p]; ok {
			return listerAt{fileInfo{u}}, nil
		}
		if p == "/" || p == "/tmp" {
			return listerAt{fileInfo{Upload{Path: p, Mode: os.ModeDir | 0o755}}}, nil
		}
		return nil, os.ErrNotExist
	case "List":
		var l listerAt
		for _, u := range m.uploads {
			if path.Dir(u.Path) == p {
				l = append(l, fileInfo{u})
			}
		}
		sort.Slice(l, func(i, j int) bool { return l[i].Name() < l[j].Name() })
		return l, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

// uploadWriter hashes an upload in order; the client writes chunks
// concurrently, so chunks that arrive early wait in pending.
type uploadWriter struct {
	m    *Machine
	path string

	mu      sync.Mutex
	next    int64
	pending map[int64][]byte
	h       hash.Hash
	data    *bytes.Buffer
	failed  error
}

func (w *uploadWriter) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if off < w.next {
		w.failed = fmt.Errorf("sshsim: rewriting bytes at %d of %s is not supported", off, w.path)
		return 0, w.failed
	}
	w.pending[off] = bytes.Clone(p)
	w.m.mu.Lock()
	w.m.received += int64(len(p))
	w.m.mu.Unlock()
	for {
		chunk, ok := w.pending[w.next]
		if !ok {
			break
		}
		delete(w.pending, w.next)
		w.h.Write(chunk)
		if w.data != nil {
			w.data.Write(chunk)
		}
		w.next += int64(len(chunk))
	}
	return len(p), nil
}

func (w *uploadWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != nil {
		return w.failed
	}
	if len(w.pending) > 0 {
		return errors.New("sshsim: upload has holes")
	}
	u := Upload{Path: w.path, Size: w.next, Mode: 0o644}
	copy(u.SHA256[:], w.h.Sum(nil))
	if w.data != nil {
		u.Data = w.data.Bytes()
	}
	w.m.mu.Lock()
	if old, ok := w.m.uploads[w.path]; ok {
		u.Mode = old.Mode
	}
	w.m.uploads[w.path] = u
	w.m.mu.Unlock()
	return nil
}

type fileInfo struct{ u Upload }

func (f fileInfo) Name() string       { return path.Base(f.u.Path) }
func (f fileInfo) Size() int64        { return f.u.Size }
func (f fileInfo) Mode() os.FileMode  { return f.u.Mode }
func (f fileInfo) ModTime() time.Time { return time.Time{} }
func (f fileInfo) IsDir() bool        { return f.u.Mode.IsDir() }
func (f fileInfo) Sys() any           { return nil }

type listerAt []os.FileInfo

func (l listerAt) ListAt(out []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	if n < len(out) {
		return n, io.EOF
	}
	return n, nil
}

// BytesReceived counts the bytes written to the machine over SFTP since it
// was created, power cycles included: what delivering files cost the wire.
func (m *Machine) BytesReceived() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.received
}
