package heartbeat

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// batcher records heartbeats in batches, group commit style: one statement
// and one commit per batch. A batch closes when its oldest heartbeat has
// waited wait or it holds maxBatch; while one is written the next collects,
// with at most maxRunning written at once (one database connection each).
// Without the wait, moderate load makes batches of one or two, each paying
// a statement and a commit: the database's CPU per heartbeat at 5k/s offered
// was seven times that of a saturated endpoint.
type batcher struct {
	pool       *pgxpool.Pool
	maxBatch   int
	maxRunning int
	maxQueue   int
	wait       time.Duration
	// sizes observes each batch's size.
	sizes prometheus.Observer

	mu      sync.Mutex
	queue   []*beat
	running int
	// collecting: one goroutine is waiting for the queue to make a batch;
	// only it takes from the queue.
	collecting bool
	// full wakes the collector early when the queue holds a whole batch.
	full chan struct{}
}

type beat struct {
	claim bmdb.AgentKey
	at    time.Time
	done  chan beatResult
}

type beatResult struct {
	accepted bool
	err      error
}

// errOverloaded: the queue is full; the agent should come back later.
var errOverloaded = errors.New("heartbeat queue full")

func newBatcher(pool *pgxpool.Pool, wait time.Duration, sizes prometheus.Observer) *batcher {
	running := 4
	if pool != nil {
		running = max(1, int(pool.Config().MaxConns)-2) // spare connections for reports and health
	}
	const maxBatch = 500
	return &batcher{pool: pool, maxBatch: maxBatch, maxRunning: running, maxQueue: 20 * maxBatch,
		wait: wait, sizes: sizes, full: make(chan struct{}, 1)}
}

// record queues one heartbeat and waits for its batch.
func (b *batcher) record(ctx context.Context, claim bmdb.AgentKey) (bool, error) {
	bt := &beat{claim: claim, at: time.Now(), done: make(chan beatResult, 1)}
	b.mu.Lock()
	if len(b.queue) >= b.maxQueue {
		b.mu.Unlock()
		return false, errOverloaded
	}
	b.queue = append(b.queue, bt)
	if len(b.queue) >= b.maxBatch {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
	if !b.collecting && b.running < b.maxRunning {
		b.running++
		b.collecting = true
		go b.drain()
	}
	b.mu.Unlock()
	select {
	case r := <-bt.done:
		return r.accepted, r.err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// drain collects and writes batches, starting as the collector, until the
// queue is empty or another goroutine collects.
func (b *batcher) drain() {
	b.mu.Lock()
	for {
		if len(b.queue) == 0 {
			b.collecting = false
			b.running--
			b.mu.Unlock()
			return
		}
		if d := time.Until(b.queue[0].at.Add(b.wait)); d > 0 && len(b.queue) < b.maxBatch {
			b.mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-b.full:
			}
			t.Stop()
			b.mu.Lock()
			continue
		}
		n := min(len(b.queue), b.maxBatch)
		batch := slices.Clone(b.queue[:n])
		b.queue = append(b.queue[:0], b.queue[n:]...)
		b.collecting = false
		if len(b.queue) > 0 && b.running < b.maxRunning {
			b.running++
			b.collecting = true
			go b.drain()
		}
		b.mu.Unlock()
		b.write(batch)
		b.mu.Lock()
		if b.collecting {
			b.running--
			b.mu.Unlock()
			return
		}
		b.collecting = true
	}
}

func (b *batcher) write(batch []*beat) {
	b.sizes.Observe(float64(len(batch)))
	claims := make([]bmdb.AgentKey, len(batch))
	for i, bt := range batch {
		claims[i] = bt.claim
	}
	// Not any one request's context: the batch serves them all.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	accepted, err := bmdb.RecordHeartbeats(ctx, b.pool, claims)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") {
		// Batches and Recovery's ClearAgentTags lock the started row before
		// the heartbeat row, so they should not deadlock; should another
		// writer do otherwise, the database aborts one side, and once more
		// keeps one machine's conflict from failing the batch's others.
		accepted, err = bmdb.RecordHeartbeats(ctx, b.pool, claims)
	}
	for i, bt := range batch {
		if err != nil {
			bt.done <- beatResult{err: err}
		} else {
			bt.done <- beatResult{accepted: accepted[i]}
		}
	}
}
