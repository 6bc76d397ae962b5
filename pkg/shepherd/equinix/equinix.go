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

	// createMu makes creates one at a time, so that two never pick the
	// same free reservation.
	createMu sync.Mutex
	keyMu    sync.Mutex
	keyID    string // the project SSH key holding cfg.SSHPublicKey, once known
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
		cfg:    cfg,
		apiURL: apiURL,
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
	return c
}

// Type names the provider.
func (p *Provider) Type() string { return Type }

// do makes one API call with packngo, bounded by CallTimeout, and names it
// in its error.
func (p *Provider) do(ctx context.Context, c call, fn func(*packngo.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	client, err := packngo.NewClient(
		packngo.WithAuth("bmctl", p.cfg.Token),
		packngo.WithHTTPClient(&http.Client{Transport: p.tr.bound(ctx)}),
		packngo.WithBaseURL(p.apiURL),
	)
	if err != nil {
		return p.wrap(c, err)
	}
	return p.wrap(c, fn(client))
}

// pageMeta is the part of Metal's list metadata that paging needs. bmctl
// pages by number rather than following meta.next: Metal's hrefs carry the
// base path (/metal/v1/...), and packngo resolves them against its base URL,
// doubling it (see internal/metalemu's tests).
type pageMeta struct {
	Total    int `json:"total"`
	LastPage int `json:"last_page"`
}

// maxPages bounds a listing against an API that never says it is done.
const maxPages = 10000

// listTries bounds how often a listing restarts because the list changed
// while it was paged (a device created or deleted shifts the pages, and a
// device missed that way would look like a discrepancy to the shepherd).
const listTries = 3

// listPages fetches every page of a project list endpoint. get decodes one
// page, keeps its items and returns the page's metadata and item count;
// reset drops what get kept, when the listing starts again.
func (p *Provider) listPages(ctx context.Context, op, endpoint string, query url.Values,
	reset func(), get func(c *packngo.Client, path string) (pageMeta, int, error)) error {
	for try := 1; try <= listTries; try++ {
		reset()
		seen, firstTotal := 0, 0
		for page := 1; ; page++ {
			if page > maxPages {
				return fmt.Errorf("equinix: %s: more than %d pages", op, maxPages)
			}
			q := url.Values{}
			for k, v := range query {
				q[k] = v
			}
			q.Set("page", strconv.Itoa(page))
			q.Set("per_page", strconv.Itoa(p.cfg.PageSize))
			path := endpoint + "?" + q.Encode()
			var meta pageMeta
			var n int
			err := p.do(ctx, call{op: op, api: "GET /" + path}, func(c *packngo.Client) error {
				var err error
				meta, n, err = get(c, path)
				return err
			})
			if err != nil {
				return err
			}
			seen += n
			if page == 1 {
				firstTotal = meta.Total
			}
			if meta.LastPage <= page {
				if seen == meta.Total && firstTotal == meta.Total {
					return nil
				}
				break // the list changed under us: page it again
			}
		}
	}
	return fmt.Errorf("equinix: %s: the list changed while being paged, %d times in a row", op, listTries)
}

// devices lists the project's devices whose hostname has our prefix.
func (p *Provider) devices(ctx context.Context) ([]packngo.Device, error) {
	var all []packngo.Device
	endpoint := "projects/" + p.cfg.ProjectID + "/devices"
	q := url.Values{"hostname": {p.cfg.HostnamePrefix}, "include": {"facility"}}
	err := p.listPages(ctx, "list devices of project "+p.cfg.ProjectID, endpoint, q, func() { all = nil },
		func(c *packngo.Client, path string) (pageMeta, int, error) {
			var root struct {
				Devices []packngo.Device `json:"devices"`
				Meta    pageMeta         `json:"meta"`
			}
			_, err := c.DoRequest(http.MethodGet, path, nil, &root)
			for _, d := range root.Devices {
				// The API's hostname filter matches anywhere in the name.
				if strings.HasPrefix(d.Hostname, p.cfg.HostnamePrefix) {
					all = append(all, d)
				}
			}
			return root.Meta, len(root.Devices), err
		})
	return all, err
}

// ListMachines returns the project's devices that bmctl manages, including
// those that failed to provision (StatusFailed): the provisioning loop must
// neither recover them nor count them as discrepancies.
func (p *Provider) ListMachines(ctx context.Context) ([]shepherd.ProviderMachine, error) {
	ds, err := p.devices(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]shepherd.ProviderMachine, 0, len(ds))
	for _, d := range ds {
		out = append(out, p.machine(d))
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
	return p.machine(*d), nil
}

func (p *Provider) device(ctx context.Context, id, op string) (*packngo.Device, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, fmt.Errorf("equinix: %s: %q is not a Metal device id (a UUID): %w", op, id, shepherd.ErrNotFound)
	}
	var d *packngo.Device
	err := p.do(ctx, call{op: op, api: "GET /devices/" + id, device: true}, func(c *packngo.Client) error {
		var err error
		d, _, err = c.Devices.Get(id, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	if d.Project != nil && d.Project.URL != "" && !strings.HasSuffix(d.Project.URL, "/"+p.cfg.ProjectID) {
		return nil, fmt.Errorf("equinix: %s: device is in another project (%s): %w", op, d.Project.URL, shepherd.ErrNotFound)
	}
	if !strings.HasPrefix(d.Hostname, p.cfg.HostnamePrefix) {
		return nil, fmt.Errorf("equinix: %s: hostname %q lacks the prefix %q, so the device is not bmctl's: %w",
			op, d.Hostname, p.cfg.HostnamePrefix, shepherd.ErrNotFound)
	}
	return d, nil
}

// machine is a device as the shepherd sees it.
func (p *Provider) machine(d packngo.Device) shepherd.ProviderMachine {
	return shepherd.ProviderMachine{ID: d.ID, Address: p.address(d), Location: location(d), Status: MapState(d.State)}
}

// address is host:port of the device's SSH server, or "" while it has no
// public address.
func (p *Provider) address(d packngo.Device) string {
	host := ""
	for _, family := range []int{4, 6} {
		for _, ip := range d.Network {
			if ip != nil && ip.Public && ip.AddressFamily == family && ip.Address != "" {
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
func location(d packngo.Device) string {
	metro, facility := "", ""
	if d.Metro != nil {
		metro = d.Metro.Code
	}
	if d.Facility != nil {
		facility = d.Facility.Code
		if metro == "" && d.Facility.Metro != nil {
			metro = d.Facility.Metro.Code
		}
	}
	switch {
	case metro != "" && facility != "":
		return metro + "/" + facility
	case metro != "":
		return metro
	}
	return facility
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
// without a device (of the configured plan, if one is set).
func (p *Provider) FreeReservations(ctx context.Context) ([]Reservation, error) {
	var free []Reservation
	endpoint := "projects/" + p.cfg.ProjectID + "/hardware-reservations"
	err := p.listPages(ctx, "list hardware reservations of project "+p.cfg.ProjectID, endpoint,
		url.Values{"provisionable": {"only"}}, func() { free = nil },
		func(c *packngo.Client, path string) (pageMeta, int, error) {
			var root struct {
				Reservations []packngo.HardwareReservation `json:"hardware_reservations"`
				Meta         pageMeta                      `json:"meta"`
			}
			_, err := c.DoRequest(http.MethodGet, path, nil, &root)
			for _, hr := range root.Reservations {
				if !hr.Provisionable || hr.Spare || hr.Device != nil {
					continue
				}
				if p.cfg.Plan != "" && hr.Plan.Slug != p.cfg.Plan {
					continue
				}
				r := Reservation{ID: hr.ID, ShortID: hr.ShortID, Plan: hr.Plan.Slug, Facility: hr.Facility.Code}
				if hr.Facility.Metro != nil {
					r.Metro = hr.Facility.Metro.Code
				}
				if r.ShortID == "" {
					r.ShortID = hr.ID[:min(8, len(hr.ID))]
				}
				free = append(free, r)
			}
			return root.Meta, len(root.Reservations), err
		})
	return free, err
}

// FreeCapacity is the number of free hardware reservations.
func (p *Provider) FreeCapacity(ctx context.Context) (int, error) {
	free, err := p.FreeReservations(ctx)
	return len(free), err
}

// CreateMachine provisions a device on a free hardware reservation, with
// the configured hostname prefix and OS and the shepherd's SSH key. It
// returns while the device is still provisioning.
func (p *Provider) CreateMachine(ctx context.Context) (shepherd.ProviderMachine, error) {
	p.createMu.Lock()
	defer p.createMu.Unlock()
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
	op := "create device on hardware reservation " + hr.ID
	var d *packngo.Device
	err = p.do(ctx, call{op: op, api: "POST /projects/" + p.cfg.ProjectID + "/devices"}, func(c *packngo.Client) error {
		var err error
		d, _, err = c.Devices.Create(req)
		return err
	})
	if err != nil {
		return shepherd.ProviderMachine{}, err
	}
	return p.machine(*d), nil
}

// ensureSSHKey finds the project SSH key labelled SSHKeyLabel, or creates
// it with SSHPublicKey, and returns its id.
func (p *Provider) ensureSSHKey(ctx context.Context) (string, error) {
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
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

// Reboot asks Metal to reboot the device, then waits until the device has
// gone down (any state but active) and come back (active), or fails with
// the cause after RebootTimeout.
func (p *Provider) Reboot(ctx context.Context, id string) error {
	op := "reboot device " + id
	if _, err := p.device(ctx, id, op); err != nil {
		return err
	}
	err := p.do(ctx, call{op: op, api: "POST /devices/" + id + "/actions", device: true}, func(c *packngo.Client) error {
		_, err := c.Devices.Reboot(id)
		return err
	})
	if err != nil {
		return err
	}
	// The bound is ours or the caller's (the shepherd's reboot timeout),
	// whichever ends first; the error says which wait ran out.
	bound := p.cfg.RebootTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < bound {
		bound = time.Until(dl).Round(time.Millisecond)
	}
	wait, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	tick := time.NewTicker(p.cfg.PollInterval)
	defer tick.Stop()
	wentDown, last := false, "active"
	var lastErr error
	for {
		d, err := p.device(wait, id, op)
		switch {
		case errors.Is(err, shepherd.ErrNotFound) || errors.Is(err, ErrUnauthorized):
			return err
		case errors.Is(err, context.DeadlineExceeded):
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
		if errors.Is(ctx.Err(), context.Canceled) {
			return fmt.Errorf("equinix: %s: canceled while waiting for the device (last state %s): %w", op, last, ctx.Err())
		}
		cause := fmt.Sprintf("Metal accepted the reboot but the device did not go down within %v (still %s)", bound, last)
		if wentDown {
			cause = fmt.Sprintf("the device went down but did not come back within %v (last state %s)", bound, last)
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
}

// Check verifies the credentials and access to the project, and lists free
// reservations and our devices.
func (p *Provider) Check(ctx context.Context) (ProjectInfo, error) {
	info := ProjectInfo{ID: p.cfg.ProjectID}
	err := p.do(ctx, call{op: "get project " + p.cfg.ProjectID, api: "GET /projects/" + p.cfg.ProjectID}, func(c *packngo.Client) error {
		pr, _, err := c.Projects.Get(p.cfg.ProjectID, nil)
		if err == nil {
			info.Name = pr.Name
		}
		return err
	})
	if err != nil {
		return info, err
	}
	if info.Free, err = p.FreeReservations(ctx); err != nil {
		return info, err
	}
	ds, err := p.devices(ctx)
	info.Devices = len(ds)
	return info, err
}
