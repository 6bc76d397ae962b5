// Package bmcpool opens BMC controllers (Redfish or IPMI) from what an
// inventory says about a machine's BMC, resolving its password from the
// environment or a file at the moment of use, and keeps one controller per
// BMC so that sessions are reused across reboots and closed on shutdown.
package bmcpool

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/bmctl/bmctl/pkg/bmc"
	"github.com/bmctl/bmctl/pkg/bmc/ipmi"
	"github.com/bmctl/bmctl/pkg/bmc/redfish"
)

// Spec is a machine's BMC as an inventory describes it. It never holds the
// password itself, only where to find it.
type Spec struct {
	Type         string `yaml:"type" json:"type"` // redfish or ipmi
	Address      string `yaml:"address" json:"address"`
	Username     string `yaml:"username" json:"username,omitempty"`
	PasswordEnv  string `yaml:"password_env" json:"password_env,omitempty"`
	PasswordFile string `yaml:"password_file" json:"password_file,omitempty"`
	CAFile       string `yaml:"ca_file" json:"ca_file,omitempty"`
	Insecure     *bool  `yaml:"insecure" json:"insecure,omitempty"`
	System       string `yaml:"system" json:"system,omitempty"`
}

// Fields are the keys a Spec takes, for checking an inventory.
var Fields = []string{"type", "address", "username", "password_env", "password_file", "ca_file", "insecure", "system"}

// WithDefaults fills what s leaves unset from d.
func (s Spec) WithDefaults(d Spec) Spec {
	if s.Type == "" {
		s.Type = d.Type
	}
	if s.Username == "" {
		s.Username = d.Username
	}
	if s.PasswordEnv == "" && s.PasswordFile == "" {
		s.PasswordEnv, s.PasswordFile = d.PasswordEnv, d.PasswordFile
	}
	if s.CAFile == "" && s.Insecure == nil {
		s.CAFile, s.Insecure = d.CAFile, d.Insecure
	}
	return s
}

func (s Spec) insecure() bool { return s.Insecure != nil && *s.Insecure }

// Check reports what is wrong with a complete spec, in words for the
// inventory's author.
func (s Spec) Check() error {
	switch s.Type {
	case "redfish", "ipmi":
	case "":
		return errors.New("bmc has no type; want redfish or ipmi (here or in bmc_defaults)")
	default:
		return fmt.Errorf("bmc type %q: want redfish or ipmi", s.Type)
	}
	if s.Address == "" {
		return errors.New("bmc has no address")
	}
	if s.Username == "" {
		return errors.New("bmc has no username (here or in bmc_defaults)")
	}
	switch {
	case s.PasswordEnv == "" && s.PasswordFile == "":
		return errors.New("bmc has no password source; give password_env or password_file (passwords never go in the inventory)")
	case s.PasswordEnv != "" && s.PasswordFile != "":
		return errors.New("bmc has both password_env and password_file; give one")
	}
	if s.Type == "redfish" {
		if !strings.HasPrefix(s.Address, "https://") {
			return fmt.Errorf("redfish bmc address %q: want https://host[:port]", s.Address)
		}
		if s.CAFile != "" && s.insecure() {
			return errors.New("bmc has both ca_file and insecure: true; give one")
		}
	} else {
		if strings.Contains(s.Address, "://") {
			return fmt.Errorf("ipmi bmc address %q: want host or host:port", s.Address)
		}
		if s.System != "" {
			return errors.New("bmc system: applies to redfish only")
		}
	}
	return nil
}

// password reads the password from its source.
func (s Spec) password() (string, error) {
	if s.PasswordEnv != "" {
		p, ok := os.LookupEnv(s.PasswordEnv)
		if !ok || p == "" {
			return "", fmt.Errorf("BMC password: environment variable %s is not set", s.PasswordEnv)
		}
		return p, nil
	}
	data, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("BMC password: %w", err)
	}
	p := strings.TrimRight(string(data), "\r\n")
	if p == "" {
		return "", fmt.Errorf("BMC password: %s is empty", s.PasswordFile)
	}
	return p, nil
}

// Options tune the controllers a pool opens.
type Options struct {
	// RequestTimeout bounds one Redfish request or ipmitool run.
	RequestTimeout time.Duration
	Logger         *slog.Logger
}

// Pool keeps one client per BMC (address, account and trust), shared by
// the BMC's systems: one session, one request at a time.
type Pool struct {
	opts Options

	mu    sync.Mutex
	conns map[string]*entry
}

type entry struct {
	ctrl bmc.Controller // the BMC's client
	pw   string
}

// New returns an empty pool.
func New(opts Options) *Pool {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pool{opts: opts, conns: map[string]*entry{}}
}

// key names a BMC: what a client is made of, the system aside.
func key(s Spec) string {
	return strings.Join([]string{s.Type, s.Address, s.Username, s.PasswordEnv, s.PasswordFile, s.CAFile, fmt.Sprint(s.insecure())}, "\x00")
}

// forSystem is the controller of the spec's system on the BMC's client.
func forSystem(ctrl bmc.Controller, s Spec) bmc.Controller {
	if rc, ok := ctrl.(*redfish.Client); ok && s.System != "" {
		return rc.ForSystem(s.System)
	}
	return ctrl
}

// Get returns the controller of the BMC s describes, opening it on first
// use. The password is read again on every Get, so a rotated one takes
// effect: the old controller is closed and a new one opened.
func (p *Pool) Get(ctx context.Context, s Spec) (bmc.Controller, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	pw, err := s.password()
	if err != nil {
		return nil, err
	}
	k := key(s)
	p.mu.Lock()
	e := p.conns[k]
	p.mu.Unlock()
	if e != nil && e.pw == pw {
		return forSystem(e.ctrl, s), nil
	}
	if e != nil {
		_ = e.ctrl.Close(ctx)
	}
	ctrl, err := p.open(s, pw)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.conns[k]; cur != nil && cur != e && cur.pw == pw {
		_ = ctrl.Close(ctx)
		return forSystem(cur.ctrl, s), nil // another caller opened it meanwhile
	}
	p.conns[k] = &entry{ctrl: ctrl, pw: pw}
	return forSystem(ctrl, s), nil
}

func (p *Pool) open(s Spec, pw string) (bmc.Controller, error) {
	if s.Type == "ipmi" {
		return ipmi.New(ipmi.Config{Address: s.Address, Username: s.Username, Password: pw, Timeout: p.opts.RequestTimeout})
	}
	cfg := redfish.Config{
		Address: s.Address, Username: s.Username, Password: pw,
		Insecure: s.insecure(), RequestTimeout: p.opts.RequestTimeout, Logger: p.opts.Logger,
	}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("BMC CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("BMC CA: %s holds no PEM certificate", s.CAFile)
		}
	}
	return redfish.New(cfg)
}

// Close closes every controller (deleting Redfish sessions) and empties
// the pool.
func (p *Pool) Close(ctx context.Context) error {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*entry{}
	p.mu.Unlock()
	var errs []error
	for _, e := range conns {
		if err := e.ctrl.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
