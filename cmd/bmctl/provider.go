package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/bmctl/bmctl/pkg/shepherd/equinix"
)

func init() { commands = append(commands, newProviderCmd) }

func newProviderCmd(a *app) *cobra.Command {
	cmd := asGroup(&cobra.Command{
		Use:   "provider",
		Short: "Check the clouds bmctl gets machines from",
	})
	cmd.AddCommand(newProviderCheckCmd(a))
	return cmd
}

func newProviderCheckCmd(a *app) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Verify Equinix Metal credentials and project access, and list free hardware reservations",
		Long: `Check asks Equinix Metal for the project, its free hardware reservations (the
capacity the shepherd provisions from) and the devices bmctl manages there.

The API token comes from METAL_AUTH_TOKEN (or PACKET_AUTH_TOKEN), never from
the command line; the project from --equinix-project or METAL_PROJECT_ID.

Devices and reservations whose answers bmctl cannot read are listed on
stderr, one line each, and the check then exits 1.`,
		Args: noArgs,
	}
	loadConfig := equinixFlags(cmd.Flags())
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		format, err := outputFormat(output, "table", "json")
		if err != nil {
			return err
		}
		cfg, err := loadConfig()
		if err != nil {
			return err
		}
		p, err := equinix.New(cfg)
		if err != nil {
			return usageError{oneError(err)}
		}
		info, err := p.Check(cmd.Context())
		if err != nil {
			return err
		}
		if err := printCheck(a, format, cfg, info); err != nil {
			return err
		}
		for _, problem := range info.Problems {
			fmt.Fprintln(a.Err, "bmctl: "+oneLine(problem))
		}
		if n := len(info.Problems); n > 0 {
			return fmt.Errorf("Metal project %s: %d device(s) or reservation(s) bmctl cannot read, listed above", info.ID, n)
		}
		return nil
	}
	return cmd
}

// printCheck prints what Check found, as a table or JSON.
func printCheck(a *app, format string, cfg equinix.Config, info equinix.ProjectInfo) error {
	if format == "json" {
		type reservation struct {
			ID       string `json:"id"`
			Plan     string `json:"plan"`
			Location string `json:"location"`
		}
		out := struct {
			ProjectID   string        `json:"project_id"`
			ProjectName string        `json:"project_name"`
			Devices     int           `json:"devices"`
			Free        []reservation `json:"free_reservations"`
			Problems    []string      `json:"problems"`
		}{ProjectID: info.ID, ProjectName: info.Name, Devices: info.Devices, Free: []reservation{}, Problems: info.Problems}
		if out.Problems == nil {
			out.Problems = []string{}
		}
		for _, r := range info.Free {
			out.Free = append(out.Free, reservation{r.ID, r.Plan, r.Location()})
		}
		return writeJSON(a.Out, out)
	}
	fmt.Fprintf(a.Out, "Project %s (%s): credentials accepted; %d device(s) with prefix %q; %d free hardware reservation(s)\n",
		info.Name, info.ID, info.Devices, cfg.HostnamePrefix, len(info.Free))
	if len(info.Free) == 0 {
		return nil
	}
	t := newTable("RESERVATION", "PLAN", "LOCATION")
	for _, r := range info.Free {
		t.add(r.ID, r.Plan, r.Location())
	}
	return a.printTable(t)
}

// equinixFlags registers the Equinix Metal provider's flags on fs and
// returns what builds the provider's configuration once flags are parsed.
// The flags' variables (BMCTL_EQUINIX_*) come through settings.go; the
// token only from the environment. The shepherd's command uses it too:
// `bmctl shepherd run --provider equinix`.
func equinixFlags(fs *pflag.FlagSet) func() (equinix.Config, error) {
	c := equinix.DefaultConfig()
	c.Token = equinix.ConfigFromEnv(os.Getenv).Token
	var keyFile string
	fs.StringVar(&c.ProjectID, "equinix-project", c.ProjectID, "Equinix Metal project UUID (env METAL_PROJECT_ID or BMCTL_EQUINIX_PROJECT); the token comes from METAL_AUTH_TOKEN")
	fs.StringVar(&c.APIURL, "equinix-api-url", c.APIURL, "Metal API base URL (env BMCTL_EQUINIX_API_URL); default https://api.equinix.com/metal/v1/")
	fs.StringVar(&c.HostnamePrefix, "equinix-hostname-prefix", c.HostnamePrefix, "hostname prefix of the devices bmctl creates and manages (env BMCTL_EQUINIX_HOSTNAME_PREFIX)")
	fs.StringVar(&c.Plan, "equinix-plan", c.Plan, "use only hardware reservations of this plan (env BMCTL_EQUINIX_PLAN); default any")
	fs.StringVar(&c.OS, "equinix-os", c.OS, "operating system slug for new devices (env BMCTL_EQUINIX_OS)")
	fs.StringVar(&c.SSHKeyLabel, "equinix-ssh-key-label", c.SSHKeyLabel, "label of the project SSH key holding the shepherd's public key (env BMCTL_EQUINIX_SSH_KEY_LABEL)")
	setEnvVars(fs, "equinix-project", equinix.EnvProjectOurs, equinix.EnvProject)
	fs.StringVar(&keyFile, "equinix-ssh-public-key-file", "", "the shepherd's SSH public key, put on new devices (env BMCTL_EQUINIX_SSH_PUBLIC_KEY_FILE); default: --ssh-key's .pub where that flag exists")
	fs.IntVar(&c.SSHPort, "equinix-ssh-port", c.SSHPort, "SSH port of devices without a bmctl.ssh-port=N tag (env BMCTL_EQUINIX_SSH_PORT)")
	fs.Float64Var(&c.RequestsPerSecond, "equinix-rate", c.RequestsPerSecond, "Metal API calls per second at most")
	fs.DurationVar(&c.RebootTimeout, "equinix-reboot-timeout", c.RebootTimeout, "how long a reboot may take to go down and come back")
	fs.DurationVar(&c.PollInterval, "equinix-poll-interval", c.PollInterval, "how often a reboot looks at the device's state")
	fs.DurationVar(&c.ListTimeout, "equinix-list-timeout", c.ListTimeout, "how long one listing of devices or reservations may take, all its pages included")
	return func() (equinix.Config, error) {
		switch {
		case keyFile != "":
			b, err := os.ReadFile(keyFile)
			if err != nil {
				return c, usageError{fmt.Errorf("reading the shepherd's SSH public key: %w", err)}
			}
			c.SSHPublicKey = strings.TrimSpace(string(b))
		case fs.Lookup("ssh-key") != nil:
			// The shepherd's own key pair, which it may create only after
			// this; the provider reads the file when it first needs it.
			c.SSHPublicKeyFile = fs.Lookup("ssh-key").Value.String() + ".pub"
		}
		if c.RebootTimeout <= 0 || c.PollInterval <= 0 || c.ListTimeout <= 0 {
			return c, usageError{errors.New("--equinix-reboot-timeout, --equinix-poll-interval and --equinix-list-timeout must be positive")}
		}
		if c.PollInterval > c.RebootTimeout {
			c.PollInterval = min(c.RebootTimeout, 10*time.Second)
		}
		return c, nil
	}
}

// oneError joins a multi-line error (errors.Join) into one line.
func oneError(err error) error {
	return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
}
