package devca_test

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bmctl/bmctl/pkg/devca"
)

func TestEnsureCreatesOnceAndKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var wg sync.WaitGroup
	cas := make([]*devca.CA, 4)
	for i := range cas {
		wg.Go(func() {
			ca, err := devca.Ensure(dir)
			if err != nil {
				t.Error(err)
				return
			}
			cas[i] = ca
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	onDisk, err := os.ReadFile(devca.CertPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	for i, ca := range cas {
		if !bytes.Equal(ca.CertPEM, onDisk) {
			t.Errorf("concurrent Ensure %d returned a CA other than the one on disk", i)
		}
	}
	again, err := devca.Ensure(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.CertPEM, onDisk) {
		t.Error("a second Ensure replaced the CA")
	}
	if fi, err := os.Stat(filepath.Join(dir, devca.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key file mode: %v %v, want 0600", fi.Mode(), err)
	}
}

func TestServerCertificateChainsToCA(t *testing.T) {
	ca, err := devca.Ensure(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1", "fleet.example"})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	for _, host := range []string{"127.0.0.1", "fleet.example"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("certificate for %s: %v", host, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "other.example"}); err == nil {
		t.Error("certificate verified for a host it was not issued for")
	}
}

func TestHalfACAIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := devca.Ensure(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(devca.CertPath(dir)); err != nil {
		t.Fatal(err)
	}
	_, err := devca.Ensure(dir)
	if err == nil || !strings.Contains(err.Error(), "remove the directory") {
		t.Fatalf("Ensure over a CA without its certificate: %v, want a refusal saying what to do", err)
	}
	if _, serr := os.Stat(devca.CertPath(dir)); serr == nil {
		t.Error("Ensure recreated a certificate beside the old key")
	}
}
