// Package hbbench measures how many heartbeats one heartbeat server sustains:
// it registers simulated agents (machines with started agents and their
// keys) in a database, serves the real endpoint on loopback and has every
// agent heart-beat over its own mutual-TLS connection, as a fleet does.
package hbbench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/bmctl/bmctl/pkg/devca"
	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// Options bound a run.
type Options struct {
	// DatabaseURL is a migrated BMDB the run may fill with its agents.
	DatabaseURL string
	// Endpoint and EndpointCA name a heartbeat server already running on
	// DatabaseURL (a `bmctl server` process, whose cost can then be told
	// apart); empty, Run serves one in this process, its CA in CADir.
	Endpoint   string
	EndpointCA []byte
	CADir      string
	// Agents is the number of simulated agents.
	Agents int
	// Duration bounds the measured phase.
	Duration time.Duration
	// MaxHeartbeats bounds it too: the phase ends at whichever comes first.
	MaxHeartbeats int64
	// Interval is each agent's heartbeat period; 0 sends the next heartbeat
	// as soon as the last is answered (closed loop: the server's capacity).
	Interval time.Duration
	// PoolSize is the endpoint's database connections (0: bmdb's default).
	PoolSize int
	// BatchWait is the in-process endpoint's heartbeat.Config.BatchWait.
	BatchWait time.Duration
	Logger    *slog.Logger
	// Meters read the CPU time processes apart from this one (the server,
	// the database) have used so far, to charge the measured phase with it.
	Meters []Meter
}

// Meter reads a CPU time counter.
type Meter struct {
	Name string
	Read func() time.Duration
}

// CPU is what one meter counted in the measured phase.
type CPU struct {
	Name string
	Used time.Duration
}

// Result is what a run measured.
type Result struct {
	Agents int
	// Setup is the time to first contact of all agents: TLS handshake and
	// hardware report each.
	Setup    time.Duration
	Elapsed  time.Duration
	Accepted int64
	Failed   int64
	// PerSecond is accepted heartbeats per second in the measured phase.
	PerSecond          float64
	P50, P90, P99, Max time.Duration
	FirstError         string
	// CPU is what each process spent in the measured phase, this one
	// ("bench": the agents, and the server when it runs here) first: on a
	// shared machine it says more about cost than the rate does.
	CPU []CPU
	// ServerP50 and ServerP99 are the endpoint's own view of the measured
	// phase, from its accepted-latency histogram (bucket upper bounds, a
	// factor of 2 apart): next to P50 and P99 they tell the server's tail
	// from the load generator's. Zero when the endpoint serves no metrics.
	ServerP50, ServerP99 time.Duration
	// WALBytes is the write-ahead log the database wrote in the measured
	// phase: what replication and archiving carry per heartbeat.
	WALBytes int64
}

// cost measures what a phase cost: CPU time by meter (this process first)
// and the WAL the database wrote.
type cost struct {
	pool   *pgxpool.Pool
	meters []Meter
	cpu0   []time.Duration
	wal0   string
}

func startCost(ctx context.Context, pool *pgxpool.Pool, others []Meter) (*cost, error) {
	c := &cost{pool: pool, meters: append([]Meter{{Name: "bench", Read: cpuTime}}, others...)}
	for _, m := range c.meters {
		c.cpu0 = append(c.cpu0, m.Read())
	}
	err := pool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&c.wal0)
	return c, err
}

// stop sets res.CPU and res.WALBytes to what the phase cost so far.
func (c *cost) stop(ctx context.Context, res *Result) error {
	for i, m := range c.meters {
		res.CPU = append(res.CPU, CPU{Name: m.Name, Used: m.Read() - c.cpu0[i]})
	}
	return c.pool.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint`, c.wal0).Scan(&res.WALBytes)
}

type simAgent struct {
	id     uuid.UUID
	client *heartbeat.Client
	lat    []time.Duration
}

// Run registers the agents, serves the endpoint and measures.
func Run(ctx context.Context, opt Options) (Result, error) {
	if opt.Agents < 1 || opt.Duration <= 0 || opt.MaxHeartbeats < 1 {
		return Result{}, errors.New("agents, duration and max heartbeats must be positive")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	pool, err := heartbeat.OpenPool(ctx, opt.DatabaseURL, int32(opt.PoolSize))
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	endpoint, caPEM := opt.Endpoint, opt.EndpointCA
	if endpoint == "" {
		var stop func()
		if endpoint, caPEM, stop, err = serve(ctx, pool, opt); err != nil {
			return Result{}, err
		}
		defer stop()
	}

	opt.Logger.Info("registering agents", "agents", opt.Agents)
	agents, err := register(ctx, pool, opt.Agents, endpoint, caPEM)
	if err != nil {
		return Result{}, err
	}
	defer func() {
		for _, a := range agents {
			a.client.Close()
		}
	}()

	// First contact, a few hundred at a time: every agent connects and
	// reports its hardware, as after a fleet-wide start.
	res := Result{Agents: opt.Agents}
	hw := &heartbeat.HardwareReport{CPUModel: "Simulated CPU", CPUCount: 64, MemoryBytes: 256 << 30,
		Disks: []heartbeat.Disk{{Name: "nvme0n1", SizeBytes: 2 << 40}}, NICs: []heartbeat.NIC{{Name: "eth0", MAC: "02:00:00:00:00:01"}}}
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(256)
	for _, a := range agents {
		g.Go(func() error {
			_, err := a.client.Send(gctx, heartbeat.Request{MachineID: a.id.String(), Hardware: hw})
			if err != nil {
				return fmt.Errorf("first contact of agent %s: %w", a.id, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	res.Setup = time.Since(start)
	opt.Logger.Info("all agents connected", "took", res.Setup.Round(time.Millisecond))

	// The measured phase.
	mctx, cancel := context.WithTimeout(ctx, opt.Duration)
	defer cancel()
	var budget atomic.Int64
	budget.Store(opt.MaxHeartbeats)
	var failed atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	spent, err := startCost(ctx, pool, opt.Meters)
	if err != nil {
		return res, err
	}
	hist0, served := readAccepted(ctx, endpoint, caPEM)
	start = time.Now()
	for i, a := range agents {
		wg.Go(func() {
			if opt.Interval > 0 {
				// Spread the fleet over one interval.
				if !sleep(mctx, opt.Interval*time.Duration(i)/time.Duration(len(agents))) {
					return
				}
			}
			req := heartbeat.Request{MachineID: a.id.String()}
			for budget.Add(-1) >= 0 {
				t0 := time.Now()
				_, err := a.client.Send(mctx, req)
				if mctx.Err() != nil {
					return
				}
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { res.FirstError = err.Error() })
				} else {
					a.lat = append(a.lat, time.Since(t0))
				}
				if opt.Interval > 0 && !sleep(mctx, opt.Interval-time.Since(t0)) {
					return
				}
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if err := spent.stop(ctx, &res); err != nil {
		return res, err
	}
	if hist, ok := readAccepted(ctx, endpoint, caPEM); ok && served {
		res.ServerP50, res.ServerP99 = hist.quantile(hist0, 0.50), hist.quantile(hist0, 0.99)
	}
	var all []time.Duration
	for _, a := range agents {
		all = append(all, a.lat...)
	}
	res.Accepted = int64(len(all))
	res.Failed = failed.Load()
	res.PerSecond = float64(res.Accepted) / res.Elapsed.Seconds()
	quantiles(&res, all)
	return res, nil
}

// quantiles sets res's latency quantiles from lat.
func quantiles(res *Result, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	res.P50, res.P90, res.P99, res.Max = q(0.50), q(0.90), q(0.99), lat[len(lat)-1]
}

// serve runs a heartbeat server in this process until stop.
func serve(ctx context.Context, pool *pgxpool.Pool, opt Options) (endpoint string, caPEM []byte, stop func(), err error) {
	ln, cert, ca, err := listenTLS(opt.CADir)
	if err != nil {
		return "", nil, nil, err
	}
	interval := opt.Interval
	if interval <= 0 {
		interval = time.Minute
	}
	// Per-key limits protect from one broken agent; the bench measures the
	// server's capacity, so they are lifted.
	srv := heartbeat.New(heartbeat.Config{Pool: pool, Logger: opt.Logger, Interval: interval, AgentRate: rate.Inf, BatchWait: opt.BatchWait})
	sctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln, cert) }()
	return "https://" + ln.Addr().String(), ca.CertPEM, func() { cancel(); <-served }, nil
}

// listenTLS listens on a free loopback port, with a server certificate
// from the development CA in caDir (created if missing).
func listenTLS(caDir string) (net.Listener, tls.Certificate, *devca.CA, error) {
	ca, err := devca.Ensure(caDir)
	if err != nil {
		return nil, tls.Certificate{}, nil, err
	}
	cert, err := ca.ServerCertificate([]string{"127.0.0.1"})
	if err != nil {
		return nil, tls.Certificate{}, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	return ln, cert, ca, err
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// register adds n provided machines with started agents, one key each, in
// one statement per table.
func register(ctx context.Context, pool *pgxpool.Pool, n int, endpoint string, caPEM []byte) ([]*simAgent, error) {
	agents := make([]*simAgent, n)
	ids := make([]uuid.UUID, n)
	pubs := make([][]byte, n)
	for i := range agents {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		id := uuid.New()
		client, err := heartbeat.NewClient(endpoint, caPEM, key, id.String())
		if err != nil {
			return nil, err
		}
		agents[i] = &simAgent{id: id, client: client}
		ids[i], pubs[i] = id, pub
	}
	return agents, registerMachines(ctx, pool, ids, pubs)
}

// registerMachines adds provided machines with started agents of the given
// keys, in one statement per table.
func registerMachines(ctx context.Context, pool *pgxpool.Pool, ids []uuid.UUID, pubs [][]byte) error {
	providerIDs := make([]string, len(ids))
	for i, id := range ids {
		providerIDs[i] = "bench-" + id.String()
	}
	_, err := pool.Exec(ctx, `INSERT INTO machines (machine_id) SELECT unnest($1::uuid[])`, ids)
	if err == nil {
		_, err = pool.Exec(ctx, `
			INSERT INTO machine_provided (machine_id, provider, provider_id)
			SELECT id, 'bench', pid FROM unnest($1::uuid[], $2::text[]) AS u(id, pid)`, ids, providerIDs)
	}
	if err != nil {
		return fmt.Errorf("registering bench machines: %w", err)
	}
	_, err = pool.Exec(ctx, `
		INSERT INTO machine_agent_started (machine_id, agent_started_at, agent_public_key)
		SELECT id, now(), key FROM unnest($1::uuid[], $2::bytea[]) AS u(id, key)`, ids, pubs)
	if err != nil {
		return fmt.Errorf("registering bench agents: %w", err)
	}
	return nil
}
