// Package equinix is the shepherd's provider for Equinix Metal, through
// packngo: one project's hardware reservations are its capacity, and the
// project's devices whose hostname starts with a configured prefix are its
// machines.
//
// Every call goes through a client-side rate limit and retries 429 and 5xx
// answers with backoff, honouring Retry-After; every call has a timeout; every
// error names what bmctl was doing, to which device or project, and the API
// call (see APIError).
//
// A machine's address is its first public IPv4 address, else its first
// public IPv6 one, with the configured SSH port (22 on Metal) unless the
// device carries a "bmctl.ssh-port=N" tag (see SSHPortTag), which is how an
// emulated project puts many devices on 127.0.0.1.
package equinix

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/packethost/packngo"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/bmctl/bmctl/pkg/shepherd"
)

// Type is the provider's name in BMDB.
const Type = "equinix"

const defaultAPIURL = "https://api.equinix.com/metal/v1/"

// Provider is the Equinix Metal provider. It is safe for concurrent use.
type Provider struct {
	cfg    Config
	apiURL string
	tr     *transport

	// creating makes creates one at a time, so that two never pick the
	// same free reservation; a wait for it ends with the caller's context.
	creating *semaphore.Weighted
	keyID    string // the project SSH key holding cfg.SSHPublicKey, once known (under creating)

	seenMu   sync.Mutex
	seen     map[string]bool   // ids of devices listed or created
	asideWhy map[string]string // reservations set aside after an inconsistent create, and why
}

var _ shepherd.Provider = (*Provider)(nil)

// New checks cfg and returns a provider. It makes no API call; Check does.
func New(cfg Config) (*Provider, error) {
	cfg = withDefaults(cfg)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	apiURL := cfg.APIURL
	if apiURL == "" {
		apiURL = defaultAPIURL
	}
	u, err := url.Parse(apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("Metal API URL %q is not an http(s) URL", apiURL)
	}
	// packngo resolves call paths against the base URL, which must end in
	// a slash to keep its path (/metal/v1).
	apiURL = strings.TrimSuffix(apiURL, "/") + "/"
	base := http.DefaultTransport
	if cfg.HTTPClient != nil && cfg.HTTPClient.Transport != nil {
		base = cfg.HTTPClient.Transport
	}
	return &Provider{
		cfg:      cfg,
		apiURL:   apiURL,
		creating: semaphore.NewWeighted(1),
		seen:     map[string]bool{},
		asideWhy: map[string]string{},
		tr: &transport{
			base:    base,
			limiter: rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), cfg.Burst),
			retries: cfg.Retries,
			backoff: cfg.RetryBackoff,
			maxWait: cfg.MaxRetryWait,
		},
	}, nil
}

// withDefaults fills what a caller left zero, so that a Config built by
// hand works as well as one from ConfigFromEnv.
func withDefaults(c Config) Config {
	d := DefaultConfig()
	if c.HostnamePrefix == "" {
		c.HostnamePrefix = d.HostnamePrefix
	}
	if c.OS == "" {
		c.OS = d.OS
	}
	if c.SSHKeyLabel == "" {
		c.SSHKeyLabel = d.SSHKeyLabel
	}
	if c.SSHPort == 0 {
		c.SSHPort = d.SSHPort
	}
	if c.RequestsPerSecond <= 0 {
		c.RequestsPerSecond = d.RequestsPerSecond
	}
	if c.Burst <= 0 {
		c.Burst = d.Burst
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = d.RetryBackoff
	}
	if c.MaxRetryWait <= 0 {
		c.MaxRetryWait = d.MaxRetryWait
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = d.CallTimeout
	}
	if c.RebootTimeout <= 0 {
		c.RebootTimeout = d.RebootTimeout
	}
	if c.PollInterval <= 0 {
		c.PollInterval = d.PollInterval
	}
	if c.PageSize <= 0 {
		c.PageSize = d.PageSize
	}
	if c.ListTimeout <= 0 {
		c.ListTimeout = d.ListTimeout
	}
	return c
}

// Type names the provider.
func (p *Provider) Type() string { return Type }

// do makes one API call with packngo, bounded by CallTimeout, and names it
// in its error, including which deadline ended it.
func (p *Provider) do(ctx context.Context, c call, fn func(*packngo.Client) error) error {
	callCtx, cancel := context.WithTimeoutCause(ctx, p.cfg.CallTimeout, fmt.Errorf("the call timeout of %v ran out", p.cfg.CallTimeout))
	defer cancel()
	client, err := packngo.NewClient(
		packngo.WithAuth("bmctl", p.cfg.Token),
		packngo.WithHTTPClient(&http.Client{Transport: p.tr.bound(callCtx)}),
		packngo.WithBaseURL(p.apiURL),
	)
	if err != nil {
		return p.wrap(c, err)
	}
	if err := fn(client); err != nil {
		if callCtx.Err() != nil {
			return &APIError{Op: c.op, Call: c.api, Detail: "gave up waiting: " + causeOf(callCtx), err: callCtx.Err()}
		}
		return p.wrap(c, err)
	}
	return nil
}

// causeOf says why ctx ended: the cause its deadline or cancel was given
// (the call timeout, the listing timeout, Recovery's reboot timeout, a
// lease that may lapse), else whether it was a deadline or a cancel.
func causeOf(ctx context.Context) string {
	switch cause := context.Cause(ctx); {
	case cause == nil:
		return "not ended"
	case cause == context.DeadlineExceeded:
		return "the caller's deadline passed"
	case cause == context.Canceled:
		return "the caller canceled"
	default:
		return cause.Error()
	}
}

// getJSON gets path (under the base URL) into v, as JSON.
func (p *Provider) getJSON(ctx context.Context, c call, path string, v any) error {
	return p.do(ctx, c, func(cl *packngo.Client) error {
		_, err := cl.DoRequest(http.MethodGet, path, nil, v)
		return err
	})
}

// devices lists the project's devices whose hostname has our prefix, and
// those it cannot read whose hostname may have it.
func (p *Provider) devices(ctx context.Context) ([]device, []*unreadable, error) {
	endpoint := "projects/" + p.cfg.ProjectID + "/devices"
	q := url.Values{"hostname": {p.cfg.HostnamePrefix}, "include": {"facility"}}
	items, err := p.listPages(ctx, "list devices of project "+p.cfg.ProjectID, endpoint, "devices", q)
	if err != nil {
		return nil, nil, err
	}
	var ds []device
	var bad []*unreadable
	for i, raw := range items {
		d, err := decodeDevice(raw, fmt.Sprintf("item %d of the device list", i+1))
		// The API's hostname filter matches anywhere in the name.
		if d.Hostname != "" && !strings.HasPrefix(d.Hostname, p.cfg.HostnamePrefix) {
			continue
		}
		var u *unreadable
		if errors.As(err, &u) {
			bad = append(bad, u)
			continue
		}
		ds = append(ds, d)
	}
	p.saw(ds...)
	return ds, bad, nil
}

// ListMachines returns the project's devices that bmctl manages, including
// those that failed to provision (StatusFailed): the provisioning loop must
// neither recover them nor count them as discrepancies. A device whose
// answer bmctl cannot read is listed with its Problem, so that one odd
// device neither hides the others nor looks vanished.
func (p *Provider) ListMachines(ctx context.Context) ([]shepherd.ProviderMachine, error) {
	ds, bad, err := p.devices(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]shepherd.ProviderMachine, 0, len(ds)+len(bad))
	for _, d := range ds {
		out = append(out, p.machine(d))
	}
	for _, u := range bad {
		out = append(out, shepherd.ProviderMachine{ID: u.id, Status: shepherd.StatusUnknown, Problem: u.Error()})
	}
	return out, nil
}

// GetMachine returns one of our devices, or an error wrapping
// shepherd.ErrNotFound if Metal has no such device in the project or it is
// not ours.
func (p *Provider) GetMachine(ctx context.Context, id string) (shepherd.ProviderMachine, error) {
	d, err := p.device(ctx, id, "get device "+id)
	if err != nil {
		return shepherd.ProviderMachine{}, err
	}
	return p.machine(d), nil
}

func (p *Provider) device(ctx context.Context, id, op string) (device, error) {
	if _, err := uuid.Parse(id); err != nil {
		return device{}, fmt.Errorf("equinix: %s: %q is not a Metal device id (a UUID): %w", op, id, shepherd.ErrNotFound)
	}
	c := call{op: op, api: "GET /devices/" + id, device: true}
	var raw json.RawMessage
	if err := p.getJSON(ctx, c, "devices/"+id+"?include=facility", &raw); err != nil {
		return device{}, err
	}
	d, err := decodeDevice(raw, "the answer")
	if err != nil {
		return device{}, fmt.Errorf("equinix: %s: %s: %w", op, c.api, err)
	}
	if d.ID != id {
		return device{}, inconsistent(c, fmt.Sprintf("Metal answered with device %s (%s), not the one asked for", d.ID, d.Hostname))
	}
	// A project that is not named by a UUID says nothing either way.
	if _, err := uuid.Parse(d.Project); err == nil && d.Project != p.cfg.ProjectID {
		return device{}, fmt.Errorf("equinix: %s: device is in another project (%s): %w", op, d.Project, shepherd.ErrNotFound)
	}
	if !strings.HasPrefix(d.Hostname, p.cfg.HostnamePrefix) {
		return device{}, fmt.Errorf("equinix: %s: hostname %q lacks the prefix %q, so the device is not bmctl's: %w",
			op, d.Hostname, p.cfg.HostnamePrefix, shepherd.ErrNotFound)
	}
	return d, nil
}

// saw remembers devices as existing, so that a create answered with one
// of them is not taken for a new device.
func (p *Provider) saw(ds ...device) {
	p.seenMu.Lock()
	defer p.seenMu.Unlock()
	for _, d := range ds {
		p.seen[d.ID] = true
	}
}

func (p *Provider) seenBefore(id string) bool {
	p.seenMu.Lock()
	defer p.seenMu.Unlock()
	return p.seen[id]
}

// machine is a device as the shepherd sees it.
func (p *Provider) machine(d device) shepherd.ProviderMachine {
	return shepherd.ProviderMachine{ID: d.ID, Address: p.address(d), Location: location(d), Status: MapState(d.State)}
}

// address is host:port of the device's SSH server, or "" while it has no
// public address.
func (p *Provider) address(d device) string {
	host := ""
	for _, family := range []int{4, 6} {
		for _, ip := range d.IPs {
			if ip.Public && ip.Family == family && ip.Address != "" {
				host = ip.Address
				break
			}
		}
		if host != "" {
			break
		}
	}
	if host == "" {
		return ""
	}
	port, ok := sshPortFromTags(d.Tags)
	if !ok {
		port = p.cfg.SSHPort
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// location is "metro/facility" (for example "sv/sv15"), or whichever of the
// two Metal reports.
func location(d device) string {
	switch {
	case d.Metro != "" && d.Facility != "":
		return d.Metro + "/" + d.Facility
	case d.Metro != "":
		return d.Metro
	}
	return d.Facility
}

// MapState maps a Metal device state to the shepherd's provider status.
func MapState(state string) shepherd.ProviderStatus {
	switch state {
	case "queued", "provisioning", "reinstalling":
		return shepherd.StatusProvisioning
	case "active":
		return shepherd.StatusActive
	case "powering_off", "powering_on", "rebooting":
		return shepherd.StatusRebooting
	case "failed":
		return shepherd.StatusFailed
	case "inactive", "deprovisioning", "deleted":
		return shepherd.StatusInactive
	}
	return shepherd.StatusUnknown
}

// Reservation is a free hardware reservation.
type Reservation struct {
	ID, ShortID, Plan, Metro, Facility string
}

// Location is "metro/facility", as for machines.
func (r Reservation) Location() string {
	if r.Metro == "" {
		return r.Facility
	}
	return r.Metro + "/" + r.Facility
}

// FreeReservations lists the project's provisionable hardware reservations
// without a device (of the configured plan, if one is set). Reservations
// bmctl cannot read, or set aside after an inconsistent create, are not free.
func (p *Provider) FreeReservations(ctx context.Context) ([]Reservation, error) {
	free, _, err := p.freeReservations(ctx)
	return free, err
}

func (p *Provider) freeReservations(ctx context.Context) ([]Reservation, []*unreadable, error) {
	endpoint := "projects/" + p.cfg.ProjectID + "/hardware-reservations"
	items, err := p.listPages(ctx, "list hardware reservations of project "+p.cfg.ProjectID, endpoint,
		"hardware_reservations", url.Values{"provisionable": {"only"}})
	if err != nil {
		return nil, nil, err
	}
	var free []Reservation
	var bad []*unreadable
	for i, raw := range items {
		hr, err := decodeReservation(raw, fmt.Sprintf("item %d of the hardware reservation list", i+1))
		var u *unreadable
		if errors.As(err, &u) {
			bad = append(bad, u)
			continue
		}
		if !hr.Provisionable || hr.Spare || hr.HasDevice || p.setAside(hr.ID) != "" {
			continue
		}
		if p.cfg.Plan != "" && hr.Plan != p.cfg.Plan {
			continue
		}
		free = append(free, hr.Reservation)
	}
	return free, bad, nil
}

// FreeCapacity is the number of free hardware reservations.
func (p *Provider) FreeCapacity(ctx context.Context) (int, error) {
	free, err := p.FreeReservations(ctx)
	return len(free), err
}

func (p *Provider) setAside(reservation string) string {
	p.seenMu.Lock()
	defer p.seenMu.Unlock()
	return p.asideWhy[reservation]
}

// CreateMachine provisions a device on a free hardware reservation, with
// the configured hostname prefix and OS and the shepherd's SSH key. It
// returns while the device is still provisioning.
//
// A create answered with a device that is not the one asked for (one that
// existed already, another hostname or reservation) is not a new machine:
// it fails with ErrInconsistent, and its reservation is set aside, so that
// the shepherd reports it once rather than create again every interval.
func (p *Provider) CreateMachine(ctx context.Context) (shepherd.ProviderMachine, error) {
	if err := p.creating.Acquire(ctx, 1); err != nil {
		return shepherd.ProviderMachine{}, fmt.Errorf("equinix: create device in project %s: gave up waiting for another create: %s", p.cfg.ProjectID, causeOf(ctx))
	}
	defer p.creating.Release(1)
	keyID, err := p.ensureSSHKey(ctx)
	if err != nil {
		return shepherd.ProviderMachine{}, err
	}
	free, err := p.FreeReservations(ctx)
	if err != nil {
		return shepherd.ProviderMachine{}, err
	}
	if len(free) == 0 {
		err := ErrNoCapacity
		if p.cfg.Plan != "" {
			err = fmt.Errorf("%w of plan %s", err, p.cfg.Plan)
		}
		return shepherd.ProviderMachine{}, fmt.Errorf("equinix: create device in project %s: %w", p.cfg.ProjectID, err)
	}
	hr := free[0]
	req := &packngo.DeviceCreateRequest{
		Hostname:              p.cfg.HostnamePrefix + hr.ShortID,
		Plan:                  cmp.Or(hr.Plan, p.cfg.Plan),
		OS:                    p.cfg.OS,
		ProjectID:             p.cfg.ProjectID,
		HardwareReservationID: hr.ID,
		ProjectSSHKeys:        []string{keyID},
		Tags:                  []string{"bmctl"},
	}
	// The API wants a location even on a reservation: its metro, else its facility.
	if hr.Metro != "" {
		req.Metro = hr.Metro
	} else {
		req.Facility = []string{hr.Facility}
	}
	c := call{op: "create device on hardware reservation " + hr.ID, api: "POST /projects/" + p.cfg.ProjectID + "/devices"}
	var raw json.RawMessage
	err = p.do(ctx, c, func(cl *packngo.Client) error {
		_, err := cl.DoRequest(http.MethodPost, "projects/"+p.cfg.ProjectID+"/devices", req, &raw)
		return err
	})
	if err != nil {
		return shepherd.ProviderMachine{}, err
	}
	d, err := decodeDevice(raw, "the answer")
	if err != nil {
		// Created, perhaps, but not readable: the next listing shows it.
		return shepherd.ProviderMachine{}, fmt.Errorf("equinix: %s: %s: %w", c.op, c.api, err)
	}
	var odd string
	switch {
	case p.seenBefore(d.ID):
		odd = fmt.Sprintf("Metal answered with device %s (%s), which existed before, not a new device %s", d.ID, d.Hostname, req.Hostname)
	case d.Hostname != req.Hostname:
		odd = fmt.Sprintf("Metal answered with device %s named %q, not %q as asked", d.ID, d.Hostname, req.Hostname)
	case d.Reservation != "" && d.Reservation != hr.ID:
		odd = fmt.Sprintf("Metal answered with device %s on hardware reservation %s, not %s as asked", d.ID, d.Reservation, hr.ID)
	}
	if odd != "" {
		p.seenMu.Lock()
		p.asideWhy[hr.ID] = odd
		p.seenMu.Unlock()
		return shepherd.ProviderMachine{}, inconsistent(c, odd+"; not counted as created, and the reservation is set aside until bmctl restarts")
	}
	p.saw(d)
	return p.machine(d), nil
}

// ensureSSHKey finds the project SSH key labelled SSHKeyLabel, or creates
// it with SSHPublicKey, and returns its id. Only CreateMachine calls it,
// holding p.creating.
func (p *Provider) ensureSSHKey(ctx context.Context) (string, error) {
	if p.keyID != "" {
		return p.keyID, nil
	}
	pub := p.cfg.SSHPublicKey
	if pub == "" && p.cfg.SSHPublicKeyFile != "" {
		b, err := os.ReadFile(p.cfg.SSHPublicKeyFile)
		if err != nil {
			return "", fmt.Errorf("equinix: reading the shepherd's SSH public key: %w", err)
		}
		pub = strings.TrimSpace(string(b))
	}
	if pub == "" {
		return "", errors.New("equinix: no shepherd SSH public key configured; creating devices needs one (--equinix-ssh-public-key-file)")
	}
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil {
		return "", fmt.Errorf("equinix: shepherd SSH public key: %w", err)
	}
	var keys []packngo.SSHKey
	listCall := call{op: "list SSH keys of project " + p.cfg.ProjectID, api: "GET /projects/" + p.cfg.ProjectID + "/ssh-keys"}
	if err := p.do(ctx, listCall, func(c *packngo.Client) error {
		var err error
		keys, _, err = c.Projects.ListSSHKeys(p.cfg.ProjectID, nil)
		return err
	}); err != nil {
		return "", err
	}
	for _, k := range keys {
		if k.Label != p.cfg.SSHKeyLabel {
			continue
		}
		have, _, _, _, err := ssh.ParseAuthorizedKey([]byte(k.Key))
		if err != nil || string(have.Marshal()) != string(want.Marshal()) {
			return "", fmt.Errorf("equinix: project %s has an SSH key labelled %q that is not the shepherd's key; delete it or choose another label (--equinix-ssh-key-label)",
				p.cfg.ProjectID, p.cfg.SSHKeyLabel)
		}
		p.keyID = k.ID
		return k.ID, nil
	}
	var k *packngo.SSHKey
	createCall := call{op: "create SSH key " + p.cfg.SSHKeyLabel + " in project " + p.cfg.ProjectID, api: "POST /projects/" + p.cfg.ProjectID + "/ssh-keys"}
	if err := p.do(ctx, createCall, func(c *packngo.Client) error {
		var err error
		k, _, err = c.SSHKeys.Create(&packngo.SSHKeyCreateRequest{Label: p.cfg.SSHKeyLabel, Key: strings.TrimSpace(pub), ProjectID: p.cfg.ProjectID})
		return err
	}); err != nil {
		return "", err
	}
	p.keyID = k.ID
	return k.ID, nil
}

// unrebootable says, of a device in state, why a reboot makes no sense,
// or "".
func unrebootable(state string) string {
	switch state {
	case "queued":
		return "is queued for provisioning"
	case "provisioning":
		return "is still provisioning"
	case "reinstalling":
		return "is being reinstalled"
	case "deprovisioning":
		return "is being deprovisioned"
	case "deleted":
		return "is deleted"
	case "failed":
		return "failed to provision"
	}
	return ""
}

// Reboot asks Metal to reboot the device, then waits until the device has
// gone down (any state but active) and come back (active), or fails with
// the cause after RebootTimeout. It refuses devices that a reboot cannot
// help (still provisioning, being deprovisioned, failed), and every error
// says whether the reboot was sent.
func (p *Provider) Reboot(ctx context.Context, id string) error {
	op := "reboot device " + id
	d, err := p.device(ctx, id, op)
	if err != nil {
		return fmt.Errorf("%w; the reboot was not sent", err)
	}
	if why := unrebootable(d.State); why != "" {
		return fmt.Errorf("equinix: %s: not rebooting: the device %s (state %s); a reboot makes no sense until it is active", op, why, d.State)
	}
	err = p.do(ctx, call{op: op, api: "POST /devices/" + id + "/actions", device: true}, func(c *packngo.Client) error {
		_, err := c.Devices.Reboot(id)
		return err
	})
	var ae *APIError
	switch {
	case errors.As(err, &ae) && ae.Status == 0:
		return fmt.Errorf("%w; Metal may not have received the reboot", err)
	case err != nil:
		return fmt.Errorf("%w; Metal refused the reboot", err)
	}
	wait, cancel := context.WithTimeoutCause(ctx, p.cfg.RebootTimeout,
		fmt.Errorf("the provider's reboot timeout of %v (--equinix-reboot-timeout) ran out", p.cfg.RebootTimeout))
	defer cancel()
	tick := time.NewTicker(p.cfg.PollInterval)
	defer tick.Stop()
	wentDown, last := false, "active"
	var lastErr error
	for {
		d, err := p.device(wait, id, op)
		switch {
		case errors.Is(err, shepherd.ErrNotFound) || errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrInconsistent):
			return fmt.Errorf("%w; Metal had accepted the reboot", err)
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
			// the bound, or one call's timeout: the bound decides
		case err != nil:
			lastErr = err // perhaps passing; the bound decides
		default:
			last, lastErr = d.State, nil
			switch MapState(d.State) {
			case shepherd.StatusActive:
				if wentDown {
					return nil
				}
			case shepherd.StatusFailed:
				return fmt.Errorf("equinix: %s: the device went to state failed while rebooting", op)
			default:
				wentDown = true
			}
		}
		select {
		case <-tick.C:
			continue
		case <-wait.Done():
		}
		cause := fmt.Sprintf("Metal accepted the reboot, but the device had not gone down (still %s) when %s", last, causeOf(wait))
		if wentDown {
			cause = fmt.Sprintf("the device went down but had not come back (last state %s) when %s", last, causeOf(wait))
		}
		if lastErr != nil {
			cause += "; last error: " + lastErr.Error()
		}
		return fmt.Errorf("equinix: %s: %s", op, cause)
	}
}

// ProjectInfo is what Check found.
type ProjectInfo struct {
	ID, Name string
	Devices  int // devices with our prefix
	Free     []Reservation
	// Problems are the devices and reservations bmctl cannot read, one
	// line each.
	Problems []string
}

// Check verifies the credentials and access to the project, and lists free
// reservations and our devices.
func (p *Provider) Check(ctx context.Context) (ProjectInfo, error) {
	info := ProjectInfo{ID: p.cfg.ProjectID}
	var pr struct {
		Name string `json:"name"`
	}
	c := call{op: "get project " + p.cfg.ProjectID, api: "GET /projects/" + p.cfg.ProjectID}
	if err := p.getJSON(ctx, c, "projects/"+p.cfg.ProjectID, &pr); err != nil {
		return info, err
	}
	info.Name = pr.Name
	free, badHR, err := p.freeReservations(ctx)
	if err != nil {
		return info, err
	}
	info.Free = free
	ds, badDev, err := p.devices(ctx)
	if err != nil {
		return info, err
	}
	info.Devices = len(ds) + len(badDev)
	for _, u := range append(badDev, badHR...) {
		info.Problems = append(info.Problems, u.Error())
	}
	return info, nil
}
