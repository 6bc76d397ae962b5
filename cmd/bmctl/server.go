package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/time/rate"

	"github.com/bmctl/bmctl/pkg/bmdb"
	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

func init() { commands = append(commands, newServerCmd) }

func newServerCmd(a *app) *cobra.Command {
	var (
		listen, certFile, keyFile, caDir string
		caHosts                          []string
		interval, stale, batchWait       time.Duration
		observerEvery                    time.Duration
		maxBody                          int64
		agentRate, maxRate               float64
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Serve the HTTPS endpoint agents heart-beat to",
		Long: `Accepts agents' heartbeats over mutual TLS and records them in BMDB: a heartbeat
counts only when its client key is the one the machine's agent-started tag
holds. The first heartbeat of an agent carries its hardware report. Serves
/metrics (Prometheus) and /healthz too.

TLS: --tls-cert and --tls-key name the server's certificate and key (PEM);
give the shepherd the CA they chain to. Or --dev-ca-dir: a development CA is
created there once and kept, and a server certificate for --dev-ca-hosts is
issued from it at each start; give the shepherd <dir>/ca.pem.`,
		Example: "  bmctl server --listen :8443 --dev-ca-dir /var/lib/bmctl/ca\n" +
			"  bmctl server --listen :8443 --tls-cert server.pem --tls-key server-key.pem",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			byFiles := certFile != "" || keyFile != ""
			switch {
			case byFiles && caDir != "":
				return usageError{errors.New("give either --tls-cert/--tls-key or --dev-ca-dir, not both")}
			case byFiles && (certFile == "" || keyFile == ""):
				return usageError{errors.New("--tls-cert and --tls-key go together")}
			case !byFiles && caDir == "":
				return usageError{errors.New("no TLS certificate: give --tls-cert and --tls-key, or --dev-ca-dir for a development CA")}
			}
			if interval < 100*time.Millisecond || interval > stale/2 {
				return usageError{fmt.Errorf("--heartbeat-interval %s must be at least 100ms and at most half of --stale-heartbeat %s, or healthy agents would be recovered", interval, stale)}
			}
			if maxBody < 1024 {
				return usageError{fmt.Errorf("--max-body %d is too small for a hardware report; give at least 1024 bytes", maxBody)}
			}
			if agentRate < 0 || maxRate < 0 {
				return usageError{errors.New("--agent-rate and --max-rate cannot be negative")}
			}
			if observerEvery < 10*time.Millisecond || 3*observerEvery > stale/2 {
				return usageError{fmt.Errorf("--observer-interval %s must be at least 10ms and its gap (3 intervals) at most half of --stale-heartbeat %s", observerEvery, stale)}
			}
			if batchWait < 0 || batchWait > time.Second {
				return usageError{fmt.Errorf("--batch-wait %s must be between 0 and 1s", batchWait)}
			}
			var cert tls.Certificate
			var err error
			caNote := "the CA your certificate chains to"
			if byFiles {
				cert, err = tls.LoadX509KeyPair(certFile, keyFile)
				if err != nil {
					return fmt.Errorf("loading TLS certificate: %w", err)
				}
			} else {
				ca, err := devca.Ensure(caDir)
				if err != nil {
					return err
				}
				if cert, err = ca.ServerCertificate(caHosts); err != nil {
					return err
				}
				caNote = devca.CertPath(caDir)
			}
			ctx := cmd.Context()
			url, err := a.databaseURL(ctx)
			if err != nil {
				return err
			}
			if _, err := waitForDB(ctx, a.logger(), func(ctx context.Context) (struct{}, error) {
				conn, err := bmdb.Open(ctx, url)
				if err != nil {
					return struct{}{}, err
				}
				defer conn.Close()
				if err := conn.CheckSchema(ctx); err != nil {
					return struct{}{}, err
				}
				return struct{}{}, conn.CheckGrants(ctx, bmdb.RoleEndpoint)
			}); err != nil {
				return err
			}
			// Its own pool: heartbeats commit without waiting for the disk.
			pool, err := heartbeat.OpenPool(ctx, url, 0)
			if err != nil {
				return err
			}
			defer pool.Close()
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			log := a.logger()
			srv := heartbeat.New(heartbeat.Config{
				Pool: pool, Logger: log, Interval: interval, MaxBodyBytes: maxBody,
				AgentRate: rate.Limit(agentRate), MaxRate: rate.Limit(maxRate), BatchWait: noWaitIfZero(batchWait),
				ObserverInterval: observerEvery,
			})
			registerBuildMetrics(srv.Registry(), pool)
			log.Info("heartbeat endpoint listening", "url", "https://"+ln.Addr().String(), "agents_ca", caNote, "interval", interval)
			return srv.Serve(ctx, ln, cert)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", ":8443", "address to listen on (env BMCTL_SERVER_LISTEN)")
	setEnvVars(f, "listen", "BMCTL_SERVER_LISTEN")
	f.StringVar(&certFile, "tls-cert", "", "server certificate chain, PEM (env BMCTL_TLS_CERT)")
	f.StringVar(&keyFile, "tls-key", "", "server private key, PEM (env BMCTL_TLS_KEY)")
	f.StringVar(&caDir, "dev-ca-dir", "", "development CA directory, created if missing (env BMCTL_DEV_CA_DIR)")
	f.StringSliceVar(&caHosts, "dev-ca-hosts", devca.DefaultHosts(), "names and addresses the development server certificate is for")
	f.DurationVar(&interval, "heartbeat-interval", heartbeat.DefaultInterval, "how often agents are told to heart-beat")
	f.DurationVar(&stale, "stale-heartbeat", bmdb.DefaultRecoveryThresholds.StaleHeartbeat, "Recovery's stale-heartbeat threshold; the interval must stay well under it")
	f.Int64Var(&maxBody, "max-body", heartbeat.DefaultMaxBodyBytes, "largest heartbeat request body, bytes")
	f.Float64Var(&agentRate, "agent-rate", 0, "heartbeats per second allowed per agent key (default: two per interval, at least 2/s)")
	f.DurationVar(&observerEvery, "observer-interval", heartbeat.DefaultObserverInterval, "how often the endpoint records in BMDB that it is alive and writing; a silence of 3 of them is a gap that no machine's staleness counts")
	f.Float64Var(&maxRate, "max-rate", 0, "heartbeats per second allowed in all, shedding load beyond it (0: no cap)")
	f.DurationVar(&batchWait, "batch-wait", heartbeat.DefaultBatchWait, "longest a heartbeat waits for others to share its database commit (0: none)")
	return cmd
}

// noWaitIfZero maps the flag's 0 (no wait) to heartbeat.Config's negative.
func noWaitIfZero(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
