package hbbench

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/bmctl/bmctl/pkg/heartbeat"
)

// ServeBare serves the transport ceiling on loopback: the endpoint's TLS
// configuration and request shape (client key, body, JSON, machine id), an
// answer for every heartbeat and no database. What the real endpoint does
// less than this is its own cost. stop ends it.
func ServeBare(caDir string, interval time.Duration) (endpoint string, caPEM []byte, stop func(), err error) {
	ln, cert, ca, err := listenTLS(caDir)
	if err != nil {
		return "", nil, nil, err
	}
	answer, _ := json.Marshal(heartbeat.Response{IntervalMillis: interval.Milliseconds()})
	mux := http.NewServeMux()
	mux.HandleFunc(heartbeat.Path, func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		if _, ok := r.TLS.PeerCertificates[0].PublicKey.(ed25519.PublicKey); !ok {
			http.Error(w, "not ed25519", http.StatusUnauthorized)
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, heartbeat.DefaultMaxBodyBytes))
		var req heartbeat.Request
		if err == nil {
			err = json.Unmarshal(body, &req)
		}
		if err == nil {
			_, err = uuid.Parse(req.MachineID)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	})
	srv := &http.Server{Handler: mux, TLSConfig: heartbeat.TLSConfig(cert), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.ServeTLS(ln, "", "")
	}()
	return "https://" + ln.Addr().String(), ca.CertPEM, func() { _ = srv.Close(); <-served }, nil
}

// UpsertCeiling measures the database ceiling: Workers connections upsert
// the heartbeat rows of opt.Agents machines, Batch rows per statement (one
// commit each), in a closed loop for opt.Duration or opt.MaxHeartbeats rows,
// with none of the endpoint's checks. Result counts rows as heartbeats and
// the latency is per statement.
func UpsertCeiling(ctx context.Context, opt Options, workers, batch int) (Result, error) {
	if opt.Agents < workers*batch {
		return Result{}, errors.New("the database ceiling needs at least workers × batch agents")
	}
	pool, err := heartbeat.OpenPool(ctx, opt.DatabaseURL, int32(workers+1))
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	ids := make([]uuid.UUID, opt.Agents)
	pubs := make([][]byte, opt.Agents)
	for i := range ids {
		ids[i] = uuid.New()
		pubs[i] = make([]byte, ed25519.PublicKeySize)
		copy(pubs[i], ids[i][:]) // no agent ever presents it
	}
	if err := registerMachines(ctx, pool, ids, pubs); err != nil {
		return Result{}, err
	}
	res := Result{Agents: opt.Agents}
	mctx, cancel := context.WithTimeout(ctx, opt.Duration)
	defer cancel()
	var budget atomic.Int64
	budget.Store(opt.MaxHeartbeats)
	spent, err := startCost(ctx, pool, opt.Meters)
	if err != nil {
		return res, err
	}
	var mu sync.Mutex
	var lat []time.Duration
	g, gctx := errgroup.WithContext(mctx)
	start := time.Now()
	per := len(ids) / workers
	for w := range workers {
		mine := ids[w*per : (w+1)*per] // disjoint: the workers never wait on each other's rows
		g.Go(func() error {
			var own []time.Duration
			defer func() { mu.Lock(); lat = append(lat, own...); mu.Unlock() }()
			for off := 0; budget.Add(-int64(batch)) >= 0; off += batch {
				if off+batch > len(mine) {
					off = 0
				}
				t0 := time.Now()
				_, err := pool.Exec(gctx, `
					INSERT INTO machine_agent_heartbeat (machine_id, agent_heartbeat_at, agent_heartbeat_coarse_at)
					SELECT id, now(), now() FROM unnest($1::uuid[]) AS u(id)
					ON CONFLICT (machine_id) DO UPDATE SET agent_heartbeat_at = excluded.agent_heartbeat_at`, mine[off:off+batch])
				if gctx.Err() != nil {
					return nil
				}
				if err != nil {
					return err
				}
				own = append(own, time.Since(t0))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return res, err
	}
	res.Elapsed = time.Since(start)
	if err := spent.stop(ctx, &res); err != nil {
		return res, err
	}
	res.Accepted = int64(len(lat) * batch)
	res.PerSecond = float64(res.Accepted) / res.Elapsed.Seconds()
	quantiles(&res, lat)
	return res, nil
}
