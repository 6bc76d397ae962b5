package heartbeat

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/bmctl/bmctl/internal/pgtest"
	"github.com/bmctl/bmctl/pkg/bmdb"
)

// sizeLog records the batch sizes a batcher observes.
type sizeLog struct {
	mu    sync.Mutex
	sizes []int
}

func (l *sizeLog) Observe(v float64) {
	l.mu.Lock()
	l.sizes = append(l.sizes, int(v))
	l.mu.Unlock()
}

func (l *sizeLog) get() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.sizes)
}

// TestBatchClosesWhenFullOrWaitedEnough: with a wait no test outlives, only
// a full batch is written, as one statement; with a short wait, a lone
// heartbeat is written once the wait is over.
func TestBatchClosesWhenFullOrWaitedEnough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := bmdb.Open(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	claim := func() bmdb.AgentKey {
		id, err := bmdb.AddProvidedMachine(ctx, conn.Pool, bmdb.ProvidedMachine{Provider: "test", ProviderID: uuid.NewString()})
		if err != nil {
			t.Fatal(err)
		}
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		if err := bmdb.SetAgentStarted(ctx, conn.Pool, id, pub); err != nil {
			t.Fatal(err)
		}
		return bmdb.AgentKey{Machine: id, Key: pub}
	}

	full := &sizeLog{}
	b := newBatcher(conn.Pool, time.Hour, full)
	b.maxBatch = 3
	var wg sync.WaitGroup
	for range 3 {
		c := claim()
		wg.Go(func() {
			if ok, err := b.record(ctx, c); !ok || err != nil {
				t.Errorf("heartbeat in a full batch: accepted %v, %v", ok, err)
			}
		})
	}
	wg.Wait()
	if got := full.get(); !slices.Equal(got, []int{3}) {
		t.Errorf("batches written %v, want one of 3", got)
	}

	lone := &sizeLog{}
	b = newBatcher(conn.Pool, 50*time.Millisecond, lone)
	if ok, err := b.record(ctx, claim()); !ok || err != nil {
		t.Errorf("lone heartbeat: accepted %v, %v", ok, err)
	}
	if got := lone.get(); !slices.Equal(got, []int{1}) {
		t.Errorf("batches written %v, want one of 1", got)
	}
}
