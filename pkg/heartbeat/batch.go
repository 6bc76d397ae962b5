package heartbeat

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bmctl/bmctl/pkg/bmdb"
)

// batcher records heartbeats in batches: a heartbeat arriving while others
// are being written waits for the next batch instead of taking its own round
// trip and commit. Idle, a batch is one heartbeat and adds no delay; under
// load, batches grow with the queue, up to maxBatch, with at most
// maxRunning written at once (one database connection each).
type batcher struct {
	pool       *pgxpool.Pool
	maxBatch   int
	maxRunning int
	maxQueue   int
	// sizes observes each batch's size.
	sizes prometheus.Observer

	mu      sync.Mutex
	queue   []*beat
	running int
}

type beat struct {
	claim bmdb.AgentKey
	done  chan beatResult
}

type beatResult struct {
	accepted bool
	err      error
}

// errOverloaded: the queue is full; the agent should come back later.
var errOverloaded = errors.New("heartbeat queue full")

func newBatcher(pool *pgxpool.Pool, sizes prometheus.Observer) *batcher {
	running := 4
	if pool != nil {
		running = max(1, int(pool.Config().MaxConns)-2) // spare connections for reports and health
	}
	const maxBatch = 500
	return &batcher{pool: pool, maxBatch: maxBatch, maxRunning: running, maxQueue: 20 * maxBatch, sizes: sizes}
}

// record queues one heartbeat and waits for its batch.
func (b *batcher) record(ctx context.Context, claim bmdb.AgentKey) (bool, error) {
	bt := &beat{claim: claim, done: make(chan beatResult, 1)}
	b.mu.Lock()
	if len(b.queue) >= b.maxQueue {
		b.mu.Unlock()
		return false, errOverloaded
	}
	b.queue = append(b.queue, bt)
	if b.running < b.maxRunning {
		b.running++
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

// drain writes batches until the queue is empty.
func (b *batcher) drain() {
	for {
		b.mu.Lock()
		n := min(len(b.queue), b.maxBatch)
		if n == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		batch := make([]*beat, n)
		copy(batch, b.queue)
		b.queue = append(b.queue[:0], b.queue[n:]...)
		b.mu.Unlock()
		b.write(batch)
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
