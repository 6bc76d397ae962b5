package heartbeat

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// Config is what a Server needs. Zero values take the defaults below.
type Config struct {
	Pool   *pgxpool.Pool
	Logger *slog.Logger
	// Interval is how often agents are told to heart-beat; keep it well
	// under Recovery's stale threshold (default 1 min against 10 min).
	Interval time.Duration
	// MaxBodyBytes caps a heartbeat request body (default 64 KiB: a
	// hardware report of a large machine is a few KiB).
	MaxBodyBytes int64
	// AgentRate and AgentBurst limit each client key (default two per
	// Interval but at least 2/s, burst 10): an agent sends one heartbeat per
	// Interval and retries a few after failures, so more is a broken or
	// hostile client.
	AgentRate  rate.Limit
	AgentBurst int
	// MaxRate caps all heartbeats together per second, shedding load before
	// it reaches the database; 0 means no cap.
	MaxRate rate.Limit
	// BatchWait bounds how long a heartbeat waits for others to share its
	// statement and commit (default 5ms); negative: no wait, a batch is what
	// queued while the last one was written.
	BatchWait time.Duration
	// ObserverInterval is how often the endpoint records in BMDB that it is
	// alive and writing (bmdb.ObserverBeat); a silence of ObserverGaps of
	// them is a gap in the observation, which no machine's staleness counts.
	// Keep the gap well under Recovery's stale threshold minus the agents'
	// interval. Default 1s, 3 intervals.
	ObserverInterval time.Duration
	ObserverGaps     int
}

// OpenPool opens the server's own connection pool to BMDB. Its sessions do
// not wait for the WAL to reach disk at commit (synchronous_commit off): a
// heartbeat is a liveness ping repeated every interval, so losing the last
// fraction of a second of them in a database crash only makes machines look
// that much older, while waiting for a flush per heartbeat caps the endpoint
// at the disk's flush rate. Nothing else is written through this pool.
func OpenPool(ctx context.Context, url string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("invalid database URL: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	} else if cfg.MaxConns < 16 {
		cfg.MaxConns = 16 // heartbeats are short; more connections than cores hides round trips
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("database does not answer (is it running? check --db / BMCTL_DATABASE_URL): %w", err)
	}
	return pool, nil
}

// Server is the heartbeat endpoint.
type Server struct {
	cfg   Config
	log   *slog.Logger
	batch *batcher
	// dbErrLog paces the log of database failures.
	dbErrLog rate.Sometimes
	reg      *prometheus.Registry
	limits   *keyLimiter
	total    *rate.Limiter
	results  *prometheus.CounterVec
	latency  prometheus.Histogram
	reports  prometheus.Counter
	batches  prometheus.Histogram
}

// Defaults of Config.
const (
	DefaultInterval     = time.Minute
	DefaultMaxBodyBytes = 64 << 10
	DefaultAgentBurst   = 10
	DefaultBatchWait    = 5 * time.Millisecond

	DefaultObserverInterval = time.Second
	DefaultObserverGaps     = 3
)

// New makes a Server.
func New(cfg Config) *Server {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.AgentRate <= 0 {
		cfg.AgentRate = max(2, rate.Limit(2/cfg.Interval.Seconds()))
	}
	if cfg.AgentBurst <= 0 {
		cfg.AgentBurst = DefaultAgentBurst
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.BatchWait == 0 {
		cfg.BatchWait = DefaultBatchWait
	}
	if cfg.ObserverInterval <= 0 {
		cfg.ObserverInterval = DefaultObserverInterval
	}
	if cfg.ObserverGaps <= 1 {
		cfg.ObserverGaps = DefaultObserverGaps
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		reg:      prometheus.NewRegistry(),
		limits:   newKeyLimiter(cfg.AgentRate, cfg.AgentBurst),
		dbErrLog: rate.Sometimes{First: 1, Interval: time.Second},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bmctl_heartbeat_requests_total",
			Help: "Heartbeat requests by result.",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bmctl_heartbeat_accepted_seconds",
			Help:    "Time to accept a heartbeat, from request to answer.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bmctl_heartbeat_hardware_reports_total",
			Help: "Hardware reports stored.",
		}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bmctl_heartbeat_batch_size",
			Help:    "Heartbeats written per database statement: 1 when idle, more under load.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500},
		}),
	}
	s.batch = newBatcher(cfg.Pool, max(0, cfg.BatchWait), s.batches)
	if cfg.MaxRate > 0 {
		s.total = rate.NewLimiter(cfg.MaxRate, int(cfg.MaxRate)+1)
	}
	s.reg.MustRegister(s.results, s.latency, s.reports, s.batches,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return s
}

// Registry holds the server's metrics, for callers that serve them elsewhere.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Handler routes the heartbeat, /metrics and /healthz.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(Path, s.heartbeat)
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", s.health)
	return mux
}

// TLSConfig serves cert and asks each client for a certificate without
// verifying its chain: agents' certificates are self-signed, and what
// authenticates them is their key matching the agent-started tag. The TLS
// handshake still proves the client holds the private key. Asking rather
// than requiring lets a client without one get an HTTP answer saying so,
// and lets /metrics and /healthz be read without one.
func TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// Serve answers on ln with TLS until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener, cert tls.Certificate) error {
	idle := 2 * s.cfg.Interval
	if idle < 2*time.Minute {
		idle = 2 * time.Minute
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         TLSConfig(cert),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		// Longer than the heartbeat interval, so agents keep their
		// connection and the server is spared a handshake per heartbeat.
		IdleTimeout:    idle,
		MaxHeaderBytes: 16 << 10,
		// Failed handshakes (scanners, agents with a stale CA) are routine.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	if s.cfg.Pool != nil {
		go s.observe(ctx)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	return err
}

// ObserverGap is the silence after which the endpoint's observation counts
// as broken.
func (s *Server) ObserverGap() time.Duration {
	return time.Duration(s.cfg.ObserverGaps) * s.cfg.ObserverInterval
}

// observe records the endpoint's liveness every ObserverInterval while ctx
// lasts, so that Recovery judges staleness only over time an endpoint could
// record heartbeats in (see bmdb.ObserverBeat).
func (s *Server) observe(ctx context.Context) {
	host, _ := os.Hostname()
	t := time.NewTicker(s.cfg.ObserverInterval)
	defer t.Stop()
	var (
		failing bool
		watch   time.Time // the current watch's start, as last recorded
	)
	for {
		bctx, cancel := context.WithTimeout(ctx, s.cfg.ObserverInterval)
		since, err := bmdb.ObserverBeat(bctx, s.cfg.Pool, s.ObserverGap(), host)
		cancel()
		switch {
		case err != nil:
			if ctx.Err() == nil && !failing {
				s.log.Warn("heartbeat endpoint cannot record its liveness in BMDB; staleness does not count meanwhile", "err", err)
			}
			failing = true
		case !since.Equal(watch):
			s.log.Info("heartbeat observation (re)started: machines get the full stale threshold from here", "since", since)
			watch, failing = since, false
		default:
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refusals. The one for a wrong key is also the one for an unknown machine,
// so the endpoint tells nobody which machines exist.
const (
	msgRefused   = "heartbeat refused: the client key is not the agent key of this machine"
	msgNoCert    = "a client certificate with the agent's ed25519 key is required"
	msgNotEd     = "the client certificate's key is not ed25519"
	msgRate      = "too many heartbeats from this key; slow down"
	msgOverload  = "the endpoint is overloaded; retry later"
	msgTooLarge  = "request body too large"
	msgMalformed = "request body is not a heartbeat JSON object"
	msgBadID     = "machine_id is not a UUID"
	msgMethod    = "heartbeats are POSTed"
	msgDB        = "the endpoint cannot reach its database; retry later"
)

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.refuse(w, http.StatusMethodNotAllowed, "method", msgMethod)
		return
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		s.refuse(w, http.StatusUnauthorized, "no_certificate", msgNoCert)
		return
	}
	key, ok := r.TLS.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		s.refuse(w, http.StatusUnauthorized, "not_ed25519", msgNotEd)
		return
	}
	if !s.limits.allow(key) {
		w.Header().Set("Retry-After", strconv.Itoa(int(s.cfg.Interval/time.Second)+1))
		s.refuse(w, http.StatusTooManyRequests, "rate_limited", msgRate)
		return
	}
	if s.total != nil && !s.total.Allow() {
		w.Header().Set("Retry-After", "1")
		s.refuse(w, http.StatusServiceUnavailable, "overloaded", msgOverload)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.refuse(w, http.StatusRequestEntityTooLarge, "too_large", msgTooLarge+" (limit "+strconv.FormatInt(s.cfg.MaxBodyBytes, 10)+" bytes)")
			return
		}
		s.refuse(w, http.StatusBadRequest, "malformed", "reading request body: "+err.Error())
		return
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		s.refuse(w, http.StatusBadRequest, "malformed", msgMalformed+": "+err.Error())
		return
	}
	machine, err := uuid.Parse(req.MachineID)
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "malformed", msgBadID)
		return
	}
	accepted, err := s.record(r.Context(), machine, key, req.Hardware)
	if errors.Is(err, errOverloaded) {
		w.Header().Set("Retry-After", "1")
		s.refuse(w, http.StatusServiceUnavailable, "overloaded", msgOverload)
		return
	}
	if err != nil {
		if r.Context().Err() != nil {
			return // the agent hung up; nobody to answer
		}
		// Once a second at most: a database outage fails every agent's
		// heartbeat, and the metric counts them all.
		s.dbErrLog.Do(func() { s.log.Warn("recording heartbeats failed", "machine", machine, "cause", err) })
		w.Header().Set("Retry-After", "1")
		s.refuse(w, http.StatusServiceUnavailable, "db_error", msgDB)
		return
	}
	if !accepted {
		s.log.Debug("heartbeat refused", "remote", r.RemoteAddr)
		s.refuse(w, http.StatusForbidden, "refused", msgRefused)
		return
	}
	if req.Hardware != nil {
		s.reports.Inc()
	}
	writeJSON(w, http.StatusOK, Response{IntervalMillis: s.cfg.Interval.Milliseconds()})
	s.results.WithLabelValues("accepted").Inc()
	s.latency.Observe(time.Since(start).Seconds())
}

// record writes the heartbeat, and the hardware report with it when there is
// one, only if key is the machine's agent key.
func (s *Server) record(ctx context.Context, machine uuid.UUID, key ed25519.PublicKey, hw *HardwareReport) (bool, error) {
	if hw == nil {
		return s.batch.record(ctx, bmdb.AgentKey{Machine: machine, Key: key})
	}
	report, err := json.Marshal(hw.storable()) // our struct, not the client's bytes
	if err != nil {
		return false, err
	}
	// One function call, both or neither (the endpoint's role may write
	// them through it only).
	return bmdb.RecordHardwareReport(ctx, s.cfg.Pool, machine, key, report)
}

func (s *Server) refuse(w http.ResponseWriter, code int, result, msg string) {
	s.results.WithLabelValues(result).Inc()
	writeJSON(w, code, ErrorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// health answers 200 when the database answers.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain")
	if err := s.cfg.Pool.Ping(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "database unreachable\n")
		return
	}
	io.WriteString(w, "ok\n")
}

// keyLimiter rate-limits each client key. Keys idle long enough to have a
// full bucket again are forgotten, so the map stays as small as the set of
// keys heart-beating now.
type keyLimiter struct {
	rate  rate.Limit
	burst int
	mu    sync.Mutex
	keys  map[string]*rate.Limiter
	swept time.Time
}

func newKeyLimiter(r rate.Limit, burst int) *keyLimiter {
	return &keyLimiter{rate: r, burst: burst, keys: make(map[string]*rate.Limiter), swept: time.Now()}
}

func (k *keyLimiter) allow(key ed25519.PublicKey) bool {
	if k.rate == rate.Inf {
		return true
	}
	now := time.Now()
	k.mu.Lock()
	defer k.mu.Unlock()
	// Forgetting a key with a full bucket changes nothing, whenever it
	// happens; once a minute keeps the sweep off the request path.
	if now.Sub(k.swept) > time.Minute {
		for key, l := range k.keys {
			if l.TokensAt(now) >= float64(k.burst) {
				delete(k.keys, key)
			}
		}
		k.swept = now
	}
	l, ok := k.keys[string(key)]
	if !ok {
		l = rate.NewLimiter(k.rate, k.burst)
		k.keys[string(key)] = l
	}
	return l.AllowN(now, 1)
}
