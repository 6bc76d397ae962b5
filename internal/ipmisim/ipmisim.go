// Package ipmisim runs Debian's ipmi_sim (from openipmi) as a BMC for tests:
// one user, an IPMI v2.0 LAN channel on 127.0.0.1 at a free UDP port, and a
// chassis whose power state lives in a file its chassis_control script
// writes. A Machine (an sshsim.Machine) follows that state: powered off at
// once, powered on after a boot delay, as a real server whose SSH comes up
// after POST.
package ipmisim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Machine is what the chassis powers.
type Machine interface {
	PowerOff()
	PowerOn() error
}

// Config is one simulated BMC.
type Config struct {
	Username, Password string
	Machine            Machine
	// Boot is from power on to the machine powered (its SSH listening).
	Boot time.Duration
}

// BMC is a running ipmi_sim.
type BMC struct {
	cfg  Config
	dir  string
	addr string
	cmd  *exec.Cmd
	done chan struct{}
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	powered bool
	history []string
}

// ErrNotInstalled means ipmi_sim is missing.
var ErrNotInstalled = errors.New("ipmi_sim is not installed (Debian: apt-get install openipmi; make setup does it)")

const script = `#!/bin/sh
# chassis_control for ipmi_sim: "get power" / "set power 0|1".
state=%q
op=$1; shift
case $op in
get) for p in "$@"; do [ "$p" = power ] && echo "power:$(cat "$state")"; done ;;
set) while [ $# -ge 2 ]; do [ "$1" = power ] && echo "$2" > "$state.tmp" && mv "$state.tmp" "$state"; shift 2; done ;;
esac
exit 0
`

// New starts ipmi_sim in dir (a test's temporary directory).
func New(dir string, cfg Config) (*BMC, error) {
	bin, err := exec.LookPath("ipmi_sim")
	if err != nil {
		return nil, ErrNotInstalled
	}
	port, err := freeUDPPort()
	if err != nil {
		return nil, err
	}
	b := &BMC{cfg: cfg, dir: dir, addr: fmt.Sprintf("127.0.0.1:%d", port), done: make(chan struct{}), powered: true}
	state := filepath.Join(dir, "power")
	files := map[string]string{
		"power":      "1\n",
		"chassis.sh": fmt.Sprintf(script, state),
		"lan.conf": fmt.Sprintf(`name "bmctltest"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "%s"
  user 2 true "%s" "%s" admin 10 none md2 md5 straight
`, port, filepath.Join(dir, "chassis.sh"), cfg.Username, cfg.Password),
		"sim.emu": "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
	}
	for name, content := range files {
		mode := os.FileMode(0o600)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o700
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		return nil, err
	}
	out, err := os.Create(filepath.Join(dir, "ipmi_sim.log"))
	if err != nil {
		return nil, err
	}
	b.cmd = exec.Command(bin, "-c", filepath.Join(dir, "lan.conf"), "-f", filepath.Join(dir, "sim.emu"), "-s", filepath.Join(dir, "state"), "-n")
	b.cmd.Stdout, b.cmd.Stderr = out, out
	if err := b.cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("starting ipmi_sim: %w", err)
	}
	go func() {
		_ = b.cmd.Wait()
		out.Close()
		close(b.done)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	b.stop = cancel
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.follow(ctx, state)
	}()
	return b, nil
}

// Addr is the BMC's address, 127.0.0.1:port.
func (b *BMC) Addr() string { return b.addr }

// Log is what ipmi_sim wrote, for failing tests.
func (b *BMC) Log() string {
	data, _ := os.ReadFile(filepath.Join(b.dir, "ipmi_sim.log"))
	return string(data)
}

// PowerHistory is the chassis power states seen, "on" and "off", oldest
// first, starting with "on".
func (b *BMC) PowerHistory() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string{"on"}, b.history...)
}

// SetPower sets the chassis power at once, as someone pressing the button.
func (b *BMC) SetPower(on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	state := filepath.Join(b.dir, "power")
	if err := os.WriteFile(state+".tmp", []byte(v), 0o600); err != nil {
		return err
	}
	return os.Rename(state+".tmp", state)
}

// Close stops ipmi_sim (by its own pid) and the power follower.
func (b *BMC) Close() error {
	b.stop()
	b.wg.Wait()
	if b.cmd.Process != nil {
		_ = b.cmd.Process.Kill()
	}
	<-b.done
	return nil
}

// follow watches the power file and powers the machine to match.
func (b *BMC) follow(ctx context.Context, state string) {
	var bootAt time.Time
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, err := os.ReadFile(state)
		if err != nil {
			continue
		}
		on := strings.TrimSpace(string(data)) == "1"
		b.mu.Lock()
		changed := on != b.powered
		if changed {
			b.powered = on
			if on {
				b.history = append(b.history, "on")
			} else {
				b.history = append(b.history, "off")
			}
		}
		b.mu.Unlock()
		m := b.cfg.Machine
		switch {
		case changed && !on:
			bootAt = time.Time{}
			if m != nil {
				m.PowerOff()
			}
		case changed && on:
			bootAt = time.Now().Add(b.cfg.Boot)
		}
		if !bootAt.IsZero() && on && !time.Now().Before(bootAt) {
			bootAt = time.Time{}
			if m != nil {
				_ = m.PowerOn()
			}
		}
	}
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}
