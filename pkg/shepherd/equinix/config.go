package equinix

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/ssh"
)

// Config is what the provider needs to work on one Metal project.
type Config struct {
	// Token is the Metal API token: from METAL_AUTH_TOKEN (or packngo's
	// PACKET_AUTH_TOKEN), never from a command line.
	Token string
	// ProjectID is the Metal project (UUID) whose reservations and devices
	// this provider manages.
	ProjectID string
	// APIURL overrides the Metal API base URL (an emulator in tests).
	APIURL string

	// HostnamePrefix marks the devices bmctl manages: it creates them with
	// it and lists only devices whose hostname starts with it.
	HostnamePrefix string
	// Plan, if set, restricts free capacity to reservations of this plan.
	// Devices are created with their reservation's plan.
	Plan string
	// OS is the operating system slug devices are provisioned with.
	OS string
	// SSHKeyLabel names the project SSH key holding SSHPublicKey; it is
	// created in the project if missing.
	SSHKeyLabel string
	// SSHPublicKey is the shepherd's public key, in authorized_keys form.
	// Only CreateMachine needs it.
	SSHPublicKey string
	// SSHPublicKeyFile holds SSHPublicKey if that is empty. It is read when
	// first needed, so it may be created after New (the shepherd creates
	// its key pair on first start).
	SSHPublicKeyFile string
	// SSHPort is where devices' SSH servers listen (22 on Metal). A device
	// tag "bmctl.ssh-port=N" overrides it per device; see SSHPortTag.
	SSHPort int

	// PageSize is how many items a list call asks for per page.
	PageSize int
	// ListTimeout bounds one listing, all its pages and retries included.
	ListTimeout time.Duration

	// RequestsPerSecond and Burst limit the calls this client makes.
	RequestsPerSecond float64
	Burst             int
	// Retries is how many times a call is retried on 429 and on 5xx; 0
	// retries none (DefaultConfig retries 5 times).
	Retries int
	// RetryBackoff is the wait before the first retry when the API gives
	// no Retry-After; it doubles per retry up to MaxRetryWait.
	RetryBackoff time.Duration
	// MaxRetryWait caps any one wait, including a Retry-After.
	MaxRetryWait time.Duration
	// CallTimeout bounds one API call, retries included.
	CallTimeout time.Duration
	// RebootTimeout bounds how long Reboot waits for the device to go down
	// and come back; PollInterval is how often it looks.
	RebootTimeout time.Duration
	PollInterval  time.Duration

	// HTTPClient's Transport carries the calls (nil: the default one);
	// timeouts are CallTimeout's.
	HTTPClient *http.Client
}

// Environment variables ConfigFromEnv reads.
const (
	EnvToken       = "METAL_AUTH_TOKEN"
	EnvTokenPacket = "PACKET_AUTH_TOKEN" // packngo's name, accepted too
	EnvProject     = "METAL_PROJECT_ID"  // the Metal CLI's name
	EnvProjectOurs = "BMCTL_EQUINIX_PROJECT"
	EnvAPIURL      = "BMCTL_EQUINIX_API_URL"
	EnvPrefix      = "BMCTL_EQUINIX_HOSTNAME_PREFIX"
	EnvPlan        = "BMCTL_EQUINIX_PLAN"
	EnvOS          = "BMCTL_EQUINIX_OS"
	EnvSSHKeyLabel = "BMCTL_EQUINIX_SSH_KEY_LABEL"
	EnvSSHPort     = "BMCTL_EQUINIX_SSH_PORT"
)

// DefaultConfig is a Config with every default filled in and no
// credentials or project.
func DefaultConfig() Config {
	return Config{
		HostnamePrefix:    "bmctl-",
		OS:                "ubuntu_24_04",
		SSHKeyLabel:       "bmctl-shepherd",
		SSHPort:           22,
		PageSize:          100,
		ListTimeout:       5 * time.Minute,
		RequestsPerSecond: 5,
		Burst:             10,
		Retries:           5,
		RetryBackoff:      time.Second,
		MaxRetryWait:      time.Minute,
		CallTimeout:       2 * time.Minute,
		RebootTimeout:     15 * time.Minute,
		PollInterval:      10 * time.Second,
	}
}

// ConfigFromEnv is DefaultConfig overridden by the environment, read
// through getenv (os.Getenv).
func ConfigFromEnv(getenv func(string) string) Config {
	c := DefaultConfig()
	c.Token = firstOf(getenv(EnvToken), getenv(EnvTokenPacket))
	c.ProjectID = firstOf(getenv(EnvProjectOurs), getenv(EnvProject))
	c.APIURL = getenv(EnvAPIURL)
	c.HostnamePrefix = firstOf(getenv(EnvPrefix), c.HostnamePrefix)
	c.Plan = getenv(EnvPlan)
	c.OS = firstOf(getenv(EnvOS), c.OS)
	c.SSHKeyLabel = firstOf(getenv(EnvSSHKeyLabel), c.SSHKeyLabel)
	if p, err := strconv.Atoi(getenv(EnvSSHPort)); err == nil {
		c.SSHPort = p
	}
	return c
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// Validate says, in one line each, what is missing or wrong.
func (c Config) Validate() error {
	var errs []error
	if c.Token == "" {
		errs = append(errs, fmt.Errorf("no Metal API token: export %s (or %s)", EnvToken, EnvTokenPacket))
	}
	if c.ProjectID == "" {
		errs = append(errs, fmt.Errorf("no Metal project: pass --equinix-project or export %s", EnvProject))
	} else if _, err := uuid.Parse(c.ProjectID); err != nil {
		errs = append(errs, fmt.Errorf("Metal project %q is not a UUID", c.ProjectID))
	}
	if c.HostnamePrefix == "" {
		errs = append(errs, errors.New("empty hostname prefix: bmctl would claim every device in the project"))
	}
	if c.SSHPort <= 0 || c.SSHPort > 65535 {
		errs = append(errs, fmt.Errorf("SSH port %d is not a TCP port", c.SSHPort))
	}
	if c.SSHPublicKey != "" {
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.SSHPublicKey)); err != nil {
			errs = append(errs, fmt.Errorf("shepherd SSH public key: %v", err))
		}
	}
	return errors.Join(errs...)
}

// SSHPortTag is the device tag that says its SSH server listens on a port
// other than the configured one: "bmctl.ssh-port=2222". Real Metal devices
// listen on 22 and need no tag; emulated devices on 127.0.0.1 carry it.
func SSHPortTag(port int) string { return sshPortTagPrefix + strconv.Itoa(port) }

const sshPortTagPrefix = "bmctl.ssh-port="

func sshPortFromTags(tags []string) (int, bool) {
	for _, t := range tags {
		if v, ok := strings.CutPrefix(t, sshPortTagPrefix); ok {
			if p, err := strconv.Atoi(v); err == nil && p > 0 && p <= 65535 {
				return p, true
			}
		}
	}
	return 0, false
}
