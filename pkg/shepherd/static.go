package shepherd

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
	"sync"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"
)

// StaticProvider is a fleet outside any cloud: machines listed in an
// inventory file (YAML, or JSON, which is YAML too) and rebooted by a command
// run per machine, typically through its BMC:
//
//	name: rack-a                     # provider type stored in BMDB; default "static"
//	reboot_command: ipmitool -I lanplus -H {{.BMC}} -U admin -E chassis power cycle
//	reboot_timeout: 10m              # command plus waiting for SSH to answer again
//	wait_for_ssh: true               # default true
//	machines:
//	  - id: a01                      # unique within the inventory
//	    address: 10.0.0.11:22        # SSH address; port 22 if left out
//	    location: ams1
//	    bmc: 10.1.0.11               # free-form, for the reboot command
//	    vars: {rack: a}              # free-form, as {{.Vars.rack}}
//
// The command runs with sh -c and the shepherd's environment (so secrets come
// from the environment, as ipmitool -E does, not from the file). The file is
// read again on every listing, so edits take effect without a restart.
type StaticProvider struct {
	path string

	mu  sync.Mutex
	inv *staticInventory
}

type staticInventory struct {
	Name          string          `yaml:"name"`
	RebootCommand string          `yaml:"reboot_command"`
	RebootTimeout time.Duration   `yaml:"reboot_timeout"`
	WaitForSSH    *bool           `yaml:"wait_for_ssh"`
	Machines      []StaticMachine `yaml:"machines"`

	reboot *template.Template
}

// StaticMachine is one machine of an inventory, as the reboot command
// template sees it (plus .Host and .Port, split from Address).
type StaticMachine struct {
	ID       string            `yaml:"id"`
	Address  string            `yaml:"address"`
	Location string            `yaml:"location"`
	BMC      string            `yaml:"bmc"`
	Vars     map[string]string `yaml:"vars"`
}

// NewStaticProvider loads the inventory at path, failing with a line-precise
// error if it is malformed.
func NewStaticProvider(path string) (*StaticProvider, error) {
	p := &StaticProvider{path: path}
	if _, err := p.load(); err != nil {
		return nil, err
	}
	return p, nil
}

// load reads and checks the inventory file and keeps it.
func (p *StaticProvider) load() (*staticInventory, error) {
	data, err := os.ReadFile(p.path)
	if err != nil {
		return nil, fmt.Errorf("reading inventory: %w", err)
	}
	inv, err := parseInventory(p.path, data)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inv != nil && inv.Name != p.inv.Name {
		return nil, fmt.Errorf("%s: name changed from %q to %q while running; restart the shepherd to rename the provider", p.path, p.inv.Name, inv.Name)
	}
	p.inv = inv
	return inv, nil
}

func (p *StaticProvider) current() *staticInventory {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inv
}

// parseInventory decodes an inventory and checks it; errors name the file
// and line.
func parseInventory(file string, data []byte) (*staticInventory, error) {
	var inv staticInventory
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&inv); err != nil {
		return nil, yamlError(file, err)
	}
	// Decode again as a node tree, for the lines of what is checked below.
	var doc yaml.Node
	_ = yaml.Unmarshal(data, &doc)
	line := func(path ...any) int { return nodeLine(&doc, path...) }
	errAt := func(l int, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", file, l, fmt.Sprintf(format, args...))
	}

	if inv.Name == "" {
		inv.Name = "static"
	}
	if inv.RebootTimeout <= 0 {
		inv.RebootTimeout = 10 * time.Minute
	}
	if inv.RebootCommand == "" {
		return nil, errAt(1, "reboot_command is missing: give the command that power-cycles one machine, e.g. ipmitool -I lanplus -H {{.BMC}} -U admin -E chassis power cycle")
	}
	tmpl, err := template.New("reboot_command").Option("missingkey=error").Parse(inv.RebootCommand)
	if err != nil {
		return nil, errAt(line("reboot_command"), "reboot_command is not a valid template: %v", err)
	}
	inv.reboot = tmpl
	seen := map[string]int{}
	for i, m := range inv.Machines {
		l := line("machines", i)
		if m.ID == "" {
			return nil, errAt(l, "machine %d has no id", i+1)
		}
		if first, dup := seen[m.ID]; dup {
			return nil, errAt(line("machines", i, "id"), "machine id %q repeats the one on line %d; ids must be unique", m.ID, first)
		}
		seen[m.ID] = line("machines", i, "id")
		if m.Address == "" {
			return nil, errAt(l, "machine %q has no address (host:port of its SSH server)", m.ID)
		}
		addr, ok := sshAddress(m.Address)
		if !ok {
			return nil, errAt(line("machines", i, "address"), "machine %q: address %q is not host or host:port", m.ID, m.Address)
		}
		inv.Machines[i].Address = addr
		if _, err := renderReboot(tmpl, inv.Machines[i]); err != nil {
			return nil, errAt(line("reboot_command"), "reboot_command does not render for machine %q: %v", m.ID, err)
		}
	}
	return &inv, nil
}

// sshAddress checks a host or host:port and adds port 22 if none is given.
func sshAddress(a string) (string, bool) {
	if strings.ContainsAny(a, "/ ") {
		return "", false
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		// A bare host, or a bare IPv6 address.
		if strings.Count(a, ":") == 1 || strings.HasPrefix(a, "[") {
			return "", false
		}
		return net.JoinHostPort(strings.Trim(a, "[]"), "22"), true
	}
	n, err := strconv.Atoi(port)
	if host == "" || err != nil || n < 1 || n > 65535 {
		return "", false
	}
	return a, true
}

// yamlError turns a YAML decoding error into lines of "file:line: what".
func yamlError(file string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var lines []string
		for _, e := range te.Errors {
			lines = append(lines, file+":"+strings.TrimPrefix(e, "line "))
		}
		return fmt.Errorf("malformed inventory: %s", strings.Join(lines, "; "))
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		return fmt.Errorf("malformed inventory: %s:%s", file, rest)
	}
	return fmt.Errorf("malformed inventory: %s: %s", file, msg)
}

// nodeLine finds the line of a value in a YAML document by a path of mapping
// keys (string) and sequence indexes (int); 1 when not found.
func nodeLine(doc *yaml.Node, path ...any) int {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, step := range path {
		var next *yaml.Node
		switch s := step.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == s {
						next = n.Content[i+1]
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && s < len(n.Content) {
				next = n.Content[s]
			}
		}
		if next == nil {
			return max(n.Line, 1)
		}
		n = next
	}
	return max(n.Line, 1)
}

type rebootVars struct {
	StaticMachine
	Host, Port string
}

func renderReboot(t *template.Template, m StaticMachine) (string, error) {
	v := rebootVars{StaticMachine: m}
	v.Host, v.Port, _ = net.SplitHostPort(m.Address)
	if v.Vars == nil {
		v.Vars = map[string]string{}
	}
	var b strings.Builder
	if err := t.Execute(&b, v); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Type is the inventory's name, "static" unless it sets one.
func (p *StaticProvider) Type() string { return p.current().Name }

// ListMachines re-reads the inventory; if it became malformed, that error is
// returned and the previous inventory stays in use for reboots.
func (p *StaticProvider) ListMachines(ctx context.Context) ([]ProviderMachine, error) {
	inv, err := p.load()
	if err != nil {
		return nil, err
	}
	out := make([]ProviderMachine, 0, len(inv.Machines))
	for _, m := range inv.Machines {
		out = append(out, ProviderMachine{ID: m.ID, Address: m.Address, Location: m.Location, Status: StatusActive})
	}
	return out, nil
}

func (p *StaticProvider) machine(id string) (StaticMachine, *staticInventory, error) {
	inv := p.current()
	for _, m := range inv.Machines {
		if m.ID == id {
			return m, inv, nil
		}
	}
	return StaticMachine{}, inv, fmt.Errorf("%w: %q is not in inventory %s", ErrNotFound, id, p.path)
}

// GetMachine returns one machine of the inventory.
func (p *StaticProvider) GetMachine(ctx context.Context, id string) (ProviderMachine, error) {
	m, _, err := p.machine(id)
	if err != nil {
		return ProviderMachine{}, err
	}
	return ProviderMachine{ID: m.ID, Address: m.Address, Location: m.Location, Status: StatusActive}, nil
}

// FreeCapacity is 0: an inventory cannot create machines.
func (p *StaticProvider) FreeCapacity(ctx context.Context) (int, error) { return 0, nil }

// CreateMachine fails: an inventory cannot create machines.
func (p *StaticProvider) CreateMachine(ctx context.Context) (ProviderMachine, error) {
	return ProviderMachine{}, errors.New("a static inventory cannot create machines; add them to the inventory file")
}

// rebootOutputLimit caps how much of the reboot command's output is kept in
// a failure cause.
const rebootOutputLimit = 2048

// Reboot runs the reboot command for the machine, then (unless wait_for_ssh
// is false) waits until its SSH port accepts connections again, all within
// reboot_timeout.
func (p *StaticProvider) Reboot(ctx context.Context, id string) error {
	m, inv, err := p.machine(id)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, inv.RebootTimeout)
	defer cancel()
	line, err := renderReboot(inv.reboot, m)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	out := &capBuffer{max: rebootOutputLimit}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w after %s", ctx.Err(), inv.RebootTimeout)
		}
		output := strings.TrimSpace(out.String())
		if output == "" {
			output = "(no output)"
		}
		return fmt.Errorf("reboot command %q failed (%v): %s", line, err, output)
	}
	if inv.WaitForSSH != nil && !*inv.WaitForSSH {
		return nil
	}
	return waitForPort(ctx, m.Address)
}

// waitForPort waits until addr accepts a TCP connection.
func waitForPort(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("machine did not answer on %s after the reboot command: %w", addr, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
