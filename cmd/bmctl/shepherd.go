package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/fleet"
	"github.com/bmctl/bmctl/pkg/shepherd"
	"github.com/bmctl/bmctl/pkg/shepherd/equinix"
)

func init() { commands = append(commands, newShepherdCmd) }

func newShepherdCmd(a *app) *cobra.Command {
	cmd := asGroup(&cobra.Command{
		Use:   "shepherd",
		Short: "Run the shepherd: start agents on machines, recover dead ones, reconcile providers",
	})
	cmd.AddCommand(newShepherdRunCmd(a), newForgetHostKeyCmd(a))
	return cmd
}

// shepherdOptions are `bmctl shepherd run`'s flags.
type shepherdOptions struct {
	provider    string
	inventory   string
	loops       string
	agentPar    int
	agentRate   float64
	agentBack   string
	recPar      int
	recRate     float64
	recBack     string
	noHBStart   time.Duration
	staleHB     time.Duration
	budget      bmdb.Budget
	breaker     bmdb.BreakerPolicy
	sshKey      string
	sshUser     string
	agentBin    string
	remotePath  string
	endpoints   []string
	endpointCA  string
	dialTO      time.Duration
	uploadTO    time.Duration
	execTO      time.Duration
	rebootTO    time.Duration
	provEvery   time.Duration
	maxMachines int
	sessionIvl  time.Duration
	metrics     string
	shutdownTO  time.Duration
	log         *slog.Logger // for the static provider's BMC clients
}

func newShepherdRunCmd(a *app) *cobra.Command {
	o := &shepherdOptions{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the shepherd's loops until SIGINT or SIGTERM",
		Long: `Runs the shepherd's control loops against BMDB:

  agentstart     dial provided machines over SSH, upload the agent (this bmctl
                 binary by default) and start it as "<path> agent"
  recovery       reboot machines whose agent stopped heart-beating, through
                 their provider, so that agentstart starts it again
  provisioning   record the provider's machines in BMDB, refresh them, and
                 create machines from free capacity up to --max-machines

Providers: "static" (an inventory file of machines, rebooted through their BMCs,
Redfish or IPMI, or by a reboot command; see --inventory and the README) or "equinix" (Equinix Metal; token from METAL_AUTH_TOKEN).

Every flag can also be set by a BMCTL_<FLAG> environment variable, dashes as
underscores (BMCTL_AGENT_ENDPOINT, BMCTL_AGENTSTART_PARALLELISM, ...), or in
the config file under shepherd: (see bmctl config --help).

SIGINT/SIGTERM stops claiming, cancels work in flight (history records it as
Canceled), closes the sessions and exits 0; a second signal exits at once.

A BMDB schema behind this binary (bmctl migrate up not yet run) is waited
for, with /metrics served (bmctl_bmdb_schema_version), rather than failed.
Metrics and the alert rules for them: docs/metrics.md.`,
		Args: noArgs,
	}
	fs := cmd.Flags()
	fs.StringVar(&o.provider, "provider", "", "where machines come from and how they reboot: static or equinix; none runs agentstart only")
	fs.StringVar(&o.inventory, "inventory", "", "static provider: the inventory file (YAML or JSON)")
	fs.StringVar(&o.loops, "loops", "", "comma-separated loops to run: agentstart, recovery, provisioning (default: all three with a provider, agentstart without)")
	fs.IntVar(&o.agentPar, "agentstart-parallelism", 8, "AgentStart workers, each with its own BMDB session")
	fs.Float64Var(&o.agentRate, "agentstart-rate", 20, "AgentStart candidate queries per second at most (0: no limit)")
	fs.StringVar(&o.agentBack, "agentstart-backoff", backoffString(bmdb.AgentStartBackoff), "AgentStart backoff after a failure: initial,maximum,exponent")
	fs.IntVar(&o.recPar, "recovery-parallelism", 2, "Recovery workers, each with its own BMDB session")
	fs.Float64Var(&o.recRate, "recovery-rate", 5, "Recovery candidate queries per second at most (0: no limit)")
	fs.StringVar(&o.recBack, "recovery-backoff", backoffString(bmdb.RecoveryBackoff), "Recovery backoff after a failure: initial,maximum,exponent")
	fs.DurationVar(&o.noHBStart, "no-heartbeat-after-start", bmdb.DefaultRecoveryThresholds.NoHeartbeatAfterStart, "recover an agent that never heart-beat this long after its start")
	fs.DurationVar(&o.staleHB, "stale-heartbeat", bmdb.DefaultRecoveryThresholds.StaleHeartbeat, "recover an agent whose last heartbeat is older than this")
	fs.IntVar(&o.budget.Attempts, "recovery-budget", bmdb.DefaultBudget.Attempts, "remediation budget: Recovery attempts per machine per --recovery-budget-window; a machine over it gets a needs-attention mark")
	fs.DurationVar(&o.budget.Window, "recovery-budget-window", bmdb.DefaultBudget.Window, "the remediation budget's sliding window")
	fs.IntVar(&o.breaker.MaxSilent, "breaker-max-silent", bmdb.DefaultBreaker.MaxSilent, "fleet circuit breaker: Recovery stops while more machines than max(this, --breaker-max-silent-fraction of the fleet) are silent")
	fs.Float64Var(&o.breaker.MaxSilentFraction, "breaker-max-silent-fraction", bmdb.DefaultBreaker.MaxSilentFraction, "fleet circuit breaker: the fraction of the fleet (0-1)")
	fs.IntVar(&o.breaker.LocationMaxSilent, "breaker-location-max-silent", bmdb.DefaultBreaker.LocationMaxSilent, "per-location breaker: Recovery stops in a location while more of its machines than max(this, the fraction) are silent")
	fs.Float64Var(&o.breaker.LocationMaxSilentFraction, "breaker-location-max-silent-fraction", bmdb.DefaultBreaker.LocationMaxSilentFraction, "per-location breaker: the fraction of the location's machines (0-1)")
	fs.DurationVar(&o.breaker.Silence, "breaker-silence", 0, "a machine counts as silent for the breakers once its last heartbeat is this old (default: half of --stale-heartbeat)")
	fs.StringVar(&o.sshKey, "ssh-key", filepath.Join(stateDir(), "shepherd_ed25519"), "the shepherd's SSH private key; created (with a .pub beside it) if missing")
	fs.StringVar(&o.sshUser, "ssh-user", "root", "SSH user on the machines")
	fs.StringVar(&o.agentBin, "agent-binary", "", "agent binary to upload (default: this bmctl executable, run as \"<path> agent\")")
	fs.StringVar(&o.remotePath, "agent-remote-path", shepherd.DefaultRemotePath, "where the agent binary goes on a machine")
	fs.StringSliceVar(&o.endpoints, "agent-endpoint", nil, "heartbeat endpoint URL the agents report to (https://host:port); needed by agentstart. Repeat it or separate by commas for endpoint replicas on one BMDB: agents move to another when one fails")
	fs.StringVar(&o.endpointCA, "agent-endpoint-ca", "", "PEM file of the CA the endpoint's certificate chains to, passed to the agents")
	fs.DurationVar(&o.dialTO, "ssh-dial-timeout", 15*time.Second, "bound on TCP connect plus SSH handshake")
	fs.DurationVar(&o.uploadTO, "agent-upload-timeout", 5*time.Minute, "bound on uploading the agent")
	fs.DurationVar(&o.execTO, "agent-exec-timeout", time.Minute, "bound on running the agent until its reply")
	fs.DurationVar(&o.rebootTO, "reboot-timeout", 10*time.Minute, "bound on one reboot through the provider, until it took effect")
	fs.DurationVar(&o.provEvery, "provision-interval", time.Minute, "how often provisioning reconciles the provider with BMDB")
	fs.IntVar(&o.maxMachines, "max-machines", 0, "provisioning creates machines from free capacity up to this many (0: never creates)")
	fs.DurationVar(&o.sessionIvl, "session-interval", 10*time.Second, "BMDB session lease: a crashed shepherd's machines are free again after about this long")
	fs.StringVar(&o.metrics, "metrics-addr", "", "serve Prometheus /metrics on this address (host:port); empty: off")
	fs.DurationVar(&o.shutdownTO, "shutdown-timeout", 30*time.Second, "bound on a graceful shutdown")
	loadEquinix := equinixFlags(fs)

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		log := a.logger()
		o.log = log
		cfg, err := o.config(loadEquinix, a.Err)
		if err != nil {
			return err
		}
		conn, err := waitForDB(ctx, log, func(ctx context.Context) (*bmdb.Conn, error) {
			url, err := a.databaseURL(ctx)
			if err != nil {
				return nil, err
			}
			return bmdb.Open(ctx, url)
		})
		if err != nil {
			return err
		}
		defer conn.Close()
		cfg.Conn, cfg.Logger, cfg.Version = conn, log, version

		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		cfg.Metrics = shepherd.NewMetrics(reg)
		zeroSeries(cfg.Metrics, cfg)
		registerBuildMetrics(reg, conn.Pool)
		reg.MustRegister(fleet.NewCollector(conn.Pool, bmdb.RecoveryThresholds{NoHeartbeatAfterStart: o.noHBStart, StaleHeartbeat: o.staleHB}))
		if o.metrics != "" {
			stop, err := serveMetrics(o.metrics, reg)
			if err != nil {
				return err
			}
			defer stop()
			log.Info("serving metrics", "addr", o.metrics)
		}
		// Upgraded before its database: wait for bmctl migrate up, with
		// metrics up for the alert, instead of a restart loop.
		if err := waitForSchema(ctx, conn.Pool, log, 5*time.Second); err != nil || ctx.Err() != nil {
			return err
		}
		if err := conn.CheckGrants(ctx, bmdb.RoleShepherd); err != nil {
			return err
		}
		return runUntilSignal(ctx, cfg, o.shutdownTO, a)
	}
	return cmd
}

// config checks the options and builds the shepherd's configuration.
func (o *shepherdOptions) config(loadEquinix func() (equinix.Config, error), notes io.Writer) (shepherd.Config, error) {
	var cfg shepherd.Config
	switch o.provider {
	case "":
	case "static":
		if o.inventory == "" {
			return cfg, usageError{errors.New("--provider static needs --inventory FILE (env BMCTL_INVENTORY)")}
		}
		p, err := shepherd.NewStaticProvider(o.inventory, o.log)
		if err != nil {
			return cfg, usageError{err}
		}
		cfg.Providers = []shepherd.Provider{p}
	case "equinix":
		ec, err := loadEquinix()
		if err != nil {
			return cfg, err
		}
		p, err := equinix.New(ec)
		if err != nil {
			return cfg, usageError{oneError(err)}
		}
		cfg.Providers = []shepherd.Provider{p}
	default:
		return cfg, usageError{fmt.Errorf("--provider %q: want static or equinix", o.provider)}
	}
	loops := o.loops
	if loops == "" {
		loops = "agentstart"
		if o.provider != "" {
			loops = "agentstart,recovery,provisioning"
		}
	}
	on := map[string]bool{}
	for _, l := range strings.Split(loops, ",") {
		l = strings.ToLower(strings.TrimSpace(l))
		switch l {
		case "agentstart", "recovery", "provisioning":
			on[l] = true
		default:
			return cfg, usageError{fmt.Errorf("--loops: unknown loop %q; want agentstart, recovery, provisioning", l)}
		}
	}
	if (on["recovery"] || on["provisioning"]) && len(cfg.Providers) == 0 {
		return cfg, usageError{errors.New("recovery and provisioning need --provider (static or equinix)")}
	}
	if o.agentPar < 1 || o.recPar < 1 {
		return cfg, usageError{errors.New("parallelism must be at least 1")}
	}
	if o.sessionIvl < time.Second {
		return cfg, usageError{errors.New("--session-interval must be at least 1s")}
	}
	cfg.SessionInterval = o.sessionIvl

	if on["agentstart"] {
		back, err := parseBackoff("--agentstart-backoff", o.agentBack)
		if err != nil {
			return cfg, err
		}
		if len(o.endpoints) == 0 {
			return cfg, usageError{errors.New("agentstart needs --agent-endpoint URL (env BMCTL_AGENT_ENDPOINT): where the agents heart-beat")}
		}
		for _, e := range o.endpoints {
			if u, err := url.Parse(e); err != nil || u.Scheme != "https" || u.Host == "" {
				return cfg, usageError{fmt.Errorf("--agent-endpoint %q is not an https://host:port URL", e)}
			}
		}
		var ca []byte
		if o.endpointCA != "" {
			if ca, err = os.ReadFile(o.endpointCA); err != nil {
				return cfg, usageError{fmt.Errorf("--agent-endpoint-ca: %w", err)}
			}
		}
		bin := o.agentBin
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				return cfg, fmt.Errorf("finding this bmctl executable to upload as the agent: %w; give --agent-binary", err)
			}
		}
		if _, err := os.Stat(bin); err != nil {
			return cfg, usageError{fmt.Errorf("--agent-binary: %w", err)}
		}
		signer, created, err := shepherd.LoadOrCreateKey(o.sshKey)
		if err != nil {
			return cfg, err
		}
		if created {
			fmt.Fprintf(notes, "bmctl: created SSH key %s; install %s.pub in %s's authorized_keys on the machines\n", o.sshKey, o.sshKey, o.sshUser)
		}
		cfg.AgentStart = &shepherd.AgentStartConfig{
			LoopConfig:    shepherd.LoopConfig{Parallelism: o.agentPar, QueryRate: o.agentRate, Backoff: back},
			Signer:        signer,
			User:          o.sshUser,
			AgentBinary:   bin,
			RemotePath:    o.remotePath,
			Endpoint:      o.endpoints[0],
			MoreEndpoints: o.endpoints[1:],
			EndpointCA:    string(ca),
			DialTimeout:   o.dialTO, UploadTimeout: o.uploadTO, ExecTimeout: o.execTO,
		}
	}
	if on["recovery"] {
		back, err := parseBackoff("--recovery-backoff", o.recBack)
		if err != nil {
			return cfg, err
		}
		if o.budget.Attempts < 1 || o.budget.Window <= 0 {
			return cfg, usageError{errors.New("--recovery-budget must be at least 1 and --recovery-budget-window positive")}
		}
		pol := bmdb.Policy{Thresholds: bmdb.RecoveryThresholds{NoHeartbeatAfterStart: o.noHBStart, StaleHeartbeat: o.staleHB}, Budget: o.budget, Breaker: o.breaker}
		if err := pol.Validate(); err != nil {
			return cfg, usageError{err}
		}
		if o.noHBStart <= 0 || o.staleHB <= 0 {
			return cfg, usageError{errors.New("--no-heartbeat-after-start and --stale-heartbeat must be positive")}
		}
		cfg.Recovery = &shepherd.RecoveryConfig{
			LoopConfig:    shepherd.LoopConfig{Parallelism: o.recPar, QueryRate: o.recRate, Backoff: back},
			Thresholds:    bmdb.RecoveryThresholds{NoHeartbeatAfterStart: o.noHBStart, StaleHeartbeat: o.staleHB},
			Budget:        o.budget,
			Breaker:       o.breaker,
			RebootTimeout: o.rebootTO,
		}
	}
	if on["provisioning"] {
		cfg.Provisioning = &shepherd.ProvisioningConfig{Interval: o.provEvery, MaxMachines: o.maxMachines}
	}
	return cfg, nil
}

func backoffString(b bmdb.Backoff) string {
	return fmt.Sprintf("%s,%s,%g", shortDuration(b.Initial), shortDuration(b.Maximum), b.Exponent)
}

func shortDuration(d time.Duration) string {
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	return strings.TrimSuffix(s, "0m")
}

// parseBackoff reads "initial,maximum,exponent", e.g. "5m,4h,1.2".
func parseBackoff(flag, s string) (bmdb.Backoff, error) {
	bad := func(why string) (bmdb.Backoff, error) {
		return bmdb.Backoff{}, usageError{fmt.Errorf("%s %q: %s; want initial,maximum,exponent like 5m,4h,1.2", flag, s, why)}
	}
	parts := strings.Split(s, ",")
	if len(parts) != 3 {
		return bad("not three values")
	}
	initial, err := time.ParseDuration(strings.TrimSpace(parts[0]))
	if err != nil || initial <= 0 {
		return bad("initial is not a positive duration")
	}
	maximum, err := time.ParseDuration(strings.TrimSpace(parts[1]))
	if err != nil || maximum < initial {
		return bad("maximum is not a duration at least the initial one")
	}
	exp, err := strconv.ParseFloat(strings.TrimSpace(parts[2]), 64)
	if err != nil || exp < 1 {
		return bad("exponent is not a number of at least 1")
	}
	return bmdb.Backoff{Initial: initial, Maximum: maximum, Exponent: exp}, nil
}

// serveMetrics serves reg on addr's /metrics until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// runUntilSignal runs the shepherd until ctx ends (main cancels it on the
// first SIGINT/SIGTERM); a second signal exits the process at once, and a
// shutdown that takes longer than bound fails.
func runUntilSignal(ctx context.Context, cfg shepherd.Config, bound time.Duration, a *app) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		n := 0
		for range sigs {
			if n++; n >= 2 {
				fmt.Fprintln(a.Err, "bmctl: second signal: exiting at once; held work is released when its sessions expire")
				os.Exit(1)
			}
		}
	}()

	done := make(chan error, 1)
	go func() { done <- shepherd.Run(ctx, cfg) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	cfg.Logger.Info("stopping: canceling work in flight and closing sessions; a second signal exits at once")
	select {
	case err := <-done:
		return err
	case <-time.After(bound):
		return fmt.Errorf("shutdown did not finish within %s; work still held is released when its sessions expire", bound)
	}
}

func newForgetHostKeyCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "forget-host-key MACHINE",
		Short: "Forget a machine's pinned SSH host key (after a reinstall), so the next connection pins the new one",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			conn, id, err := a.connectMachine(ctx, a.connect, args[0])
			if err != nil {
				return err
			}
			defer conn.Close()
			forgot, err := shepherd.ForgetHostKey(ctx, conn.Pool, id)
			if err != nil {
				return err
			}
			if !forgot {
				fmt.Fprintf(a.Out, "machine %s had no pinned host key\n", id)
				return nil
			}
			fmt.Fprintf(a.Out, "forgot the pinned host key of machine %s; the next connection pins the key it presents\n", id)
			return nil
		},
	}
}
