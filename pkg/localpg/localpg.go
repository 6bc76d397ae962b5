// Package localpg runs a private PostgreSQL cluster from the system's server
// binaries: a data directory, a Unix socket in a private directory and no TCP
// listener. It backs the throwaway databases of tests and the embedded default
// database people get when they configure none.
package localpg

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoServer is returned when no PostgreSQL server binaries can be found.
var ErrNoServer = errors.New("no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and pg_config --bindir); install them with: apt-get install -y postgresql")

// Cluster is a PostgreSQL cluster living in Dir: Dir/data holds the data and
// Dir/socket the Unix socket.
type Cluster struct {
	Dir string
	// Fast turns fsync and full-page writes off: for throwaway test clusters.
	Fast bool
	// Log receives the server's log; defaults to Dir/postgres.log.
	LogFile string
	// Settings are extra server settings ("synchronous_standby_names='*'").
	Settings []string

	bin  string
	cred *syscall.Credential
}

// DataDir is where the cluster's files are.
func (c *Cluster) DataDir() string { return filepath.Join(c.Dir, "data") }

// SocketDir is the directory of the cluster's Unix socket.
func (c *Cluster) SocketDir() string { return filepath.Join(c.Dir, "socket") }

func (c *Cluster) logFile() string {
	if c.LogFile != "" {
		return c.LogFile
	}
	return filepath.Join(c.Dir, "postgres.log")
}

// URL is a libpq connection URL for database db over the cluster's socket.
func (c *Cluster) URL(db string) string {
	u := url.URL{Scheme: "postgres", Path: "/" + db, User: url.User(c.superuser())}
	q := url.Values{}
	q.Set("host", c.SocketDir())
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

// superuser is the role initdb creates: the OS user the server runs as.
func (c *Cluster) superuser() string {
	if os.Geteuid() == 0 {
		return "postgres"
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "postgres"
}

// FindBinDir returns the directory of the newest installed PostgreSQL server.
func FindBinDir() (string, error) {
	if d := os.Getenv("BMCTL_PG_BINDIR"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgMajor(dirs[i]) > pgMajor(dirs[j]) })
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) {
			return d, nil
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if isExec(filepath.Join(d, "initdb")) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNoServer
}

func pgMajor(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

// prepare finds binaries and, when running as root, the unprivileged account
// the server must run as (initdb and postgres refuse to run as root).
func (c *Cluster) prepare() error {
	if c.bin != "" {
		return nil
	}
	bin, err := FindBinDir()
	if err != nil {
		return err
	}
	c.bin = bin
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return fmt.Errorf("running as root needs the 'postgres' account to run the server (apt-get install -y postgresql creates it): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	return nil
}

func (c *Cluster) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, name), args...)
	cmd.Dir = c.Dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// chown hands a path to the server's account when running as root.
func (c *Cluster) chown(p string) error {
	if c.cred == nil {
		return nil
	}
	return os.Chown(p, int(c.cred.Uid), int(c.cred.Gid))
}

// Initialized reports whether the cluster's data directory exists.
func (c *Cluster) Initialized() bool {
	_, err := os.Stat(filepath.Join(c.DataDir(), "PG_VERSION"))
	return err == nil
}

// Init creates the cluster if it does not exist yet.
func (c *Cluster) Init(ctx context.Context) error {
	if err := c.prepare(); err != nil {
		return err
	}
	if c.Initialized() {
		return nil
	}
	if err := c.makeDirs(); err != nil {
		return err
	}
	cmd := c.command(ctx, "initdb", "-D", c.DataDir(), "-U", c.superuser(), "-A", "trust", "-E", "UTF8", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb in %s failed: %v: %s", c.DataDir(), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start(ctx context.Context) error {
	if err := c.Init(ctx); err != nil {
		return err
	}
	if c.Running() {
		return nil
	}
	opts := []string{
		"-k " + c.SocketDir(),
		"-c listen_addresses=''",
		"-c max_connections=200",
		// bmctl's queries are short; JIT compiling the views' wide plans
		// cost half a second each (see bmdb.Open).
		"-c jit=off",
		"-c shared_buffers=128MB",
	}
	if c.Fast {
		opts = append(opts, "-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off")
	}
	for _, st := range c.Settings {
		opts = append(opts, "-c "+st)
	}
	lf := c.logFile()
	if f, err := os.OpenFile(lf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
		f.Close()
		_ = c.chown(lf)
	}
	cmd := c.command(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", c.DataDir(), "-l", lf, "-o", strings.Join(opts, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("starting PostgreSQL in %s failed (log: %s): %v: %s", c.DataDir(), lf, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Running reports whether the cluster's server is up.
func (c *Cluster) Running() bool {
	if err := c.prepare(); err != nil || !c.Initialized() {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.command(ctx, "pg_ctl", "status", "-D", c.DataDir()).Run() == nil
}

// Stop stops the server (fast shutdown). Stopping a stopped cluster is fine.
func (c *Cluster) Stop(ctx context.Context) error {
	if !c.Running() {
		return nil
	}
	cmd := c.command(ctx, "pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", c.DataDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("stopping PostgreSQL in %s failed: %v: %s", c.DataDir(), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// makeDirs creates the cluster's directories for the server's account.
func (c *Cluster) makeDirs() error {
	for _, d := range []string{c.Dir, c.DataDir(), c.SocketDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := c.chown(d); err != nil {
			return err
		}
	}
	if c.cred != nil {
		// The server's account must be able to reach Dir, which may sit under a
		// root-owned temporary directory.
		if err := os.Chmod(c.Dir, 0o755); err != nil {
			return err
		}
		for p := filepath.Dir(c.Dir); p != "/" && p != "."; p = filepath.Dir(p) {
			if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
				_ = os.Chmod(p, st.Mode().Perm()|0o011)
			}
		}
	}
	return nil
}

// InitStandby makes the cluster a streaming standby of primary, from a base
// backup (pg_basebackup -R) over primary's socket. Start it afterwards.
func (c *Cluster) InitStandby(ctx context.Context, primary *Cluster) error {
	if err := c.prepare(); err != nil {
		return err
	}
	if err := c.makeDirs(); err != nil {
		return err
	}
	cmd := c.command(ctx, "pg_basebackup", "-h", primary.SocketDir(), "-U", primary.superuser(), "-D", c.DataDir(), "-R", "-X", "stream", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pg_basebackup into %s failed: %v: %s", c.DataDir(), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Promote turns a standby into a primary and waits until it accepts writes.
func (c *Cluster) Promote(ctx context.Context) error {
	cmd := c.command(ctx, "pg_ctl", "promote", "-w", "-t", "60", "-D", c.DataDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("promoting %s failed: %v: %s", c.DataDir(), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// CreateDatabase creates database name if it does not exist.
func (c *Cluster) CreateDatabase(ctx context.Context, name string) error {
	cmd := c.command(ctx, "psql", "-X", "-q", "-h", c.SocketDir(), "-U", c.superuser(), "-d", "postgres",
		"-tAc", fmt.Sprintf("SELECT 1 FROM pg_database WHERE datname = '%s'", name))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("checking for database %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	if strings.TrimSpace(string(out)) == "1" {
		return nil
	}
	cmd = c.command(ctx, "createdb", "-h", c.SocketDir(), "-U", c.superuser(), name)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("creating database %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
