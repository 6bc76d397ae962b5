package shepherd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/bmctl/bmctl/pkg/bmc"
	"github.com/bmctl/bmctl/pkg/bmc/bmcpool"
)

// StaticProvider is a fleet outside any cloud: machines listed in an
// inventory file (YAML, or JSON, which is YAML too), rebooted through their
// BMCs (Redfish or IPMI, verified) or by a command run per machine:
//
//	name: rack-a                     # provider type stored in BMDB; default "static"
//	bmc_defaults:                    # for every machine's bmc, unless it says otherwise
//	  type: redfish                  # or ipmi
//	  username: admin
//	  password_env: BMC_PASSWORD     # or password_file: /etc/bmctl/bmc-password
//	  ca_file: /etc/bmctl/bmc-ca.pem # or insecure: true (warns once per BMC)
//	  request_timeout: 20s           # one Redfish request or ipmitool run
//	  down_within: 2m                # a reset seen taking effect (Off, or SSH gone)
//	  on_within: 5m                  # power On again
//	  ssh_within: 10m                # SSH answering once On
//	  poll_interval: 2s              # how often power state and SSH are looked at
//	reboot_command: ipmitool -I lanplus -H {{.BMC}} -U admin -E chassis power cycle
//	reboot_timeout: 10m              # the whole reboot, SSH answering again included
//	wait_for_ssh: true               # reboot_command only; default true
//	machines:
//	  - id: a01                      # unique within the inventory
//	    address: 10.0.0.11:22        # SSH address; port 22 if left out
//	    location: ams1
//	    bmc:                         # a BMC block; any bmc_defaults key may be set here
//	      address: https://10.1.0.11 # ipmi: host or host:port
//	      system: /redfish/v1/Systems/1   # only where the BMC has several systems
//	  - id: a02
//	    address: 10.0.0.12
//	    bmc: https://10.1.0.12       # with bmc_defaults.type: the BMC's address;
//	                                 # without: free-form, for the reboot command
//	    vars: {rack: a}              # free-form, as {{.Vars.rack}}
//
// A machine whose BMC has a type (its own or bmc_defaults') reboots through
// it; the others run reboot_command, which then must be given. Passwords
// come only from the environment or a file named in the inventory, never
// the inventory itself. The command runs with sh -c and the shepherd's
// environment. The file is read again on every listing, so edits take effect
// without a restart.
type StaticProvider struct {
	path string
	bmcs *bmcpool.Pool

	mu  sync.Mutex
	inv *staticInventory
}

type staticInventory struct {
	Name          string          `yaml:"name"`
	BMCDefaults   bmcDefaults     `yaml:"bmc_defaults"`
	RebootCommand string          `yaml:"reboot_command"`
	RebootTimeout time.Duration   `yaml:"reboot_timeout"`
	WaitForSSH    *bool           `yaml:"wait_for_ssh"`
	Machines      []StaticMachine `yaml:"machines"`

	reboot *template.Template
	bmcs   map[string]bmcpool.Spec // by machine id, complete and checked
}

// bmcDefaults are the inventory-wide BMC settings.
type bmcDefaults struct {
	bmcpool.Spec   `yaml:",inline"`
	RequestTimeout time.Duration `yaml:"request_timeout"`
	DownWithin     time.Duration `yaml:"down_within"`
	OnWithin       time.Duration `yaml:"on_within"`
	SSHWithin      time.Duration `yaml:"ssh_within"`
	PollInterval   time.Duration `yaml:"poll_interval"`
}

func (d bmcDefaults) bounds() bmc.Bounds {
	return bmc.Bounds{Down: d.DownWithin, On: d.OnWithin, SSH: d.SSHWithin, Poll: d.PollInterval}.WithDefaults()
}

// StaticMachine is one machine of an inventory, as the reboot command
// template sees it (plus .Host and .Port, split from Address).
type StaticMachine struct {
	ID       string            `yaml:"id"`
	Address  string            `yaml:"address"`
	Location string            `yaml:"location"`
	BMC      MachineBMC        `yaml:"bmc"`
	Vars     map[string]string `yaml:"vars"`
}

// MachineBMC is a machine's bmc: a string (free-form for the reboot
// command, or the address when bmc_defaults gives a type) or a block.
type MachineBMC struct {
	Text  string
	Block *bmcpool.Spec
}

// String is what {{.BMC}} renders: the text, or the block's address.
func (b MachineBMC) String() string {
	if b.Block != nil {
		return b.Block.Address
	}
	return b.Text
}

// UnmarshalYAML takes a string or a block of known keys.
func (b *MachineBMC) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Decode(&b.Text)
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if !slices.Contains(bmcpool.Fields, k.Value) {
				return fmt.Errorf("line %d: bmc has no field %q (known: %s)", k.Line, k.Value, strings.Join(bmcpool.Fields, ", "))
			}
		}
		var s bmcpool.Spec
		if err := n.Decode(&s); err != nil {
			return err
		}
		b.Block = &s
		return nil
	}
	return fmt.Errorf("line %d: bmc must be a string or a block of %s", n.Line, strings.Join(bmcpool.Fields, ", "))
}

// NewStaticProvider loads the inventory at path, failing with a line-precise
// error if it is malformed. log receives the BMC clients' warnings (nil:
// none).
func NewStaticProvider(path string, log ...*slog.Logger) (*StaticProvider, error) {
	opts := bmcpool.Options{}
	if len(log) > 0 {
		opts.Logger = log[0]
	}
	p := &StaticProvider{path: path}
	inv, err := p.load()
	if err != nil {
		return nil, err
	}
	opts.RequestTimeout = inv.BMCDefaults.RequestTimeout
	p.bmcs = bmcpool.New(opts)
	return p, nil
}

// Close ends the BMC sessions the provider holds.
func (p *StaticProvider) Close(ctx context.Context) error { return p.bmcs.Close(ctx) }

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
	// Decode as a node tree first, for the lines of what is checked below.
	var doc yaml.Node
	_ = yaml.Unmarshal(data, &doc)
	line := func(path ...any) int { return nodeLine(&doc, path...) }
	errAt := func(l int, format string, args ...any) error {
		return fmt.Errorf("%s:%d: %s", file, l, fmt.Sprintf(format, args...))
	}
	if l := passwordLine(&doc); l > 0 {
		return nil, errAt(l, "a BMC password must not be in the inventory; give password_env (an environment variable) or password_file instead")
	}
	var inv staticInventory
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&inv); err != nil {
		return nil, yamlError(file, err)
	}

	if inv.Name == "" {
		inv.Name = "static"
	}
	if inv.RebootTimeout <= 0 {
		inv.RebootTimeout = 10 * time.Minute
	}
	var tmpl *template.Template
	if inv.RebootCommand != "" {
		var err error
		tmpl, err = template.New("reboot_command").Option("missingkey=error").Parse(inv.RebootCommand)
		if err != nil {
			return nil, errAt(line("reboot_command"), "reboot_command is not a valid template: %v", err)
		}
	}
	inv.reboot = tmpl
	inv.bmcs = map[string]bmcpool.Spec{}
	defaults := inv.BMCDefaults.Spec
	if defaults.Address != "" || defaults.System != "" {
		return nil, errAt(line("bmc_defaults"), "bmc_defaults cannot hold address or system: they belong to each machine's bmc")
	}
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
		var spec bmcpool.Spec
		switch {
		case m.BMC.Block != nil:
			spec = *m.BMC.Block
		case m.BMC.Text != "" && defaults.Type != "":
			spec = bmcpool.Spec{Address: m.BMC.Text}
		}
		if spec != (bmcpool.Spec{}) {
			spec = spec.WithDefaults(defaults)
			if err := spec.Check(); err != nil {
				return nil, errAt(line("machines", i, "bmc"), "machine %q: %v", m.ID, err)
			}
			inv.bmcs[m.ID] = spec
			continue
		}
		if tmpl == nil {
			return nil, errAt(l, "reboot_command is missing, and machine %q has no bmc with a type: give it a bmc block (type, address, ...), set bmc_defaults.type, or give reboot_command", m.ID)
		}
		if _, err := renderReboot(tmpl, inv.Machines[i]); err != nil {
			return nil, errAt(line("reboot_command"), "reboot_command does not render for machine %q: %v", m.ID, err)
		}
	}
	return &inv, nil
}

// passwordLine is the line of a "password" key in a bmc block or in
// bmc_defaults, 0 if there is none.
func passwordLine(doc *yaml.Node) int {
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return 0
	}
	inMapping := func(m *yaml.Node) int {
		if m == nil || m.Kind != yaml.MappingNode {
			return 0
		}
		for i := 0; i+1 < len(m.Content); i += 2 {
			if strings.EqualFold(m.Content[i].Value, "password") {
				return m.Content[i].Line
			}
		}
		return 0
	}
	value := func(m *yaml.Node, key string) *yaml.Node {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == key {
				return m.Content[i+1]
			}
		}
		return nil
	}
	if l := inMapping(value(n, "bmc_defaults")); l > 0 {
		return l
	}
	if ms := value(n, "machines"); ms != nil && ms.Kind == yaml.SequenceNode {
		for _, m := range ms.Content {
			if m.Kind == yaml.MappingNode {
				if l := inMapping(value(m, "bmc")); l > 0 {
					return l
				}
			}
		}
	}
	return 0
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
	// yaml quotes the offending value as it is, newlines and all: one line
	// (FuzzParseInventory).
	oneLine := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var lines []string
		for _, e := range te.Errors {
			lines = append(lines, file+":"+oneLine(strings.TrimPrefix(e, "line ")))
		}
		return fmt.Errorf("malformed inventory: %s", strings.Join(lines, "; "))
	}
	msg := oneLine(strings.TrimPrefix(err.Error(), "yaml: "))
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
	BMC        string
	Host, Port string
}

func renderReboot(t *template.Template, m StaticMachine) (string, error) {
	v := rebootVars{StaticMachine: m, BMC: m.BMC.String()}
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

// Reboot reboots the machine; see RebootReport.
func (p *StaticProvider) Reboot(ctx context.Context, id string) error {
	_, err := p.RebootReport(ctx, id, nil)
	return err
}

// RebootReport reboots the machine through its BMC and verifies it, or
// runs the reboot command and then (unless wait_for_ssh is false) waits
// until its SSH port accepts connections again, all within reboot_timeout.
// For a BMC reboot it says what happened ("redfish ForceRestart at
// https://10.1.0.11: Off after 4s, On after 31s, SSH after 52s"); for a
// command, nothing.
func (p *StaticProvider) RebootReport(ctx context.Context, id string, progress func(string)) (string, error) {
	m, inv, err := p.machine(id)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, inv.RebootTimeout)
	defer cancel()
	if spec, ok := inv.bmcs[id]; ok {
		c, err := p.bmcs.Get(ctx, spec)
		if err != nil {
			return "", fmt.Errorf("%s BMC at %s: %w", spec.Type, spec.Address, err)
		}
		b := inv.BMCDefaults.bounds()
		b.Progress = progress
		rep, err := bmc.Reboot(ctx, c, m.Address, b)
		if err != nil {
			return "", err
		}
		return rep.String(), nil
	}
	return "", p.runRebootCommand(ctx, m, inv)
}

// MachineBMC returns the machine's BMC controller, its SSH address and the
// bounds of verified power actions, for operators' commands; ErrNoBMC if the
// inventory gives it none.
func (p *StaticProvider) MachineBMC(ctx context.Context, id string) (bmc.Controller, string, bmc.Bounds, error) {
	m, inv, err := p.machine(id)
	if err != nil {
		return nil, "", bmc.Bounds{}, err
	}
	spec, ok := inv.bmcs[id]
	if !ok {
		return nil, m.Address, bmc.Bounds{}, fmt.Errorf("%w: machine %q of inventory %s", ErrNoBMC, id, p.path)
	}
	c, err := p.bmcs.Get(ctx, spec)
	if err != nil {
		return nil, m.Address, bmc.Bounds{}, fmt.Errorf("%s BMC at %s: %w", spec.Type, spec.Address, err)
	}
	return c, m.Address, inv.BMCDefaults.bounds(), nil
}

// ErrNoBMC means the inventory gives the machine no BMC with a type.
var ErrNoBMC = errors.New("no BMC (type and address) in the inventory")

// MachineIDs lists the inventory's machine ids, in its order.
func (p *StaticProvider) MachineIDs() []string {
	inv := p.current()
	ids := make([]string, len(inv.Machines))
	for i, m := range inv.Machines {
		ids[i] = m.ID
	}
	return ids
}

func (p *StaticProvider) runRebootCommand(ctx context.Context, m StaticMachine, inv *staticInventory) error {
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
