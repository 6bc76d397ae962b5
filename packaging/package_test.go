// Package packaging holds the Debian package's parts (nfpm.yaml, systemd
// units, maintainer scripts) and the test that builds, installs and removes
// the package on this machine.
package packaging

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bmctl/bmctl/internal/testwait"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

const stateDir = "/var/lib/bmctl"

// TestDebianPackage builds the package as make package does, checks its
// contents, installs it with dpkg -i, runs the installed bmctl, verifies the
// units with systemd-analyze, then removes it (config and state stay) and
// purges it (they go). It needs root, as CI has.
func TestDebianPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test installs a Debian package: run it as root (CI does)")
	}
	// Never clobber a real installation or someone's state: only what an
	// earlier run of this test left behind.
	if v, ok := installedVersion(); ok && !strings.Contains(v, "+pkgtest.") {
		t.Fatalf("bmctl %s is installed on this machine; this test would replace and purge it: run it elsewhere (CI) or dpkg --purge bmctl first", v)
	}
	if _, err := os.Stat(stateDir); err == nil {
		if _, ok := installedVersion(); !ok {
			t.Fatalf("%s exists and the bmctl package is not installed: it holds someone's state, which the purge at the end of this test would delete; move it away", stateDir)
		}
	}
	version := "0.0.0+pkgtest." + time.Now().UTC().Format("20060102150405")
	out := t.TempDir()
	build := exec.Command("../scripts/package.sh")
	build.Env = append(os.Environ(), "VERSION="+version, "OUT="+out)
	stdout, err := build.Output()
	if err != nil {
		t.Fatalf("make package: %v\n%s", err, stderrOf(err))
	}
	deb := strings.TrimSpace(string(stdout))
	if filepath.Base(deb) != "bmctl_"+version+"_amd64.deb" {
		t.Fatalf("package.sh built %q, want bmctl_%s_amd64.deb", deb, version)
	}

	info := run(t, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: bmctl", "Version: " + version, "Architecture: amd64", "Depends: passwd", "postinst", "prerm", "postrm", "conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	contents := run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"./usr/bin/bmctl",
		"./usr/lib/systemd/system/bmctl-shepherd.service",
		"./usr/lib/systemd/system/bmctl-endpoint.service",
		"./etc/bmctl/config.yaml",
		"./usr/share/bash-completion/completions/bmctl",
		"./usr/share/zsh/vendor-completions/_bmctl",
		"./usr/share/fish/vendor_completions.d/bmctl.fish",
		"./usr/share/man/man1/bmctl.1.gz",
		"./usr/share/man/man1/bmctl-shepherd-run.1.gz",
		"./usr/share/man/man1/bmctl-server.1.gz",
		"./usr/share/bmctl/prometheus/bmctl.rules.yml",
		"./usr/share/bmctl/grafana/bmctl-dashboard.json",
		"./usr/share/doc/bmctl/metrics.md",
	} {
		if !strings.Contains(contents, want+"\n") {
			t.Errorf("the package lacks %s", want)
		}
	}

	t.Cleanup(func() { dpkg(t, "--purge", "bmctl") }) // whatever fails below
	dpkg(t, "-i", deb)

	// The installed binary, stamped by the build.
	var v struct {
		Version       string `json:"version"`
		Commit        string `json:"commit"`
		BuildTime     string `json:"build_time"`
		SchemaVersion uint   `json:"schema_version"`
	}
	vj := run(t, "/usr/bin/bmctl", "--config", "/dev/null", "version", "-o", "json")
	if err := json.Unmarshal([]byte(vj), &v); err != nil {
		t.Fatalf("bmctl version -o json: %v\n%s", err, vj)
	}
	head := strings.TrimSpace(run(t, "git", "rev-parse", "HEAD"))
	if v.Version != version || v.Commit != head || v.SchemaVersion != bmdb.LatestVersion() {
		t.Errorf("installed bmctl version: %s; want version %s, commit %s, schema %d", vj, version, head, bmdb.LatestVersion())
	}
	if _, err := time.Parse(time.RFC3339, v.BuildTime); err != nil {
		t.Errorf("build time %q: %v", v.BuildTime, err)
	}

	// The user, and what it may read: the config (which may hold the
	// database password) is root's and bmctl's only.
	run(t, "id", "bmctl")
	if st := run(t, "stat", "-c", "%U:%G %a", "/etc/bmctl/config.yaml"); strings.TrimSpace(st) != "root:bmctl 640" {
		t.Errorf("/etc/bmctl/config.yaml is %s, want root:bmctl 640", st)
	}
	if st := run(t, "stat", "-c", "%U:%G", stateDir); strings.TrimSpace(st) != "bmctl:bmctl" {
		t.Errorf("%s is owned by %s, want bmctl:bmctl", stateDir, st)
	}
	// As the services run it: the default config, all comments, is valid.
	if view := run(t, "runuser", "-u", "bmctl", "--", "env", "BMCTL_CONFIG=/etc/bmctl/config.yaml", "/usr/bin/bmctl", "config", "view"); !strings.Contains(view, "config file: /etc/bmctl/config.yaml") {
		t.Errorf("bmctl config view as bmctl:\n%s", view)
	}

	units := []string{"/usr/lib/systemd/system/bmctl-shepherd.service", "/usr/lib/systemd/system/bmctl-endpoint.service"}
	run(t, "systemd-analyze", append([]string{"verify"}, units...)...)
	for _, u := range units {
		b, _ := os.ReadFile(u)
		for _, want := range []string{"User=bmctl", "ProtectSystem=strict", "NoNewPrivileges=yes", "StateDirectory=bmctl", "Restart=on-failure"} {
			if !strings.Contains(string(b), "\n"+want+"\n") {
				t.Errorf("%s lacks %s", u, want)
			}
		}
	}

	for _, page := range []string{"bmctl", "bmctl-shepherd-run", "bmctl-server", "bmctl-config-view", "bmctl-version"} {
		text := gunzip(t, "/usr/share/man/man1/"+page+".1.gz")
		if !strings.Contains(text, ".TH \"BMCTL\" \"1\"") {
			t.Errorf("%s.1 is no man page:\n%.300s", page, text)
		}
	}
	if m := gunzip(t, "/usr/share/man/man1/bmctl-shepherd-run.1.gz"); !strings.Contains(m, "agentstart-parallelism") {
		t.Errorf("bmctl-shepherd-run.1 does not document --agentstart-parallelism")
	}
	run(t, "bash", "-c", "source /usr/share/bash-completion/completions/bmctl && complete -p bmctl")

	// Remove: the program goes, the config and the state stay.
	if err := os.WriteFile(filepath.Join(stateDir, "kept"), []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkg(t, "-r", "bmctl")
	for _, gone := range append([]string{"/usr/bin/bmctl", "/usr/share/man/man1/bmctl.1.gz"}, units...) {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after dpkg -r (%v)", gone, err)
		}
	}
	for _, kept := range []string{"/etc/bmctl/config.yaml", filepath.Join(stateDir, "kept")} {
		if _, err := os.Stat(kept); err != nil {
			t.Errorf("dpkg -r did not keep %s: %v", kept, err)
		}
	}
	// Purge: the config and the state go too.
	dpkg(t, "--purge", "bmctl")
	for _, gone := range []string{"/etc/bmctl", stateDir} {
		if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after dpkg --purge (%v)", gone, err)
		}
	}
}

// installedVersion is the version of the bmctl package dpkg knows
// (installed, or removed with its config left).
func installedVersion() (string, bool) {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status} ${Version}", "bmctl").Output()
	if err != nil || !strings.Contains(string(out), "installed") && !strings.Contains(string(out), "config-files") {
		return "", false
	}
	f := strings.Fields(string(out))
	return f[len(f)-1], true
}

// dpkg runs dpkg with args, waiting while another dpkg or apt holds its
// lock (another engineer's setup installing packages).
func dpkg(t *testing.T, args ...string) {
	t.Helper()
	var out []byte
	var err error
	testwait.Until(10*time.Minute, func() bool {
		out, err = exec.Command("dpkg", args...).CombinedOutput()
		return err == nil || !strings.Contains(string(out), "lock")
	})
	if err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderrOf(err))
	}
	return string(out)
}

func stderrOf(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(b)
}
