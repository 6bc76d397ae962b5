package shepherd

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// LoadOrCreateKey reads the shepherd's SSH private key from path (OpenSSH or
// PEM format). If the file does not exist, it creates an ed25519 key there
// (mode 0600) and its public half in path.pub (authorized_keys format, for
// operators to install on machines), and reports created.
func LoadOrCreateKey(path string) (signer ssh.Signer, created bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading SSH key: %w", err)
	}
	signer, err = ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, false, fmt.Errorf("SSH key %s is not a usable private key (%v); point --ssh-key at an unencrypted OpenSSH key, or at a missing file to create one", path, err)
	}
	return signer, false, nil
}

func createKey(path string) (ssh.Signer, bool, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, err
	}
	block, err := ssh.MarshalPrivateKey(key, "bmctl shepherd")
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("creating SSH key directory: %w", err)
	}
	// O_EXCL: two shepherds starting at once must end up with one key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		s, _, err := LoadOrCreateKey(path)
		return s, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("creating SSH key: %w", err)
	}
	if err := pem.Encode(f, block); err != nil {
		f.Close()
		return nil, false, fmt.Errorf("writing SSH key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, false, fmt.Errorf("writing SSH key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, false, err
	}
	if err := os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		return nil, false, fmt.Errorf("writing SSH public key: %w", err)
	}
	return signer, true, nil
}
