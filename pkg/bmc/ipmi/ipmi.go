// Package ipmi controls a machine's power through its BMC's IPMI v2.0 LAN
// interface, by running Debian's ipmitool (-I lanplus). The password reaches
// ipmitool through its environment (-E, IPMI_PASSWORD), never its command
// line, which every user of the host can read. Cipher suite 3 is tried
// first, then 17 (SHA-256, what newer BMCs insist on); the one that worked
// is kept for the BMC.
package ipmi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/bmctl/bmctl/pkg/bmc"
)

// CipherSuites are tried in this order until one establishes a session.
var CipherSuites = []int{3, 17}

// Config is one BMC.
type Config struct {
	// Address is host or host:port (port 623 if left out).
	Address  string
	Username string
	Password string
	// Timeout bounds one ipmitool run. Default 30s.
	Timeout time.Duration
	// Tool is the ipmitool executable. Default "ipmitool" from PATH.
	Tool string
}

// Client runs ipmitool against one BMC, one command at a time.
type Client struct {
	cfg        Config
	host, port string
	sem        chan struct{}
	cipher     int // the suite that worked; 0 until one did
}

var _ bmc.Controller = (*Client)(nil)

// ErrNoTool means ipmitool is not installed.
var ErrNoTool = errors.New("ipmitool is not installed (Debian: apt-get install ipmitool)")

// New checks cfg; it does not contact the BMC.
func New(cfg Config) (*Client, error) {
	host, port, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		host, port = strings.Trim(cfg.Address, "[]"), "623"
	}
	if n, err := strconv.Atoi(port); host == "" || strings.ContainsAny(host, "/ ") || err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("ipmi address %q is not host or host:port", cfg.Address)
	}
	if cfg.Username == "" {
		return nil, fmt.Errorf("ipmi BMC %s: no username", cfg.Address)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Tool == "" {
		cfg.Tool = "ipmitool"
	}
	return &Client{cfg: cfg, host: host, port: port, sem: make(chan struct{}, 1)}, nil
}

func (c *Client) Kind() string    { return "ipmi" }
func (c *Client) Address() string { return c.cfg.Address }

// Close has nothing to release: every ipmitool run closes its session.
func (c *Client) Close(context.Context) error { return nil }

// Status reads the chassis power state. IPMI has no list of allowed resets;
// these are the ones bmctl uses.
func (c *Client) Status(ctx context.Context) (bmc.Status, error) {
	out, err := c.run(ctx, "chassis", "power", "status")
	if err != nil {
		return bmc.Status{}, err
	}
	st := bmc.Status{Resets: []bmc.ResetType{bmc.ResetPowerCycle, bmc.ResetForceOff, bmc.ResetOn}}
	power, ok := parsePowerStatus(out)
	if !ok {
		return st, fmt.Errorf("ipmitool chassis power status at %s: unexpected answer %q", c.cfg.Address, strings.TrimSpace(out))
	}
	st.Power = power
	return st, nil
}

// parsePowerStatus reads ipmitool's one line "Chassis Power is on|off". More
// lines are not that answer, whatever the last one says (FuzzParsePowerStatus).
func parsePowerStatus(out string) (bmc.PowerState, bool) {
	s := strings.ToLower(strings.TrimSpace(out))
	if strings.ContainsAny(s, "\r\n") {
		return "", false
	}
	switch {
	case strings.HasSuffix(s, " is on"):
		return bmc.PowerOn, true
	case strings.HasSuffix(s, " is off"):
		return bmc.PowerOff, true
	}
	return "", false
}

// Reset runs the chassis power command for t.
func (c *Client) Reset(ctx context.Context, t bmc.ResetType) error {
	var verb string
	switch t {
	case bmc.ResetOn, bmc.ResetForceOn:
		verb = "on"
	case bmc.ResetForceOff:
		verb = "off"
	case bmc.ResetPowerCycle:
		verb = "cycle"
	case bmc.ResetForceRestart:
		verb = "reset"
	default:
		return fmt.Errorf("%w: %s over IPMI", bmc.ErrNotAllowed, t)
	}
	_, err := c.run(ctx, "chassis", "power", verb)
	return err
}

// run runs one ipmitool command, trying the cipher suites in turn until one
// establishes a session.
func (c *Client) run(ctx context.Context, args ...string) (string, error) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("waiting for another operation on BMC %s: %w", c.cfg.Address, ctx.Err())
	}
	defer func() { <-c.sem }()

	suites := CipherSuites
	if c.cipher != 0 {
		suites = []int{c.cipher}
	}
	what := "ipmitool " + strings.Join(args, " ") + " at " + c.cfg.Address
	var failures []string
	for _, cs := range suites {
		out, stderr, err := c.exec(ctx, cs, args)
		if err == nil {
			c.cipher = cs
			return out, nil
		}
		if errors.Is(err, ErrNoTool) || ctx.Err() != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		msg := err.Error()
		if stderr != "" {
			msg += ": " + stderr
		}
		failures = append(failures, fmt.Sprintf("cipher suite %d: %s", cs, msg))
		if !sessionFailure(stderr) {
			// The session worked and the command failed: another suite
			// would not help.
			break
		}
	}
	return "", fmt.Errorf("%s: %s", what, strings.Join(failures, "; "))
}

// sessionFailure reports whether ipmitool's stderr says no session could be
// established (so another cipher suite may work).
func sessionFailure(stderr string) bool {
	s := strings.ToLower(stderr)
	return strings.Contains(s, "unable to establish") || strings.Contains(s, "open session") ||
		strings.Contains(s, "cipher suite") || strings.Contains(s, "rakp")
}

const stderrLimit = 1024

func (c *Client) exec(parent context.Context, cipher int, args []string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(parent, c.cfg.Timeout)
	defer cancel()
	argv := []string{"-I", "lanplus", "-H", c.host, "-p", c.port, "-U", c.cfg.Username, "-E", "-C", strconv.Itoa(cipher), "-N", "2", "-R", "2"}
	cmd := exec.CommandContext(ctx, c.cfg.Tool, append(argv, args...)...)
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IPMI_PASSWORD=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "IPMI_PASSWORD="+c.cfg.Password)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = time.Second
	err = cmd.Run()
	stderr = strings.Join(strings.Fields(errb.String()), " ")
	if len(stderr) > stderrLimit {
		stderr = stderr[:stderrLimit] + "..."
	}
	stderr = strings.ToValidUTF8(stderr, "?")
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return "", "", ErrNoTool
	case err != nil && parent.Err() != nil:
		return "", stderr, parent.Err()
	case err != nil && ctx.Err() != nil:
		return "", stderr, fmt.Errorf("no answer within %s: %w", c.cfg.Timeout, ctx.Err())
	}
	return out.String(), stderr, err
}
